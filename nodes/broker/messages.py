"""The typed inputs and outputs of the broker core (nodes/broker/core.py), with the Loom wire
form of each next to it: per-partition parts of PRODUCE, FETCH, LIST_OFFSETS and REPLICA_ACK
requests as the handlers decode them, and the per-partition answers as the core returns them.

The NamedTuples are their own wire form where the wire is a positional list (msgpack packs a
tuple as an array): a ``FetchEntry`` is the 7-element fetch entry as it goes out, a
``ProduceResult`` the 3- or 4-element produce result (``encode_produce_results``). Decoding
never trusts the peer: a part of the wrong shape decodes to None (the handler answers it as
malformed) or raises ``ValueError`` (a follower counts and drops a malformed answer).

Pure; thread-safe.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

TopicPartition = tuple[str, int]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# -- PRODUCE ---------------------------------------------------------------------------------
class ProduceInput(NamedTuple):
    """One batch of a produce request, for one partition."""

    topic: str
    partition: int
    leader_epoch: int  # the leader epoch the client knows (-1: it sent none)
    data: bytes        # one record batch as the client built it (base offset 0): bytes, or the
    #                    request's OwnedFrame, which the leader stamps in place (fabric/buffers.py)

    @classmethod
    def decode(cls, tp: Any, data: bytes) -> "ProduceInput | None":
        """``[topic, partition]`` or ``[topic, partition, leader_epoch]`` with its payload frame;
        None when malformed."""
        if not (isinstance(tp, (list, tuple)) and len(tp) in (2, 3) and isinstance(tp[0], str)
                and all(_is_int(x) for x in tp[1:])):
            return None
        return cls(tp[0], tp[1], tp[2] if len(tp) == 3 else -1, data)


class AppendRequest(NamedTuple):
    """One client's produce as the core takes it (appended with every other of the same pass)."""

    acks: int                            # 0, 1 or -1 (all: checked against min.insync.replicas)
    inputs: Sequence[ProduceInput]
    topic_ids: dict[str, str] | None     # the client's topic ids by name, if it sent them


class ProduceResult(NamedTuple):
    """The answer for one ``ProduceInput``."""

    base_offset: int                  # -1 when not written
    error: int                        # fabric.protocol error code, 0: written (or a duplicate)
    message: str                      # "duplicate" for a retried batch the log already holds
    leader_epoch: int | None = None   # the epoch it was written in (written batches only)

    def failed(self, code: int, message: str) -> "ProduceResult":
        """This result, answered with an error after all (acks=all not satisfied)."""
        return self._replace(error=code, message=message)


MALFORMED_PRODUCE_MESSAGE = "each part is [topic, partition] or [topic, partition, leader_epoch]"


def encode_produce_results(results: Sequence[ProduceResult]) -> list:
    """The ``results`` of a PRODUCE reply: ``[base_offset, error, message]``, plus the leader
    epoch for a written batch."""
    return [r if r[3] is not None else r[:3] for r in results]


# -- FETCH -----------------------------------------------------------------------------------
class FetchInput(NamedTuple):
    """One partition of a fetch request."""

    topic: str
    partition: int
    offset: int               # the first offset wanted (a follower: its log end offset)
    max_bytes: int | None     # this partition's cap (None: the request's remaining budget)
    current_epoch: Any        # the leader epoch the fetcher knows (-1 or absent: none)
    last_epoch: int           # a follower: the epoch of its last batch (-1: none)

    @classmethod
    def decode(cls, tp: Any) -> "FetchInput | None":
        """``[topic, partition, offset, max_bytes?, current_epoch?, last_epoch?]``; None when
        malformed."""
        if not (isinstance(tp, (list, tuple)) and len(tp) >= 3 and isinstance(tp[0], str)
                and isinstance(tp[1], int) and isinstance(tp[2], int)):
            return None
        n = len(tp)
        return cls(tp[0], tp[1], tp[2], tp[3] if n > 3 and isinstance(tp[3], int) else None,
                   tp[4] if n > 4 else -1, tp[5] if n > 5 and isinstance(tp[5], int) else -1)


class FetchRequest(NamedTuple):
    """A decoded fetch: what a parked fetch is re-read from."""

    replica_id: int                         # a follower's broker id; -1: a consumer
    budget_bytes: int                       # the reply's byte budget, within the broker's limit
    parts: list                             # per part: a FetchInput, or the raw part if malformed
    topic_ids: dict[str, str] | None


class FetchEntry(NamedTuple):
    """The answer for one ``FetchInput`` (its batches travel as the matching payload frame)."""

    topic: str | None
    partition: int | None
    error: int
    high_watermark: int
    log_end_offset: int
    log_start_offset: int
    diverging: list | None   # [epoch, end offset]: where a follower's log parts from ours (KIP-320)

    @classmethod
    def failed(cls, topic: str | None, partition: int | None, code: int) -> "FetchEntry":
        return cls(topic, partition, code, -1, -1, -1, None)

    @classmethod
    def decode(cls, raw: Any) -> "FetchEntry":
        """A fetch entry as a follower receives it. Raises ValueError when malformed."""
        if not (isinstance(raw, (list, tuple)) and len(raw) >= 7 and isinstance(raw[0], str)
                and all(_is_int(v) for v in raw[1:6])):
            raise ValueError(f"fetch entry {str(raw)[:80]} is malformed")
        div = raw[6]
        if div is not None and not (isinstance(div, (list, tuple)) and len(div) == 2 and all(map(_is_int, div))):
            raise ValueError(f"fetch entry diverging {str(div)[:40]} is malformed")
        return cls(*raw[:7])


# -- LIST_OFFSETS ----------------------------------------------------------------------------
class ListOffsetsInput(NamedTuple):
    topic: str
    partition: int
    spec: int  # -2 earliest, -1 latest (the high watermark), >= 0 a timestamp (ms)

    @classmethod
    def decode(cls, tp: Any) -> "ListOffsetsInput | None":
        if not (isinstance(tp, (list, tuple)) and len(tp) == 3 and isinstance(tp[0], str)
                and _is_int(tp[1]) and _is_int(tp[2])):
            return None
        return cls(tp[0], tp[1], tp[2])


class ListOffsetsEntry(NamedTuple):
    topic: str | None
    partition: int | None
    error: int
    offset: int  # -1 with an error


# -- REPLICA_ACK -----------------------------------------------------------------------------
class ReplicaAck(NamedTuple):
    """A follower's log end offset after appending from the replication stream."""

    topic: str
    partition: int
    log_end_offset: int
    leader_epoch: int

    @classmethod
    def decode(cls, raw: Any) -> "ReplicaAck | None":
        if not (isinstance(raw, list) and len(raw) == 4 and isinstance(raw[0], str) and all(map(_is_int, raw[1:]))):
            return None
        return cls(*raw)
