"""Snapshots of the committed offsets in ``__consumer_offsets``: the record format and limits.

Per offsets partition the coordinator appends now and then (``SNAPSHOT_COMMIT_RECORDS``
commit records after the last snapshot, or ``SNAPSHOT_INTERVAL_MS`` after it if anything
changed, and in any case every ``SNAPSHOT_REFRESH_MS``) a snapshot: every committed offset of
the groups that hash to that partition. Once every record of it is acknowledged (acks=all),
its start offset is remembered in the coordinator's state file, and a restarted coordinator
reads that partition from there instead of from 0.

A snapshot goes through the partition's commit queue like a commit: it is captured when it
reaches the front with no append outstanding, so every commit before it is in it, and the
commits that arrive while it is written queue behind it and land after it in the log.

Replaying a partition from any offset at or before a complete snapshot gives the committed
offsets (a snapshot is the whole state as of its position), which is what makes a time
retention on the topic safe: the latest snapshot is never older than ``SNAPSHOT_REFRESH_MS``
while the coordinator runs, far inside ``OFFSETS_RETENTION_MS``, and everything after it is
younger still. (A coordinator down for longer than the retention would lose the offsets --
as Kafka expires offsets after ``offsets.retention.minutes``.)

Record format: key = msgpack ``["snapshot", snapshot_id, index, last]`` (4 elements, where a
commit key has 3); value = msgpack ``[[group, topic, partition, offset, metadata,
commit_ts_ms, topic_id], ...]``; the entries whose leader epoch is known follow whole, with
it, in a record of their own in the same append, which older code skips (``snapshot_appends``).
A snapshot larger than ``SNAPSHOT_RECORD_BYTES_MAX`` is split into several records, one append
each; ``last`` marks the final one. The groups' readings
(nodes/coordinator/group_readings.py) follow it as reading records, several to an append
(``in_appends``): part of the snapshot -- its pointer is remembered only once they are in too.

Not thread-safe (pure functions and plain data).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import msgpack

SNAPSHOT_KEY_TAG = "snapshot"
EPOCHS_KEY_TAG = "loom.offsets.epochs"  # ``epoch_records``: key [tag, group or snapshot id, index]
SNAPSHOT_COMMIT_RECORDS = 10_000          # commit records after the last snapshot that call for a new one
SNAPSHOT_INTERVAL_MS = 10 * 60 * 1000     # ... or this long after it, if anything changed
SNAPSHOT_REFRESH_MS = 24 * 3600 * 1000    # ... and this long after it in any case
SNAPSHOT_RECORD_BYTES_MAX = 512 * 1024    # one snapshot record (one append)
SNAPSHOT_TIMEOUT_MS = 60_000              # a snapshot not written by then is abandoned (no pointer)
OFFSETS_RETENTION_MS = 7 * 24 * 3600 * 1000

# the retention must never reach the latest snapshot of a running coordinator
assert OFFSETS_RETENTION_MS >= 5 * SNAPSHOT_REFRESH_MS >= 5 * SNAPSHOT_INTERVAL_MS

# group, topic, partition, offset (None: a deletion, in a commit record only), metadata, commit_ts_ms,
# topic_id, leader_epoch (-1: not known; offsets_commits.CommitEntry)
Entry = tuple[str, str, int, int | None, str, int, str, int]


@dataclass
class SnapshotJob:
    """A snapshot waiting in (or at the front of) its offsets partition's commit queue."""

    partition: int
    deadline_ms: int
    snapshot_id: str = ""
    records: list[list[tuple[bytes, bytes]]] | None = None   # its appends, captured when it reaches the front
    next_index: int = 0
    start_offset: int = -1
    finished: bool = False


def new_snapshot_id() -> str:
    return os.urandom(6).hex()


def snapshot_appends(snapshot_id: str, entries: Iterable[Entry]) -> list[list[tuple[bytes, bytes]]]:
    """The appends of a snapshot of ``entries``, at least one (so an empty snapshot says "nothing
    is committed here"): each a snapshot record of entries without their leader epochs -- the
    entries older code reads --, then, where any of them has a known epoch, the epoch record of
    those, whole (``epoch_records``), together at most about ``SNAPSHOT_RECORD_BYTES_MAX`` bytes
    (an entry is a few KiB at most). In one append, a load never applies a snapshot record
    without its epochs: an entry without one replaces the entry held, epoch and all."""
    chunks: list[tuple[list[bytes], list[bytes]]] = [([], [])]
    size = 0
    for e in entries:
        plain = msgpack.packb(list(e[:7]), use_bin_type=True)
        whole = msgpack.packb(list(e), use_bin_type=True) if e[7] >= 0 else b""
        if chunks[-1][0] and size + len(plain) + len(whole) + 10 > SNAPSHOT_RECORD_BYTES_MAX:
            chunks.append(([], []))
            size = 0
        chunks[-1][0].append(plain)
        if whole:
            chunks[-1][1].append(whole)
        size += len(plain) + len(whole)
    out = []
    for i, (plain_entries, whole_entries) in enumerate(chunks):
        key = msgpack.packb([SNAPSHOT_KEY_TAG, snapshot_id, i, i == len(chunks) - 1], use_bin_type=True)
        append = [(key, _packed_array(plain_entries))]
        if whole_entries:
            append.append((_epochs_key(snapshot_id, i), _packed_array(whole_entries)))
        out.append(append)
    return out


