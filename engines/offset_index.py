"""The sparse offset index of one log segment (Kafka's OffsetIndex).

File ``{base_offset:020d}.index``: 8-byte entries, big-endian ``(relative_offset u32,
position u32)``; an entry says "the batch whose base offset is base_offset + relative_offset
starts at byte ``position`` of the .log file". One entry per ``index_interval_bytes`` of log.
The index is derived data: recovery rebuilds it from the log when it is missing or damaged.

Entries live in two ``array('I')`` (8 bytes per entry in memory); new entries are written to the
file at ``write_pending`` (flush, roll, close), not on every append. Not thread-safe.
"""

from __future__ import annotations

import bisect
import os
import sys
from array import array

from engines.api import EngineError

ENTRY_BYTES = 8
RELATIVE_OFFSET_MAX = 2**32 - 1
POSITION_MAX = 2**32 - 1


class IndexDamaged(EngineError):
    """An index entry does not point at the batch it names: the segment engine rebuilds the
    index (it never leaves the engine)."""


def _to_file_order(a: array) -> array:
    if sys.byteorder == "little":
        a = array("I", a)
        a.byteswap()
    return a


class OffsetIndex:
    """Sparse relative-offset -> byte-position map for one segment."""

    def __init__(self, path: str, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self.relative_offsets = array("I")
        self.positions = array("I")
        self._entries_written = 0  # entries already in the file
        self._file_entries = -1  # entries the file holds; -1: unknown (rewrite it whole)
        self.loaded = False

    def __len__(self) -> int:
        return len(self.positions)

    # -- load / rebuild -----------------------------------------------------------------------
    def load(self, log_size_bytes: int) -> bool:
        """Read the index file. Returns False (and leaves the index empty) when the file is
        missing or fails the sanity checks (size, strictly increasing entries, positions
        inside the log); the caller then rebuilds it from the log."""
        self.reset()
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return False
        if len(raw) % ENTRY_BYTES:
            return False
        pairs = array("I")
        pairs.frombytes(raw)
        if sys.byteorder == "little":
            pairs.byteswap()
        rel, pos = pairs[0::2], pairs[1::2]
        if not _strictly_increasing(rel) or not _strictly_increasing(pos):
            return False
        if pos and pos[-1] >= log_size_bytes:
            return False
        self.relative_offsets, self.positions = rel, pos
        self._entries_written = self._file_entries = len(pos)
        self.loaded = True
        return True

    def reset(self) -> None:
        """Forget every entry (the file is rewritten at the next write_pending)."""
        self.relative_offsets = array("I")
        self.positions = array("I")
        self._entries_written = 0
        self._file_entries = -1
        self.loaded = True

    # -- updates ------------------------------------------------------------------------------
    def append(self, offset: int, position: int) -> None:
        """Add an entry for the batch with base ``offset`` at byte ``position``. Entries must
        be strictly increasing (asserted: a violation is a programmer error)."""
        rel = offset - self.base_offset
        assert 0 <= rel <= RELATIVE_OFFSET_MAX and 0 <= position <= POSITION_MAX
        assert not self.positions or (rel > self.relative_offsets[-1] and position > self.positions[-1])
        self.relative_offsets.append(rel)
        self.positions.append(position)

    def truncate_to_position(self, position: int) -> None:
        """Drop entries at or after byte ``position`` of the log."""
        keep = bisect.bisect_left(self.positions, position)
        del self.relative_offsets[keep:]
        del self.positions[keep:]
        self._entries_written = min(self._entries_written, keep)

    # -- queries ------------------------------------------------------------------------------
    def lookup(self, offset: int) -> tuple[int, int]:
        """(base offset, position) of the last indexed batch starting at or before ``offset``;
        (segment base offset, 0) when there is none."""
        i = bisect.bisect_right(self.relative_offsets, offset - self.base_offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self.relative_offsets[i], self.positions[i]

    def last_entry(self) -> tuple[int, int]:
        if not self.positions:
            return self.base_offset, 0
        return self.base_offset + self.relative_offsets[-1], self.positions[-1]

    # -- file ---------------------------------------------------------------------------------
    def write_pending(self, sync: bool) -> None:
        """Write entries not yet in the file (and cut stale ones); fsync if ``sync``.
        Raises OSError (the caller translates it)."""
        n = len(self.positions)
        if self._entries_written == n and self._file_entries == n and not sync:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if self._file_entries != self._entries_written:
                os.ftruncate(fd, self._entries_written * ENTRY_BYTES)
            if n > self._entries_written:
                pairs = array("I", bytes(8 * (n - self._entries_written)))
                pairs[0::2] = self.relative_offsets[self._entries_written:]
                pairs[1::2] = self.positions[self._entries_written:]
                os.pwrite(fd, _to_file_order(pairs).tobytes(), self._entries_written * ENTRY_BYTES)
            self._entries_written = self._file_entries = n
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def delete(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _strictly_increasing(a: array) -> bool:
    return all(x < y for x, y in zip(a, a[1:]))
