"""The coordinator's one client for ``__consumer_offsets`` (and the log-end lookups that check
a commit): shared by the offset store (appends, acks=all) and its loader (fetches).

It owns the RPC clients to the brokers (one per endpoint, made on first use), finds a
partition's leader in the coordinator's state, and reads an append's reply once, into an
``AppendOutcome``, for the commits and the snapshots alike.

Not thread-safe: runs on the coordinator's reactor.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from fabric import protocol as P
from fabric.errors import CodedError, MalformedFrame
from fabric.replies import decode_produce_results
from nodes.coordinator.context import BrokerRequester, GroupContext, ReplyCallback

OFFSETS_TOPIC = "__consumer_offsets"
APPEND_TIMEOUT_MS = 5000           # one acks=all PRODUCE to an offsets partition
APPEND_REPLY_GRACE_MS = 1000       # the client waits this much longer than the broker
HW_LOOKUP_TIMEOUT_MS = 3000        # LIST_OFFSETS of a committed partition
LOAD_FETCH_BYTES_MAX = 4 * 1024 * 1024
LOAD_FETCH_TIMEOUT_MS = 3000

Record = tuple[int, bytes | None, bytes, Any]   # timestamp_ms, key, value, headers


class AppendOutcome(NamedTuple):
    """What became of one acks=all append to an offsets partition."""

    code: int            # 0: appended and replicated to the ISR
    base_offset: int     # offset of its first record where the broker wrote it (also when the
    #                      append failed after the write: acks=all not met), else -1
    message: str
    answered: bool       # the broker answered for the partition (False: no or a top-level reply)
    sent: bool = True    # False: the RPC client refused it before it left (it is in no log)

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def retriable(self) -> bool:
        """Worth sending again: a retriable code, or no answer for the partition at all."""
        return self.code in P.RETRIABLE or not self.answered

    @property
    def maybe_written(self) -> bool:
        """It may be in the log although it failed: the broker wrote it before it failed (an
        answer with a base offset), or it left and no answer for the partition came (a
        top-level answer, the broker's buffer_full too, may follow the write)."""
        return not self.ok and (self.base_offset >= 0 or (self.sent and not self.answered))

    @classmethod
    def from_reply(cls, header: dict | None, err: CodedError | None) -> "AppendOutcome":
        try:
            results = decode_produce_results(header) if header is not None else []
        except MalformedFrame:
            results = []
        if not results:
            # no answer for the partition (or one we cannot read: a peer's bad reply is not a bug
            # of ours): it may have landed
            code = err.code if isinstance(err, CodedError) else P.UNKNOWN
            return cls(code, -1, err.message if isinstance(err, CodedError) else "append failed", False,
                       sent=err.may_have_arrived if isinstance(err, CodedError) else True)
        res = results[0]
        return cls(res.error, res.base_offset, res.message, True)


class OffsetsTopicClient:
    """Requests of the committed-offsets machinery to the brokers."""

    def __init__(self, context: GroupContext, connect: Callable[[str], BrokerRequester],
                 topic: str = OFFSETS_TOPIC) -> None:
        """``connect(endpoint)`` makes the RPC client to one broker (called once per endpoint)."""
        self.context = context
        self.topic = topic
        self._connect = connect
        self._clients: dict[str, BrokerRequester] = {}

    def leader_endpoint(self, topic: str, partition: int) -> str | None:
        """The request endpoint of the partition's leader; None if it has none or it is not alive."""
        t = self.context.state.topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            return None
        leader = t.partitions[partition].leader
        b = self.context.brokers.get(leader)
        return b.endpoint if b is not None and leader in self.context.alive else None

    def _client(self, endpoint: str) -> BrokerRequester:
        c = self._clients.get(endpoint)
        if c is None:
            c = self._clients[endpoint] = self._connect(endpoint)
        return c

    def append(self, q: int, batch: bytes, possibly_written: bool, on_outcome: Callable[[AppendOutcome], None]) -> bool:
        """Append ``batch`` (fabric.records.build_batch) to offsets partition ``q`` with acks=all;
        ``possibly_written``: an earlier send of it may be in the log (the leader's producer
        state judges it so: nodes/broker/producers.py). ``on_outcome`` gets what became of it.
        False (nothing sent, no callback) if the partition has no live leader."""
        endpoint = self.leader_endpoint(self.topic, q)
        if endpoint is None:
            return False

        def on_reply(header: dict | None, _payloads: list, err: CodedError | None) -> None:
            on_outcome(AppendOutcome.from_reply(header, err))
        self._client(endpoint).request(P.PRODUCE, {"acks": -1, "timeout_ms": APPEND_TIMEOUT_MS, "internal": True,
                                                   "parts": [[self.topic, q, -1, int(possibly_written)]]},
                                       [batch], callback=on_reply, timeout_ms=APPEND_TIMEOUT_MS + APPEND_REPLY_GRACE_MS)
        return True

    def fetch(self, endpoint: str, q: int, offset: int, callback: ReplyCallback) -> None:
        """Read offsets partition ``q`` from ``offset`` (as a consumer, up to the HW) at ``endpoint``."""
        self._client(endpoint).request(
            P.FETCH, {"replica_id": -1, "wait_ms": 0, "max_bytes": LOAD_FETCH_BYTES_MAX,
                      "parts": [[self.topic, q, offset, LOAD_FETCH_BYTES_MAX]]},
            callback=callback, timeout_ms=LOAD_FETCH_TIMEOUT_MS)

    def log_ends(self, endpoint: str, parts: list[list], callback: ReplyCallback,
                 topic_ids: dict[str, str] | None = None) -> None:
        """LIST_OFFSETS of ``parts`` ([topic, partition, -1]) at their leader ``endpoint``;
        ``topic_ids``: a leader still holding a deleted topic of one of those names answers
        unknown_topic_or_partition, not the deleted topic's end."""
        header: dict = {"parts": parts}
        if topic_ids:
            header["topic_ids"] = topic_ids
        self._client(endpoint).request(P.LIST_OFFSETS, header, callback=callback, timeout_ms=HW_LOOKUP_TIMEOUT_MS)

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        self._clients.clear()
