"""Recovery of a segment log on open, and its recovery checkpoint.

The checkpoint file ``recovery.checkpoint`` (JSON, replaced atomically at every flush) names
the active segment, the byte position up to which it was fsynced and the log end offset then.
Everything before that point is trusted: segments before the checkpoint segment are not
read at all (their indexes load lazily). Recovery re-validates only:

* the checkpoint segment from its last index entry at or before the flushed position (so the
  last batches are always CRC-checked, even after a clean close), and
* every byte after the flushed position, including later segments.

After a clean close the flushed position is the log end, so reopening costs
O(#segments + index_interval_bytes). The first invalid batch (bad header, CRC, offset gap, torn
tail) and everything after it is cut. Missing or damaged indexes are rebuilt. Not thread-safe.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from engines.api import EngineConfig, EngineError, RecoveryReport
from engines.durable import replace_file
from engines.segment_file import LogSegment, ScanResult

CHECKPOINT_FILE = "recovery.checkpoint"
CHECKPOINT_VERSION = 1
_LOG_NAME = re.compile(r"^(\d{20})\.log$")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    segment_base_offset: int
    position: int  # bytes of that segment known durable and valid
    next_offset: int  # log_end_offset at that position
    clean: bool  # written by close()


class Recovered(NamedTuple):
    """What ``recover`` found and made of a log directory."""
    segments: list[LogSegment]  # ascending by base offset; the last is the active one
    report: RecoveryReport
    needs_flush: bool  # the opener must flush: what recovery validated is not yet vouched for
    checkpoint_base: int  # the segment the checkpoint on disk names; -1: none, or about to be rewritten


def read_checkpoint(directory: str) -> Checkpoint | None:
    """The checkpoint, or None when missing or unreadable (recovery then scans everything)."""
    try:
        with open(os.path.join(directory, CHECKPOINT_FILE), "rb") as f:
            raw = json.loads(f.read(4096))
        if raw.get("version") != CHECKPOINT_VERSION:
            return None
        return Checkpoint(int(raw["segment_base_offset"]), int(raw["position"]),
                          int(raw["next_offset"]), bool(raw["clean"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_checkpoint(directory: str, dir_fd: int, checkpoint: Checkpoint, **replace: Any) -> bool:
    """Atomically replace the checkpoint (write temp, fsync, rename, fsync directory);
    ``replace``: ``temp_suffix`` / ``guard`` of ``durable.replace_file``. Returns whether it
    was replaced. Raises StorageFull / EngineError."""
    body = json.dumps({"version": CHECKPOINT_VERSION, "segment_base_offset": checkpoint.segment_base_offset,
                       "position": checkpoint.position, "next_offset": checkpoint.next_offset,
                       "clean": checkpoint.clean}).encode()
    return replace_file(os.path.join(directory, CHECKPOINT_FILE), body, dir_fd=dir_fd, **replace)


def list_segment_bases(directory: str) -> list[int]:
    """Base offsets of the .log files, ascending. Removes stray temp files and orphan indexes."""
    bases = []
    names = os.listdir(directory)
    for name in names:
        m = _LOG_NAME.match(name)
        if m:
            bases.append(int(m.group(1)))
    logs = {f"{b:020d}" for b in bases}
    for name in names:
        stem, _, ext = name.partition(".")
        if (ext == "index" and stem not in logs) or name.endswith(".tmp"):
            os.unlink(os.path.join(directory, name))
    return sorted(bases)


class _Recovery:
    """One run of recovery; collects what it did for the RecoveryReport."""

    def __init__(self, directory: str, config: EngineConfig) -> None:
        self.directory = directory
        self.config = config
        self.batches_scanned = 0
        self.truncated_bytes = 0
        self.rebuilt_indexes = 0
        self.notes: list[str] = []

    def run(self) -> Recovered:
        try:
            return self._run()
        except OSError as e:
            raise EngineError(f"recovery of {self.directory} failed: {e}") from e

    def _run(self) -> Recovered:
        checkpoint = read_checkpoint(self.directory)
        bases = list_segment_bases(self.directory)
        interval = self.config.index_interval_bytes
        segments = [LogSegment(self.directory, b, interval) for b in bases]
        if not segments:
            start = checkpoint.next_offset if checkpoint else 0
            segments = [LogSegment(self.directory, start, interval)]
            segments[0].index.reset()
            segments[0].fd  # create the file
            return Recovered(segments, RecoveryReport(message="new log"), False, -1)
        for s in segments:
            s.size_bytes = os.stat(s.log_path).st_size
        k, trusted_position = self._checkpoint_segment(checkpoint, bases, segments)
        for i in range(k):  # trusted: not read, indexes load lazily
            segments[i].next_offset = segments[i + 1].base_offset
            if not os.path.exists(segments[i].index.path):
                self.notes.append(f"index of segment {bases[i]} missing (rebuilt when first read)")
        segments, dirty = self._scan_from(segments, k, trusted_position)
        report = RecoveryReport(self.batches_scanned, self.truncated_bytes, self.rebuilt_indexes,
                                "; ".join(self.notes))
        base = checkpoint.segment_base_offset if checkpoint is not None and not dirty else -1
        return Recovered(segments, report, dirty, base)

    def _checkpoint_segment(self, checkpoint: Checkpoint | None, bases: list[int],
                            segments: list[LogSegment]) -> tuple[int, int]:
        """(index of the checkpoint segment, its trusted bytes); (0, 0) for a full scan."""
        if checkpoint is None:
            self.notes.append("no recovery checkpoint: full scan")
            return 0, 0
        if checkpoint.segment_base_offset not in bases:
            self.notes.append(f"checkpoint segment {checkpoint.segment_base_offset} missing: full scan")
            return 0, 0
        k = bases.index(checkpoint.segment_base_offset)
        if checkpoint.position > segments[k].size_bytes:
            self.notes.append(f"checkpoint position {checkpoint.position} past the end of segment "
                              f"{checkpoint.segment_base_offset}: full scan")
            return 0, 0
        return k, checkpoint.position

    def _scan_from(self, segments: list[LogSegment], k: int,
                   trusted_position: int) -> tuple[list[LogSegment], bool]:
        """Validate segment k from its last trusted index entry, then every later segment."""
        first = segments[k]
        if trusted_position and first.index.load(first.size_bytes):
            first.index.truncate_to_position(trusted_position)
        else:
            self._note_rebuild(first)
        offset, position = first.index.last_entry()
        first.index.truncate_to_position(position + 1)
        expected = offset
        for j in range(k, len(segments)):
            seg = segments[j]
            if j > k and seg.base_offset != expected:
                self.notes.append(f"segment {seg.base_offset} does not follow offset {expected}")
                cut = self._cut(segments, j, 0, ScanResult(0, expected, 0, None, "gap"))
                return self._mark_unsynced(cut, k), True
            if j > k:
                self._note_rebuild(seg)
                position = 0
            result = seg.scan(position, expected if j > k else offset, seg.size_bytes)
            if j == k and position and result.error is not None and not result.batches:
                # no valid batch where the index entry points: the index (derived data, e.g.
                # naming batches a truncation cut and appends replaced) is wrong, not
                # necessarily the log -- rebuild it from byte 0 rather than cut the log there
                self.notes.append(f"index of segment {seg.base_offset} does not match the log at "
                                  f"byte {position}: rebuilt")
                self._note_rebuild(seg)
                position, offset = 0, seg.base_offset
                result = seg.scan(position, offset, seg.size_bytes)
            self.batches_scanned += result.batches
            seg.size_bytes, seg.next_offset = result.end_position, result.next_offset
            if result.padding_bytes and j == k and result.end_position < trusted_position:
                # the checkpoint vouched for bytes where the zeros are: a damaged log, no padding
                result.error = f"byte {result.end_position}: zero bytes before the checkpoint position {trusted_position}"
            elif result.padding_bytes:  # a direct write's zeros past the end (direct_write.py)
                seg.padded_bytes = result.padding_bytes
                seg.trim()
            seg.last_timestamp_ms = result.last_timestamp_ms
            if result.error is not None:
                self.notes.append(f"segment {seg.base_offset}: {result.error}; cut")
                return self._mark_unsynced(self._cut(segments, j, result.end_position, result), k), True
            expected = seg.next_offset
        active = segments[-1]
        active.load_tail()
        clean = len(segments) == k + 1 and active.size_bytes == trusted_position
        if clean:
            self.notes.append(f"clean: verified {self.batches_scanned} tail batches")
        else:
            self._mark_unsynced(segments, k)
            self.notes.append(f"scanned {self.batches_scanned} batches")
        return segments, not clean

    @staticmethod
    def _mark_unsynced(segments: list[LogSegment], k: int) -> list[LogSegment]:
        """Mark segments[k:] dirty: recovery validated them as it found them, perhaps only in
        the page cache of a process that crashed before fsyncing them, so the new checkpoint may
        vouch for them only after the opener's flush fsyncs them. The segments before k were
        fsynced before the old checkpoint named a later one and are neither read nor written."""
        for seg in segments[k:]:
            seg.dirty = True
        return segments

    def _note_rebuild(self, seg: LogSegment) -> None:
        seg.index.reset()
        self.rebuilt_indexes += 1

    def _cut(self, segments: list[LogSegment], j: int, position: int,
             result: ScanResult) -> list[LogSegment]:
        seg = segments[j]
        self.truncated_bytes += seg.truncate_to_position(position)
        seg.next_offset = result.next_offset
        for later in segments[j + 1:]:
            self.truncated_bytes += os.stat(later.log_path).st_size
            later.delete()
        del segments[j + 1:]
        if seg.size_bytes == 0 and j > 0 and seg.base_offset != segments[j - 1].next_offset:
            seg.delete()
            del segments[j]
        active = segments[-1]
        if not active.index.loaded:
            if not active.index.load(active.size_bytes):
                active.index.reset()
                active.scan(0, active.base_offset, active.size_bytes)
        active.load_tail()
        return segments


def recover(directory: str, config: EngineConfig) -> Recovered:
    """Open and recover the segments in ``directory``. A new log (no segment there) gets one
    empty segment, created but not fsynced -- at the checkpoint's next offset if a checkpoint
    was there, else at 0; recovering the same directory again after a crash creates the same
    log. The directory itself is never fsynced here: the caller treats it as dirty."""
    return _Recovery(directory, config).run()
