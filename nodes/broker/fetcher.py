"""A follower's replica fetcher: one per leader broker, one fetch in flight, covering every
partition this broker follows on that leader (Kafka's ReplicaFetcherThread, on the reactor).

With the PUB/SUB fast path on (``replication.transport: pubsub``, the default) the fetcher
repairs: it fetches without waiting, keeps fetching while there is more, then goes idle until
the stream shows a gap (``trigger``). With ``transport: fetch`` it long-polls continuously, as
Kafka's fetcher does. Before a partition may take batches from the stream in a new leader
epoch, one fetch must have checked its log against the leader's (``stream_ready``).

Each fetch carries, per partition, the follower's log end offset (which the leader uses to
advance the high watermark), its current leader epoch (a stale leader learns it is fenced)
and the epoch of its last batch; the leader answers a divergence with the offset to
truncate to (KIP-320), and the fetcher truncates before fetching again.

The fetcher is given what it uses and nothing more: a ``LeaderEndpoint`` (Kafka's name: the
leader as this follower reaches it), ``schedule(delay_ms, fn)`` for its retries, and
``on_progress(partition)`` for a log that grew; tests build it with fakes (tests/unit/fakes.py).

Not thread-safe: owned by the broker's reactor.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable, NamedTuple, Protocol

from engines.api import EngineError
from engines.batch import BatchError
from fabric import protocol as P
from fabric.errors import MalformedFrame, RemoteError
from nodes.broker.messages import FetchEntry, FetchInput, ReplicaAck, TopicPartition
from nodes.broker.partition import Partition

log = logging.getLogger(__name__)

RETRY_BACKOFF_MS = 100
RETRY_BACKOFF_MAX_MS = 2000
FETCH_TIMEOUT_MARGIN_MS = 2000  # over the long-poll wait, for the answer to travel


class Requester(Protocol):
    """The RPC client side the endpoint sends on (``fabric.rpc.RpcClient``)."""

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> None: ...

    def send_oneway(self, command: bytes, header: dict, payloads: Any = ()) -> None: ...

    def close(self) -> None: ...


class FetchSettings(NamedTuple):
    long_poll: bool        # transport "fetch": long-poll continuously, as Kafka's fetcher does
    wait_ms: int           # the long-poll wait (replica_fetch_wait_ms)
    bytes_max: int         # per partition and per fetch (replica_fetch_bytes_max)


class LeaderEndpoint:
    """One leader broker as a follower reaches it: FETCH with an answer, REPLICA_ACK one-way,
    both dropped while fault injection blocks the leader (``blocked()``)."""

    def __init__(self, client: Requester, address: str, leader_id: int, follower_id: int, *,
                 blocked: Callable[[], bool] = lambda: False,
                 topic_ids_of: Callable[[set[str]], dict[str, str]] = lambda topics: {},
                 incarnation: Callable[[], str] = lambda: "") -> None:
        """``incarnation()`` names this follower's process in every fetch and ack: the leader
        counts a log end only from the process the metadata names (a restart's predecessor's
        last report, read late, is not its successor's)."""
        self.client = client
        self.address = address
        self.leader_id = leader_id
        self.follower_id = follower_id
        self.blocked = blocked
        self.topic_ids_of = topic_ids_of
        self.incarnation = incarnation

    def fetch(self, parts: list[FetchInput], settings: FetchSettings, callback: Callable) -> None:
        """One replica FETCH of ``parts``."""
        self.client.request(P.FETCH, {"replica_id": self.follower_id, "incarnation": self.incarnation(),
                                      "wait_ms": settings.wait_ms if settings.long_poll else 0,
                                      "max_bytes": settings.bytes_max, "parts": parts,
                                      "topic_ids": self.topic_ids_of({p.topic for p in parts})},
                            callback=callback, timeout_ms=settings.wait_ms + FETCH_TIMEOUT_MARGIN_MS)

    def ack(self, parts: list[Partition]) -> None:
        """One-way: our log end offsets (advance the leader's high watermark), in messages of at
        most ``PARTITIONS_MAX`` parts."""
        if self.blocked():
            return
        new = tuple.__new__  # ReplicaAck's own __new__ is Python: an idle follower acks every partition
        incarnation = self.incarnation()
        for i in range(0, len(parts), P.PARTITIONS_MAX):
            self.client.send_oneway(P.REPLICA_ACK, {"broker_id": self.follower_id, "incarnation": incarnation, "parts": [
                new(ReplicaAck, (p.topic, p.partition, p.log_end_offset, p.leader_epoch))
                for p in parts[i:i + P.PARTITIONS_MAX]]})

    def close(self) -> None:
        self.client.close()


class ReplicaFetcher:
    def __init__(self, leader: LeaderEndpoint, settings: FetchSettings, schedule: Callable[[int, Callable[[], Any]], Any],
                 on_progress: Callable[[Partition], None], counters: Counter | None = None) -> None:
        """``schedule(delay_ms, fn)`` runs ``fn`` later on the reactor; ``on_progress(part)`` is
        called when a fetch grew ``part``'s log (or reset or truncated it); malformed answers
        are counted in ``counters["repl_malformed"]``."""
        self.leader = leader
        self.settings = settings
        self._schedule = schedule
        self._on_progress = on_progress
        self.counters = counters if counters is not None else Counter()
        self.partitions: dict[TopicPartition, Partition] = {}
        self._stream_ready: dict[TopicPartition, int] = {}  # partition -> epoch checked by a fetch
        self._in_flight = False
        self._again = False
        self.last_error = ""
        self.fetches = 0
        self._closed = False
        self._backoff_ms = RETRY_BACKOFF_MS

    @property
    def leader_id(self) -> int:
        return self.leader.leader_id

    @property
    def endpoint(self) -> str:
        return self.leader.address

    def set_partitions(self, parts: list[Partition]) -> None:
        self.partitions = {(p.topic, p.partition): p for p in parts}
        self._stream_ready = {k: e for k, e in self._stream_ready.items() if k in self.partitions}
        self.trigger()

    def stream_ready(self, key: TopicPartition) -> bool:
        part = self.partitions.get(key)
        return part is not None and self._stream_ready.get(key) == part.leader_epoch

    def trigger(self) -> None:
        """Fetch now (or right after the fetch in flight)."""
        if self._in_flight:
            self._again = True
        else:
            self._fetch()

    def ack(self, part: Partition) -> None:
        """One-way: tell the leader our log end offset (advances its high watermark)."""
        self.leader.ack([part])

    def ack_parts(self, parts: list[Partition]) -> None:
        """``ack`` for many partitions."""
        self.leader.ack(parts)

    def _fetch(self) -> None:
        if self._closed or self._in_flight or not self.partitions:
            return
        self._again = False
        parts = [FetchInput(p.topic, p.partition, p.log_end_offset, self.settings.bytes_max, p.leader_epoch,
                            p.epochs.latest_epoch) for p in self.partitions.values()]
        self._in_flight = True
        self.fetches += 1
        # the answer is only good for the leader epochs it was asked in (leadership may move
        # away and back to this leader while it is in flight)
        asked = {(p.topic, p.partition): p.current_epoch for p in parts}
        self.leader.fetch(parts, self.settings, lambda h, pl, e: self._on_reply(h, pl, e, asked))

    def _on_reply(self, header: dict | None, payloads: list, err: RemoteError | None,
                  asked: dict[TopicPartition, int]) -> None:
        self._in_flight = False
        if self._closed:
            return
        if header is None or self.leader.blocked():
            self._retry_later()
            return
        progressed = False
        raw_parts = header.get("parts", [])
        for raw, data in zip(raw_parts if isinstance(raw_parts, list) else [], payloads):
            try:
                entry = FetchEntry.decode(raw)
            except MalformedFrame as e:  # a malformed answer: drop it
                self.counters["repl_malformed"] += 1
                log.error("malformed replica fetch answer from broker %d: %s", self.leader_id, e)
                continue
            try:
                if self._apply(entry, data, asked):
                    progressed = True
                    self._on_progress(self.partitions[(entry.topic, entry.partition)])
            except (EngineError, BatchError) as e:
                log.error("replica fetch from broker %d: %s", self.leader_id, e)
        self._backoff_ms = RETRY_BACKOFF_MS
        if self.settings.long_poll or progressed or self._again or not self._all_stream_ready():
            self._schedule(0 if (progressed or self._again) else RETRY_BACKOFF_MS, self._fetch)

    def _all_stream_ready(self) -> bool:
        return all(self.stream_ready(k) for k in self.partitions)

    def _apply(self, entry: FetchEntry, data: bytes, asked: dict[TopicPartition, int]) -> bool:
        """Apply one partition's answer: reset, truncate or append. True if the log changed."""
        key = (entry.topic, entry.partition)
        part = self.partitions.get(key)  # type: ignore[arg-type]
        if part is None or part.role != "follower" or asked.get(key) != part.leader_epoch:  # type: ignore[arg-type]
            return False
        start = entry.log_start_offset
        if entry.error != 0:
            self.last_error = P.error_name(entry.error)
            if entry.error == P.OFFSET_OUT_OF_RANGE and part.log_end_offset < start:
                part.reset_to(start)  # behind the leader's log start (retention): start there
                return True
            return False
        if entry.diverging is not None:
            if entry.diverging[0] < 0 or part.log_end_offset < start:
                # the leader no longer has any epoch we share with it (retention removed them):
                # nothing in our log can be checked against its log, and truncating to its log
                # start would keep our old epoch entry and bring the same answer back at once.
                # Start over empty at its log start (Kafka's truncateFullyAndStartAt).
                part.reset_to(start)
                return True
            part.truncate_to(self._divergence_point(part, entry.diverging[0], entry.diverging[1]))
            return True
        n = part.append_as_follower(data) if data else 0
        part.set_high_watermark_from_leader(entry.high_watermark)
        self._stream_ready[key] = part.leader_epoch  # type: ignore[index]
        return n > 0
    @staticmethod
    def _divergence_point(part: Partition, leader_epoch: int, leader_end: int) -> int:
        """Where our log stops agreeing with the leader's: the end of the last epoch we share,
        by both logs' reckoning (KIP-101/KIP-279: the smaller of the two end offsets).
        ``leader_epoch`` >= 0 (an unknown epoch resets the log instead, see _apply)."""
        own_epoch, own_end = part.epochs.end_offset_for(leader_epoch, part.log_end_offset)
        if own_epoch < 0:
            return part.log_start_offset
        return min(leader_end, own_end)

    def _retry_later(self) -> None:
        if self._closed:
            return
        delay = self._backoff_ms
        self._backoff_ms = min(self._backoff_ms * 2, RETRY_BACKOFF_MAX_MS)
        self._schedule(delay, self._fetch)

    def stats(self) -> dict:
        return {"leader": self.leader_id, "in_flight": self._in_flight, "fetches": self.fetches,
                "last_error": self.last_error,
                "partitions": {f"{t}-{p}": self.stream_ready((t, p)) for t, p in self.partitions}}

    def close(self) -> None:
        self._closed = True
        self.leader.close()
