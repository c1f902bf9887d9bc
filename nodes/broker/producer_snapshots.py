"""Producer-state snapshots of one partition replica (Kafka's ``<offset>.snapshot`` files): the
idempotent-producer table (nodes/broker/producers.py) as it was at a log end, so that a replica
reopened restores the table and reads only the log after it (nodes/broker/tail_recovery.py),
and keeps the producers whose batches lie before a tail read, or were deleted by retention.

One file per snapshot, ``<offset, 20 digits>.producer-snapshot``, in the engine's folder of the
partition beside the epoch and HW checkpoints (nodes/broker/partition_dirs.py): it describes
that engine's log only. Its content: the magic (its last byte the format's version), the CRC32C
of the body (4 bytes, big-endian), and the body, little-endian signed 64-bit integers --
``offset`` (the log end it was taken at: the table describes the log below it), ``last_batch``
(base offset, leader epoch, CRC of the batch ending at ``offset``), what the table may have
forgotten, the producer count, then per producer (``ProducerStateTable.export``, least recently
used first) its id, epoch and batch count, and per batch its base sequence, last sequence and
base offset.

What the table may have forgotten: in format 2 (MAGIC_FORGOT), ``forgot_below`` itself (> 0:
every batch of a producer the table may lack lies below it); in format 1 (MAGIC), a flag -- 0,
nothing forgotten, 1, the table may lack producers whose batches are in the log, all below
``offset`` (the log ended there). A table that forgot nothing is written in format 1, byte for
byte as older code wrote it, so that older code (a rollback) still reads it; one that forgot
producers in format 2, which older code skips as damaged (it then rebuilds the table from the
log's tail, as without a snapshot) -- a format-1 flag in its place would tell newer code that
producers were forgotten up to the log end, and the offset would never be passed.

Which log a snapshot describes: the one whose batch ending at ``offset`` is ``last_batch``. Two
logs that hold the same batch (base offset, leader epoch, CRC) at the same place hold the same
batches before it (the leader-epoch rule that truncation follows, KIP-101), so a snapshot whose
``last_batch`` is where it says is valid for the log as it is now. Truncations, resets and the
cuts of recovery delete the snapshots above the new log end before they cut, so a crash between
the two leaves none; one that outlives a cut anyway -- a deletion lost with a power failure
(unlinks are not fsync'd), older code that ran on the directory meanwhile and knows nothing of
snapshots, a log end that recovery cut -- fails the check at open and is deleted. A snapshot at
or below the log start cannot be checked (its last batch is gone): not used, and deleted with
retention.

When written: at clean close (fsync'd: ``engines.durable.replace_file``) and, found due by the
broker's HW-checkpoint timer, once the log end moved by PRODUCER_SNAPSHOT_INTERVAL_RECORDS or moved
at all PRODUCER_SNAPSHOT_INTERVAL_MS after the last one -- never on the produce path; those due are
written a slice per pass of the broker's snapshot timer (nodes/broker/core_timers.py). The periodic ones
skip the fsyncs (as the HW checkpoint does): the rename keeps them atomic for a process crash,
and one lost or torn by a power failure fails its CRC or its check at open and only makes the
next open read more log. At most PRODUCER_SNAPSHOTS_KEPT files are kept, the newest.

An unreadable or damaged snapshot is logged and skipped (an older one, or the tail read of
before). Older code ignores these files; a directory without them opens as before.
Not thread-safe: owned by the broker's reactor, with the Partition that holds it.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import sys
from typing import NamedTuple, Sequence

from array import array
from itertools import chain

import crc32c

from engines.checks import translate_os_error
from engines.durable import TEMP_SUFFIX, replace_file
from engines.errors import LoomError

log = logging.getLogger(__name__)

SNAPSHOT_SUFFIX = ".producer-snapshot"
MAGIC = b"LOOMPSS1"  # the format's version is its last byte: 1, forgotten producers as a flag
MAGIC_FORGOT = b"LOOMPSS2"  # 2: as the offset they lie below (written only when they exist)
PRODUCER_SNAPSHOTS_KEPT = 2
PRODUCER_SNAPSHOT_INTERVAL_RECORDS = 100_000  # a snapshot at least this often (records appended)
PRODUCER_SNAPSHOT_INTERVAL_MS = 60_000  # and this long after the last one, when the log end moved
# the periodic snapshots due are written a slice per pass of the broker's snapshot timer, each
# pass at most this many producers' worth of tables (at least one table: ~10 ms of encoding),
# a snapshot's file work counted as PRODUCER_SNAPSHOT_FILE_PRODUCERS producers (~0.1 ms)
PRODUCER_SNAPSHOT_PASS_INTERVAL_MS = 200
PRODUCER_SNAPSHOT_PRODUCERS_PER_PASS_MAX = 2_000
PRODUCER_SNAPSHOT_FILE_PRODUCERS = 20
SNAPSHOT_BYTES_MAX = 256 * 1024 * 1024  # larger than any table PRODUCERS_MAX allows: a damaged file
BATCHES_REMEMBERED_MAX = 1024  # per producer in a file (the table keeps its own BATCHES_REMEMBERED)
_CRC = struct.Struct(">I")
# offset, last batch (base offset, leader epoch, CRC), forgotten (a flag, or forgot_below), producer count
_HEAD = struct.Struct("<qqqqqq")


# the files of this module, and only they: 20 ASCII digits (``snapshot_name``); ``temp``, the
# one replace_file writes first, which a crash in the middle of a write leaves behind. Any other
# entry is not read, and not deleted (str.isdigit takes digits that int() refuses or that name
# another file; a directory cannot be unlinked, and would stop every cut and pruning after it).
_NAME = re.compile(r"(?P<offset>[0-9]{20})" + re.escape(SNAPSHOT_SUFFIX) + r"(?P<temp>" + re.escape(TEMP_SUFFIX)
                   + r")?")


class SnapshotError(LoomError):
    """A snapshot file that cannot be read or does not parse (never raised past this module's
    callers: the snapshot is skipped)."""


class LastBatch(NamedTuple):
    """The batch ending at a snapshot's offset: which log the snapshot describes."""
    base_offset: int
    leader_epoch: int
    crc: int


