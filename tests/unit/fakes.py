"""Small fakes and builders shared by the unit tests, once each.

The node logic takes its clock, reactor, server and RPC clients injected, so unit tests build
the real objects (Partition, ParkingLot, ReplicaFetcher, GroupCoordinator, Sender, …) with
these in place of sockets: a reactor driven by ``fabric.clock.ManualClock``, a server that
records replies, an RPC client that records requests and lets the test answer them.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

from fabric.records import build_batch
from fabric import wire
from fabric.clock import ManualClock

BASE_TIMESTAMP_MS = 1_700_000_000_000


def make_batch(n: int = 3, pid: int = -1, epoch: int = -1, seq: int = -1, tag: str = "v",
               timestamp_ms: int = BASE_TIMESTAMP_MS) -> bytes:
    """A client batch of ``n`` records (keys k0.., values {tag}0..), optionally idempotent."""
    recs = [(timestamp_ms + i, f"k{i}".encode(), f"{tag}{i}".encode(), None) for i in range(n)]
    return build_batch(recs, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


@dataclass(order=True)
class _Timer:
    due_ms: int
    seq: int
    fn: Callable[[], Any] = field(compare=False)
    interval_ms: int = field(default=0, compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class FakeReactor:
    """The reactor's timer API on a ManualClock: ``advance(ms)`` runs what fell due, in order."""

    def __init__(self, clock: ManualClock | None = None) -> None:
        self.clock = clock or ManualClock()
        self._timers: list[_Timer] = []
        self._seq = itertools.count()

    def call_later(self, delay_ms: int, fn: Callable[[], Any]) -> _Timer:
        t = _Timer(self.clock.now_ms() + max(delay_ms, 0), next(self._seq), fn)
        heapq.heappush(self._timers, t)
        return t

    def call_every(self, interval_ms: int, fn: Callable[[], Any]) -> _Timer:
        t = _Timer(self.clock.now_ms() + interval_ms, next(self._seq), fn, interval_ms)
        heapq.heappush(self._timers, t)
        return t

    @property
    def pending(self) -> int:
        return sum(1 for t in self._timers if not t.cancelled)

    def run_due(self) -> int:
        """Run every timer due now; returns how many ran."""
        ran = 0
        while self._timers and self._timers[0].due_ms <= self.clock.now_ms():
            t = heapq.heappop(self._timers)
            if t.cancelled:
                continue
            if t.interval_ms:
                t.due_ms += t.interval_ms
                t.seq = next(self._seq)
                heapq.heappush(self._timers, t)
            t.fn()
            ran += 1
        return ran

    def advance(self, ms: int) -> int:
        self.clock.advance(ms)
        return self.run_due()


class RecordingServer:
    """Stands in for an RpcServer: records routes and every reply."""

    def __init__(self) -> None:
        self.routes: dict[bytes, Callable] = {}
        self.replies: list[tuple[wire.Request, dict, list]] = []

    def route(self, command: bytes, fn: Callable) -> None:
        self.routes[command] = fn

    def reply(self, req: wire.Request, header: dict | None = None, payloads: Any = ()) -> None:
        self.replies.append((req, header or {}, list(payloads)))

    def reply_error(self, req: wire.Request, code: int, message: str, **extra: Any) -> None:
        self.replies.append((req, dict(extra, error=code, message=message), []))

    def answer(self, req: wire.Request) -> dict:
        """The one reply to ``req`` (fails on none or several)."""
        found = [h for r, h, _ in self.replies if r is req]
        assert len(found) == 1, f"{len(found)} replies to one request"
        return found[0]


class RecordingClient:
    """Stands in for an RpcClient: keeps each request with its callback, for the test to answer."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, dict, list, Callable]] = []
        self.closed = False

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> None:
        self.sent.append((command, header, list(payloads), callback))

    def of(self, command: bytes) -> list[tuple[bytes, dict, list, Callable]]:
        return [s for s in self.sent if s[0] == command]

    def answer_last(self, command: bytes, header: dict | None, payloads: list | None = None, err: Any = None) -> None:
        """Call the callback of the last ``command`` sent, as a reply (or an error) would."""
        self.of(command)[-1][3](header, payloads or [], err)

    def close(self) -> None:
        self.closed = True


def request(command: bytes, payloads: list[bytes] | None = None, **header: Any) -> wire.Request:
    """A decoded request as a handler receives it (from a client identity b"client")."""
    return wire.Request([b"client"], command, header, payloads or [])
