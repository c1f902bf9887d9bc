"""What a group consumer needs of the group coordinator, as two narrow objects:

``CoordinatorLink`` -- requests from the consumer's own thread: ``request`` (answered by a
callback when the consumer's reactor runs, e.g. an async commit) and ``call`` (waited for
while the reactor runs, so fetch replies keep landing; retriable errors retried). It finds the
coordinator's endpoint only when the first request goes out.

``HeartbeatThread`` -- the background thread (own DEALER socket) that sends HEARTBEAT every
``heartbeat_interval_ms`` while the member is active, and leaves the group for a member whose
application stopped polling. It talks to its member through ``HeartbeatMember`` only.

Thread-safety: a ``CoordinatorLink`` belongs to the consumer's thread; a ``HeartbeatThread``
calls only the ``HeartbeatMember`` methods, which take the member's lock.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Protocol

from fabric import protocol as P
from fabric.blocking_client import BlockingClient
from fabric.clock import Clock
from fabric.errors import ClientError, CodedError, RemoteError
from fabric.rpc import ReplyCallback
from fabric.zmq_context import context as zmq_context

log = logging.getLogger(__name__)

COORDINATOR_CALL_TIMEOUT_MS = 10_000
RETRY_BACKOFF_MS = 200
REJOIN_ERRORS = frozenset({P.UNKNOWN_MEMBER, P.ILLEGAL_GENERATION, P.UNKNOWN_GROUP, P.REBALANCE_IN_PROGRESS})
NO_LEADER_EPOCH = P.NO_LEADER_EPOCH  # OFFSET_FETCH's and OFFSET_COMMIT's "not known"


class OffsetFetchAnswer(NamedTuple):
    """OFFSET_FETCH's answer as a client reads it (``read_offset_fetch``)."""

    # [[topic, partition, offset (-1: nothing committed), metadata, leader epoch (-1: not known)]...]
    offsets: list
    topic_ids: dict[str, str]  # {topic: the id of the topic its committed offsets are of}
    newer: set[tuple[str, int]]  # newer than the group's reading of their topic (``newer_than_reading``)


def read_offset_fetch(answer: dict) -> OffsetFetchAnswer:
    """Read OFFSET_FETCH's answer: the one reader of the join's lookup (group_join), an assigned
    consumer's and ``committed_starts`` (group_committed). ``offsets``: each entry
    ``[topic, partition, offset, metadata, leader_epoch]``: the leader epoch of the record before
    the offset, as the committer read it (KIP-320), -1 where not known -- also from an older
    coordinator, which sends none, or a value that is not an epoch (fields after it, a newer
    coordinator's, are left out). ``topic_ids``: empty from an older coordinator, and an entry that is not a name's string
    id is left out. ``newer``: of the partitions asked for that have nothing committed, those the
    coordinator knows were made after the group began reading their topic
    (nodes/coordinator/group_readings.py) -- they start at their log start whatever
    ``auto_offset_reset`` says; empty from an older coordinator, which sends no such field (the
    consumer then behaves as before). Sent as ``{topic: [partition...]}``; one that is not of that
    shape names every partition of the answer with nothing committed: read as "nothing is newer",
    a partition made after the group began reading would start by the policy (``latest`` never
    reads its records so far), while from its log start they are at most read again. Raises
    ClientError(malformed_request) for an answer without readable ``offsets`` (not an exception
    that stops the reactor inside the reply's callback)."""
    raw_offsets = answer.get("offsets")
    if not (isinstance(raw_offsets, list) and all(
            isinstance(e, list) and len(e) >= 4 and isinstance(e[0], str) and type(e[1]) is int
            and type(e[2]) is int and isinstance(e[3], str) for e in raw_offsets)):
        raise ClientError("an OFFSET_FETCH answer's offsets must be [[topic, partition, offset, metadata]...]",
                          P.MALFORMED_REQUEST)
    offsets = [e[:4] + [e[4] if len(e) > 4 and type(e[4]) is int and e[4] >= 0 else NO_LEADER_EPOCH]
               for e in raw_offsets]
    ids = answer.get("topic_ids")
    raw = answer.get("newer_than_reading")
    newer: set[tuple[str, int]] = set()
    if raw is not None:
        readable = isinstance(raw, dict) and all(
            isinstance(t, str) and isinstance(ps, list) and all(type(p) is int for p in ps) for t, ps in raw.items())
        if readable:
            newer = {(t, p) for t, ps in raw.items() for p in ps}
        else:
            log.warning("OFFSET_FETCH's newer_than_reading cannot be read (%.200r): every partition with nothing "
                        "committed starts at its log start", raw)
            newer = {(t, p) for t, p, o, *_ in offsets if o < 0}
    return OffsetFetchAnswer(
        offsets, {t: i for t, i in ids.items() if isinstance(t, str) and isinstance(i, str)} if isinstance(ids, dict) else {},
        newer)


def committed_epochs(offsets: list) -> dict[tuple[str, int], int]:
    """{partition: the leader epoch of the record before its committed offset} of a read
    OFFSET_FETCH answer's ``offsets`` (``read_offset_fetch``), where both are known."""
    return {(t, p): e for t, p, o, _, e in offsets if o >= 0 and e >= 0}


class OffsetFetchHolder(Protocol):
    """What waits for an OFFSET_FETCH answer on the consumer's reactor (the join's lookup, an
    assigned consumer's): the answer's fields, or the error that ended it."""

    offsets: list | None
    topic_ids: dict[str, str]
    newer: set[tuple[str, int]]
    error: CodedError | None