class Snapshot(NamedTuple):
    offset: int
    last_batch: LastBatch
    forgot_below: int  # ProducerStateTable.forgot_below
    producers: Sequence[tuple[int, int, Sequence[tuple[int, int, int]]]]  # ProducerStateTable.export


def snapshot_name(offset: int) -> str:
    return f"{offset:020d}{SNAPSHOT_SUFFIX}"


def encode(snapshot: Snapshot) -> bytes:
    flat: list[tuple[int, ...]] = []
    for producer_id, epoch, batches in snapshot.producers:
        flat.append((producer_id, epoch, len(batches)))
        flat.extend(batches)
    ints = array("q", chain.from_iterable(flat))  # one pass in C: a 10,000-producer table in ~50 ms
    if sys.byteorder != "little":
        ints.byteswap()
    last = snapshot.last_batch
    body = _HEAD.pack(snapshot.offset, last.base_offset, last.leader_epoch, last.crc,
                      snapshot.forgot_below, len(snapshot.producers)) + ints.tobytes()
    return (MAGIC_FORGOT if snapshot.forgot_below else MAGIC) + _CRC.pack(crc32c.crc32c(body)) + body


def decode(data: bytes) -> Snapshot:
    """The snapshot in ``data``. Raises SnapshotError for anything else."""
    start = len(MAGIC) + _CRC.size
    if len(data) < start + _HEAD.size or data[:len(MAGIC)] not in (MAGIC, MAGIC_FORGOT):
        raise SnapshotError("not a producer snapshot (magic or length)")
    body = memoryview(data)[start:]
    if _CRC.unpack_from(data, len(MAGIC))[0] != crc32c.crc32c(body):
        raise SnapshotError("CRC mismatch")
    offset, base, epoch, crc, forgot, count = _HEAD.unpack_from(body)
    ints = array("q")
    if (len(body) - _HEAD.size) % ints.itemsize:
        raise SnapshotError("body is not whole integers")
    ints.frombytes(body[_HEAD.size:])
    if sys.byteorder != "little":
        ints.byteswap()
    producers: list[tuple[int, int, list[tuple[int, int, int]]]] = []
    i = 0
    for _ in range(count):
        if i + 3 > len(ints):
            raise SnapshotError(f"ends inside producer {len(producers)} of {count}")
        producer_id, producer_epoch, n = ints[i:i + 3]
        i += 3
        if not 0 <= n <= BATCHES_REMEMBERED_MAX or i + 3 * n > len(ints):
            raise SnapshotError(f"producer {producer_id}: {n} batches do not fit")
        producers.append((producer_id, producer_epoch, [tuple(ints[j:j + 3]) for j in range(i, i + 3 * n, 3)]))
        i += 3 * n
    valid_forgot = forgot > 0 if data[:len(MAGIC)] == MAGIC_FORGOT else forgot in (0, 1)
    if i != len(ints) or not valid_forgot or offset < 0 or count < 0:
        raise SnapshotError("body does not parse")
    if data[:len(MAGIC)] == MAGIC and forgot:
        forgot = offset  # format 1's flag: the table described the log below ``offset``
    return Snapshot(offset, LastBatch(base, epoch, crc), forgot, producers)


