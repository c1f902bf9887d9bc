"""The per-partition answers of the data-plane requests, typed, with their wire form: a
``ProduceResult`` per batch of a PRODUCE reply (``results``), a ``FetchEntry`` per partition
of a FETCH reply (``parts``; its batches travel as the matching payload frame) and a
``ListOffsetsEntry`` per partition of a LIST_OFFSETS reply (``parts``).

The broker builds them (``nodes/broker/core.py``, ``handlers.py``) and every reader decodes
them here -- the client library's Sender and Consumer, the Admin, the coordinator's offsets
client and loader, a follower's fetcher -- so no reader picks fields of a positional list by
index. A NamedTuple is its own wire form (msgpack packs a tuple as an array), so the bytes on
the wire are those of the lists they replace.

``decode`` never trusts the peer: an answer of the wrong shape raises ``MalformedFrame`` (a
``FabricError``), which the reader counts, drops or reports as a failed request.

Pure; thread-safe.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from fabric import protocol as P
from fabric.errors import MalformedFrame


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _malformed(what: str, raw: Any) -> MalformedFrame:
    return MalformedFrame(P.MALFORMED_REQUEST, f"{what} {str(raw)[:80]} is malformed")


class ProduceResult(NamedTuple):
    """The answer for one batch of a PRODUCE request. On the wire ``[base_offset, error,
    message]``, plus the leader epoch for a written batch (``encode_produce_results``)."""

    base_offset: int                  # -1 when not written
    error: int                        # fabric.protocol error code, 0: written (or a duplicate)
    message: str                      # "duplicate" for a retried batch the log already holds
    leader_epoch: int | None = None   # the epoch it was written in (written batches only)

    def failed(self, code: int, message: str) -> "ProduceResult":
        """This result, answered with an error after all (acks=all not satisfied)."""
        return self._replace(error=code, message=message)

    @classmethod
    def decode(cls, raw: Any) -> "ProduceResult":
        """One entry of a PRODUCE reply's ``results``. Raises MalformedFrame."""
        if not (isinstance(raw, (list, tuple)) and 2 <= len(raw) <= 4 and _is_int(raw[0]) and _is_int(raw[1])):
            raise _malformed("produce result", raw)
        message = raw[2] if len(raw) > 2 and isinstance(raw[2], str) else ""
        epoch = raw[3] if len(raw) > 3 and _is_int(raw[3]) else None
        return cls(raw[0], raw[1], message, epoch)


def encode_produce_results(results: Sequence[ProduceResult]) -> list:
    """The ``results`` of a PRODUCE reply: ``[base_offset, error, message]``, plus the leader
    epoch for a written batch."""
    return [r if r[3] is not None else r[:3] for r in results]


def decode_produce_results(header: dict) -> list[ProduceResult]:
    """Every result of a PRODUCE reply header, in request order. Raises MalformedFrame."""
    raw = header.get("results", [])
    if not isinstance(raw, list):
        raise _malformed("produce results", raw)
    return [ProduceResult.decode(r) for r in raw]


class FetchEntry(NamedTuple):
    """The answer for one partition of a FETCH request (its batches: the matching payload)."""

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
        """One entry of a FETCH reply's ``parts``. Raises MalformedFrame."""
        if not (isinstance(raw, (list, tuple)) and len(raw) >= 7 and isinstance(raw[0], str)
                and all(_is_int(v) for v in raw[1:6])):
            raise _malformed("fetch entry", raw)
        div = raw[6]
        if div is not None and not (isinstance(div, (list, tuple)) and len(div) == 2 and all(map(_is_int, div))):
            raise _malformed("fetch entry diverging", div)
        return cls(*raw[:7])


class ListOffsetsEntry(NamedTuple):
    """The answer for one partition of a LIST_OFFSETS request."""

    topic: str | None
    partition: int | None
    error: int
    offset: int  # -1 with an error; with offset_not_available the leader's HW so far (a lower bound)

    @classmethod
    def decode(cls, raw: Any) -> "ListOffsetsEntry":
        """One entry of a LIST_OFFSETS reply's ``parts``. Raises MalformedFrame."""
        if not (isinstance(raw, (list, tuple)) and len(raw) == 4 and isinstance(raw[0], str)
                and all(_is_int(v) for v in raw[1:])):
            raise _malformed("list-offsets entry", raw)
        return cls(*raw)


def decode_parts(header: dict, kind: type[FetchEntry] | type[ListOffsetsEntry]) -> list:
    """Every entry of a FETCH or LIST_OFFSETS reply header's ``parts`` as ``kind``. Raises
    MalformedFrame."""
    raw = header.get("parts", [])
    if not isinstance(raw, list):
        raise _malformed("parts", raw)
    return [kind.decode(r) for r in raw]