def take_offset_fetch(holder: OffsetFetchHolder, answer: dict) -> None:
    """Read OFFSET_FETCH's ``answer`` into ``holder`` (``read_offset_fetch``), or, a malformed
    one, keep its ClientError as ``holder.error``: read inside the reply's callback, where a
    raise would stop the reactor."""
    try:
        holder.offsets, holder.topic_ids, holder.newer = read_offset_fetch(answer)
    except CodedError as e:
        holder.error = e


class RequestClient(Protocol):
    """What the link needs of an RPC client (``fabric.rpc.RpcClient``)."""

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: ReplyCallback,
                timeout_ms: int) -> Any: ...

    def close(self) -> None: ...


class Pump(Protocol):
    """What the link needs of the consumer's reactor: run one pass, waiting up to ``timeout_ms``."""

    def run_once(self, timeout_ms_max: int = 1000) -> None: ...


class CoordinatorLink:
    def __init__(self, reactor: Pump, clock: Clock, connect: Callable[[], RequestClient],
                 stopped: Callable[[], bool] = lambda: False) -> None:
        """``connect()``: the RPC client to the coordinator (called once, at the first request);
        ``stopped()``: true once the consumer is closing (no more retries)."""
        self.reactor = reactor
        self.clock = clock
        self._connect = connect
        self._stopped = stopped
        self._client: RequestClient | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None

    def request(self, command: bytes, header: dict, *, callback: ReplyCallback,
                timeout_ms: int = COORDINATOR_CALL_TIMEOUT_MS) -> None:
        if self._client is None:
            self._client = self._connect()
        self._client.request(command, header, callback=callback, timeout_ms=timeout_ms)

    def call(self, command: bytes, header: dict, *, timeout_ms: int = COORDINATOR_CALL_TIMEOUT_MS,
             retry_ms: int = COORDINATOR_CALL_TIMEOUT_MS, final: frozenset[int] = frozenset()) -> dict:
        """The reply header. Retriable errors (not_coordinator while it loads, timeouts) are
        retried for ``retry_ms``; then raised (RemoteError, or RequestTimeout: both CodedError).
        The codes in ``final`` are raised at once, retriable or not (what the coordinator
        answers from its own metadata)."""
        deadline = self.clock.now_ms() + retry_ms
        while True:
            box: dict[str, Any] = {}

            def done(h: dict | None, _p: list, err: RemoteError | None) -> None:
                box["reply"] = (h, err)
            try:
                self.request(command, header, callback=done, timeout_ms=timeout_ms)
            except CodedError as e:  # not sent (no coordinator known yet: retriable): as an answer
                box["reply"] = (None, e)
            while "reply" not in box:
                self.reactor.run_once(100)
            h, err = box["reply"]
            if err is None:
                return h
            if not err.retriable or err.code in final or self.clock.now_ms() >= deadline or self._stopped():
                box.clear()
                try:
                    raise err
                finally:  # the error's traceback holds this frame: no local may hold the error
                    del err
            self.reactor.run_once(RETRY_BACKOFF_MS)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class HeartbeatMember(Protocol):
    """What the heartbeat thread needs of its group member (each call takes the member's lock)."""

    def heartbeat_state(self) -> tuple[bool, str, int]:
        """(heartbeat?, member_id, generation): an active member, or a joining one with an id."""

    def leave_if_poll_expired(self) -> str | None:
        """The member id to leave the group with, if the application stopped polling."""

    def request_rejoin(self, generation: int, reset_member: bool) -> None:
        """The coordinator answered a heartbeat of ``generation`` with a rejoin error."""


@dataclass(frozen=True)
class HeartbeatSettings:
    group_id: str
    client_id: str
    heartbeat_interval_ms: int
    session_timeout_ms: int


class HeartbeatThread(threading.Thread):
    """Sends HEARTBEAT while the member is active; flags a rejoin when the coordinator says
    the group is rebalancing or no longer knows the member. Owns its own DEALER socket."""

    def __init__(self, member: HeartbeatMember, settings: HeartbeatSettings, endpoint: str) -> None:
        super().__init__(name=f"loom-heartbeat-{settings.group_id}", daemon=True)
        self.member = member
        self.settings = settings
        self.endpoint = endpoint
        self._stop_event = threading.Event()

    def run(self) -> None:
        s = self.settings
        client = BlockingClient(zmq_context(), self.endpoint, identity=f"{s.client_id}-hb")
        try:
            while not self._stop_event.wait(s.heartbeat_interval_ms / 1000):
                self.beat(client)
        finally:
            client.close()

    def beat(self, client: Any) -> None:
        """One heartbeat (or, for an application that stopped polling, the leave) through
        ``client`` (a ``BlockingClient``)."""
        s = self.settings
        timeout_ms = max(100, min(s.heartbeat_interval_ms * 2, s.session_timeout_ms))
        leaving = self.member.leave_if_poll_expired()
        if leaving is not None:
            try:
                client.call(P.LEAVE_GROUP, {"group": s.group_id, "member_id": leaving}, timeout_ms=timeout_ms)
            except CodedError as e:  # the session expiry removes it anyway
                log.debug("leave failed: %s", e)
            return
        active, mid, gen = self.member.heartbeat_state()
        if not active:
            return
        try:
            client.call(P.HEARTBEAT, {"group": s.group_id, "member_id": mid, "generation": gen}, timeout_ms=timeout_ms)
        except CodedError as e:
            if e.code in REJOIN_ERRORS:
                self.member.request_rejoin(gen, reset_member=e.code in (P.UNKNOWN_MEMBER, P.UNKNOWN_GROUP))
            else:  # timeouts / not_coordinator: keep trying; the session decides
                log.debug("heartbeat: %s", e)

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=5)