class ProducerSnapshots:
    """The snapshot files in one directory (their offsets listed once, at construction)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.offsets: list[int] = []  # ascending
        try:
            entries = list(os.scandir(directory))
        except OSError:
            entries = []  # a directory not made yet: no snapshots
        for entry in entries:
            match = _NAME.fullmatch(entry.name)
            if match is None:
                continue
            if match["temp"]:
                _remove_temp(entry.path)
            elif _is_file(entry):
                self.offsets.append(int(match["offset"]))
        self.offsets.sort()

    def path(self, offset: int) -> str:
        return os.path.join(self.directory, snapshot_name(offset))

    def load(self, offset: int) -> Snapshot:
        """The snapshot at ``offset``. Raises SnapshotError (unreadable, damaged, or naming
        another offset than its file)."""
        try:
            with open(self.path(offset), "rb") as f:
                data = f.read(SNAPSHOT_BYTES_MAX + 1)
        except OSError as e:
            raise SnapshotError(f"cannot read: {e}") from None
        if len(data) > SNAPSHOT_BYTES_MAX:
            raise SnapshotError(f"over {SNAPSHOT_BYTES_MAX} bytes")
        snapshot = decode(data)
        if snapshot.offset != offset:
            raise SnapshotError(f"holds offset {snapshot.offset}, not its file's {offset}")
        return snapshot

    def write(self, snapshot: Snapshot, sync: bool) -> None:
        """Write ``snapshot`` atomically, then delete the oldest beyond PRODUCER_SNAPSHOTS_KEPT.
        Raises StorageFull / EngineError (the files are then as they were)."""
        replace_file(self.path(snapshot.offset), encode(snapshot), sync=sync)
        if snapshot.offset not in self.offsets:
            self.offsets.append(snapshot.offset)
            self.offsets.sort()
        while len(self.offsets) > PRODUCER_SNAPSHOTS_KEPT:
            self.delete(self.offsets[0])

    def delete(self, offset: int) -> None:
        """Remove the snapshot at ``offset``. Raises EngineError when it stays (it must not be
        trusted later: the caller stops before it changes the log it described)."""
        try:
            os.unlink(self.path(offset))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise translate_os_error(e, f"delete {self.path(offset)}") from e
        self.offsets.remove(offset)

    def delete_above(self, offset: int) -> None:
        """Delete the snapshots of a log end past ``offset`` (before the log is cut there).
        Raises EngineError."""
        while self.offsets and self.offsets[-1] > offset:
            self.delete(self.offsets[-1])

    def delete_from_start(self, log_start_offset: int) -> None:
        """Delete the snapshots at or below ``log_start_offset`` (retention moved it there):
        their last batch is gone, so they can no longer be checked. Raises EngineError."""
        while self.offsets and self.offsets[0] <= log_start_offset:
            self.delete(self.offsets[0])


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False  # vanished, or unreadable: not a snapshot to use or delete


def _remove_temp(path: str) -> None:
    """A snapshot's temp file left by a crash during its write (each snapshot has its own name,
    so the next write does not reuse it): removed, else a restart loop would pile them up. A
    failure is only logged: nothing reads these files."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("cannot remove %s: %s", path, e)
