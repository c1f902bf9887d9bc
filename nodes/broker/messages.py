"""The typed inputs of the broker core (nodes/broker/core.py), with the Loom wire form of each
next to it: per-partition parts of PRODUCE, FETCH, LIST_OFFSETS and REPLICA_ACK requests as the
handlers decode them. The per-partition answers the core returns (``ProduceResult``,
``FetchEntry``, ``ListOffsetsEntry``) are the client library's too and are defined in
``fabric/replies.py``; they are importable from here as well, so that a front end finds every
type the core speaks in one place.

The NamedTuples are their own wire form where the wire is a positional list (msgpack packs a
tuple as an array). Decoding never trusts the peer: a part of the wrong shape decodes to None
(the handler answers it as malformed).

Pure; thread-safe.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

# the answers are the client library's too: defined once, in fabric/replies.py
from fabric.replies import FetchEntry, ListOffsetsEntry, ProduceResult, encode_produce_results

__all__ = ["TopicPartition", "ProduceInput", "AppendRequest", "ProduceResult", "MALFORMED_PRODUCE_MESSAGE",
           "encode_produce_results", "FetchInput", "FetchRequest", "FetchEntry", "ListOffsetsInput",
           "ListOffsetsEntry", "ReplicaAck"]

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
    possibly_written: bool = False  # an earlier send of this batch may be in a log
    #                                 (nodes/broker/producers.py); absent from the part (a client
    #                                 from before the field): False, judged as such clients were
    follows: bool = False  # it follows a batch of its partition the client has no answer for yet
    #                        (fabric/client/sender_flights.py): not taken at any sequence

    @classmethod
    def decode(cls, tp: Any, data: bytes) -> "ProduceInput | None":
        """``[topic, partition]``, ``[topic, partition, leader_epoch]`` or ``[topic, partition,
        leader_epoch, flags]`` (0..3: ``P.PART_POSSIBLY_WRITTEN``, ``P.PART_FOLLOWS``; absent: 0,
        so a client from before the field is judged as it was, never refused for a producer the
        broker forgot) with its payload frame; None when malformed."""
        # the part every client of today sends, checked with type() (msgpack makes exact ints
        # and strs) and built without the Python-level __new__; anything else: the full check
        if tp.__class__ is list and len(tp) == 4 and tp[0].__class__ is str and tp[1].__class__ is int \
                and tp[2].__class__ is int and tp[3].__class__ is int and 0 <= tp[3] <= 3:
            return tuple.__new__(cls, (tp[0], tp[1], tp[2], data, tp[3] & 1 == 1, tp[3] >= 2))
        return cls._decode_checked(tp, data)

    @classmethod
    def _decode_checked(cls, tp: Any, data: bytes) -> "ProduceInput | None":
        if not (isinstance(tp, (list, tuple)) and 2 <= len(tp) <= 4 and isinstance(tp[0], str)
                and all(_is_int(x) for x in tp[1:])):
            return None
        if len(tp) == 4 and not 0 <= tp[3] <= 3:
            return None
        flags = tp[3] if len(tp) == 4 else 0
        return cls(tp[0], tp[1], tp[2] if len(tp) >= 3 else -1, data, flags & 1 == 1, flags >= 2)

    @property
    def flags(self) -> int:
        """As the part said them (``P.PART_POSSIBLY_WRITTEN`` | ``P.PART_FOLLOWS``)."""
        return self.possibly_written | (self.follows << 1)


class AppendRequest(NamedTuple):
    """One client's produce as the core takes it (appended with every other of the same pass)."""

    acks: int                            # 0, 1 or -1 (all: checked against min.insync.replicas)
    inputs: Sequence[ProduceInput]
    topic_ids: dict[str, str] | None     # the client's topic ids by name, if it sent them
    internal: bool = False               # the coordinator's append (may write internal topics)


MALFORMED_PRODUCE_MESSAGE = ("each part is [topic, partition], [topic, partition, leader_epoch] or "
                             "[topic, partition, leader_epoch, flags] (flags 0..3)")


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
    incarnation: Any = None                 # the follower process it names: judged at every read
                                            # (a parked fetch is read again after a restart)


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


# -- REPLICA_ACK -----------------------------------------------------------------------------
class ReplicaAck(NamedTuple):
    """A follower's log end offset after appending from the replication stream."""

    topic: str
    partition: int
    log_end_offset: int
    leader_epoch: int

    @classmethod
    def decode(cls, raw: Any) -> "ReplicaAck | None":
        # the usual part, checked with type() (msgpack makes exact ints and strs) and built
        # without the Python-level __new__: an idle leader reads one per partition per second
        if type(raw) is list and len(raw) == 4 and type(raw[0]) is str and type(raw[1]) is int \
                and type(raw[2]) is int and type(raw[3]) is int:
            return tuple.__new__(cls, raw)
        if not (isinstance(raw, list) and len(raw) == 4 and isinstance(raw[0], str) and all(map(_is_int, raw[1:]))):
            return None
        return cls(*raw)