def snapshot_records(snapshot_id: str, entries: Iterable[Entry]) -> list[tuple[bytes, bytes]]:
    """The records of ``snapshot_appends``, in order."""
    return [kv for append in snapshot_appends(snapshot_id, entries) for kv in append]


def epoch_records(of: str, entries: Iterable[Entry]) -> list[tuple[bytes, bytes]]:
    """The record that carries the leader epochs of ``entries`` (those whose epoch is known, whole:
    8 fields, upserts as a snapshot's entries); none when no epoch is known. It follows the
    commit records of those entries in their append (as a snapshot record's, ``snapshot_appends``):
    older code skips it by its key -- a commit key's third field is a partition, here a string --
    and reads the offsets whole, without the epochs (an epoch field in a commit value or a
    snapshot entry it refuses: skipped, the commit, or the snapshot record with every group's
    offsets in it). ``of``: the group, or the snapshot id (read by no one)."""
    known = [msgpack.packb(list(e), use_bin_type=True) for e in entries if e[7] >= 0]
    return [(_epochs_key(of, 0), _packed_array(known))] if known else []


def is_epochs_key(key: bytes | None) -> bool:
    """``key`` is an epoch record's (``epoch_records``)."""
    k = unpacked_key(key)
    return isinstance(k, list) and len(k) == 3 and k[0] == EPOCHS_KEY_TAG


def unpacked_key(key: bytes | None) -> object:
    """An offsets-topic record's key, unpacked; None when there is none or it is not msgpack."""
    if not key:
        return None
    try:
        return msgpack.unpackb(key, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):  # not msgpack: none of ours
        return None


def _epochs_key(of: str, index: int) -> bytes:
    return msgpack.packb([EPOCHS_KEY_TAG, of, str(index)], use_bin_type=True)


def _packed_array(packed: list[bytes]) -> bytes:
    """A msgpack array of the already packed ``packed``: its header (at most 5 bytes), then them."""
    n = len(packed)
    head = bytes([0x90 | n]) if n < 16 else (b"\xdc" + n.to_bytes(2, "big") if n < 65536
                                                else b"\xdd" + n.to_bytes(4, "big"))
    return head + b"".join(packed)


def in_appends(records: list[tuple[bytes, bytes]]) -> list[list[tuple[bytes, bytes]]]:
    """``records`` in order, in appends of at most SNAPSHOT_RECORD_BYTES_MAX bytes (each at least
    one record)."""
    out: list[list[tuple[bytes, bytes]]] = []
    size = 0
    for k, v in records:
        n = len(k) + len(v) + 16  # besides its bytes, a record's header in the batch (about)
        if not out or size + n > SNAPSHOT_RECORD_BYTES_MAX:
            out.append([])
            size = 0
        out[-1].append((k, v))
        size += n
    return out


def parse_key(key: bytes | None) -> tuple[str, int, bool] | None:
    """(snapshot_id, index, last) of a snapshot record's key; None for any other key."""
    k = unpacked_key(key)
    if isinstance(k, list) and len(k) == 4 and k[0] == SNAPSHOT_KEY_TAG and isinstance(k[1], str) \
            and isinstance(k[2], int) and isinstance(k[3], bool):
        return k[1], k[2], k[3]
    return None


def decode_entries(value: bytes) -> list[Entry]:
    """The entries of a snapshot record. Raises ValueError for a value that is not one."""
    raw = msgpack.unpackb(value, raw=False)
    if not isinstance(raw, list):
        raise ValueError("a snapshot value is a list of entries")
    out = []
    for e in raw:
        # the topic id, 7th, is absent from snapshots older than it; the leader epoch, 8th, too (and
        # from entries whose epoch is not known)
        if not (isinstance(e, list) and 6 <= len(e) <= 8 and isinstance(e[0], str) and isinstance(e[1], str)
                and isinstance(e[2], int) and isinstance(e[3], int) and isinstance(e[5], int)
                and (len(e) < 8 or (type(e[7]) is int and e[7] >= -1))):
            raise ValueError(f"bad snapshot entry {e!r}")
        out.append((e[0], e[1], e[2], e[3], str(e[4]), e[5], str(e[6]) if len(e) >= 7 else "", e[7] if len(e) == 8 else -1))
    return out
