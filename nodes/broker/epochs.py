"""The leader-epoch cache of one partition replica (Kafka's LeaderEpochFileCache, KIP-101).

An ordered list of (leader_epoch, start_offset): the first offset written under each epoch.
It answers "where did epoch E end?", which is how a returning replica finds the point where
its log diverges from the leader's (truncate there, not at the high watermark).

Invariant: entries increase strictly in both columns. An entry that would break it truncates
the entries it conflicts with, as Kafka's cache does (``_with_entry``); a change that breaks it
anyway is a bug and raises AssertionError, which stops the node.

Persisted as a small text file (one ``epoch start_offset`` line per entry) through
``engines.durable.replace_file`` on every change (changes are rare: one per leadership change);
the file is written before the in-memory list changes, so a failed write leaves both as they
were and the same change can be tried again. A line that does not parse is a damaged file:
EngineError at open, never skipped. Not thread-safe.
"""

from __future__ import annotations

import bisect
import logging
import os
from pathlib import Path

from engines.api import EngineError
from engines.durable import replace_file

log = logging.getLogger(__name__)

FILE_NAME = "leader-epoch-checkpoint"

Entry = tuple[int, int]  # (leader_epoch, start_offset)


def _with_entry(entries: list[Entry], epoch: int, start_offset: int) -> list[Entry]:
    """``entries`` plus (epoch, start_offset) as Kafka's LeaderEpochFileCache.assign makes it:
    entries from the end whose epoch is >= ``epoch`` or whose start offset is >= ``start_offset``
    are dropped first (they conflict with the new one), so both columns keep increasing. Pure."""
    kept = list(entries)
    while kept and (kept[-1][0] >= epoch or kept[-1][1] >= start_offset):
        kept.pop()
    removed = entries[len(kept):]
    if len(removed) > 1 or (removed and removed[0][1] != start_offset):
        log.warning("leader epoch %d from offset %d truncates the conflicting entries %s", epoch, start_offset, removed)
    kept.append((epoch, start_offset))
    return kept


def check_monotonic(entries: list[Entry]) -> None:
    """Raise AssertionError unless ``entries`` increase strictly in both columns."""
    for (e0, o0), (e1, o1) in zip(entries, entries[1:]):
        if not (e0 < e1 and o0 < o1):
            raise AssertionError(f"leader-epoch cache not increasing: {(e0, o0)} then {(e1, o1)} in {entries}")


def parse_checkpoint(text: str, source: str = FILE_NAME) -> list[Entry]:
    """The entries of a checkpoint file's text, non-monotonic ones truncated as ``_with_entry``
    does. Raises EngineError naming ``source`` and the line for a line that is not two integers
    (an empty file, or a file ending in a newline, is fine)."""
    entries: list[Entry] = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, 1):
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError(f"{len(parts)} fields")
            epoch, start_offset = int(parts[0]), int(parts[1])
        except ValueError as e:
            raise EngineError(f"{source}: line {number} is not 'epoch start_offset' ({e}): {line[:80]!r}") from None
        if epoch < 0 or start_offset < 0:
            raise EngineError(f"{source}: line {number} has a negative epoch or offset: {line[:80]!r}")
        entries = _with_entry(entries, epoch, start_offset)
    return entries


class EpochCache:
    def __init__(self, directory: str | os.PathLike | None) -> None:
        """Load the checkpoint in ``directory`` (None: in memory only). Raises EngineError for
        an unreadable or damaged file."""
        self._path = Path(directory) / FILE_NAME if directory is not None else None
        self.entries: list[Entry] = []
        if self._path is not None and self._path.exists():
            self._load()

    def _load(self) -> None:
        try:
            text = self._path.read_text()  # type: ignore[union-attr]
        except (OSError, UnicodeDecodeError) as e:
            raise EngineError(f"cannot read {self._path}: {e}") from e
        self.entries = parse_checkpoint(text, str(self._path))

    def _replace(self, entries: list[Entry]) -> None:
        """Persist ``entries``, then make them the cache's (nothing changes if the write fails).
        Raises StorageFull / EngineError; AssertionError if they are not increasing (a bug)."""
        check_monotonic(entries)
        if self._path is not None:
            replace_file(self._path, "".join(f"{e} {o}\n" for e, o in entries).encode())
        self.entries = entries

    @property
    def latest_epoch(self) -> int:
        return self.entries[-1][0] if self.entries else -1

    def assign(self, epoch: int, start_offset: int) -> None:
        """Record that ``epoch`` starts at ``start_offset``. A no-op for a negative epoch, an
        epoch older than the latest (callers refuse batches whose epoch goes down before they
        get here) or the latest epoch from its recorded start or later; entries that start at
        or after ``start_offset`` are truncated (``_with_entry``). Raises StorageFull /
        EngineError with the cache unchanged."""
        if epoch < 0:
            return
        if self.entries:
            latest_epoch, latest_start = self.entries[-1]
            if epoch < latest_epoch or (epoch == latest_epoch and start_offset >= latest_start):
                return
        self._replace(_with_entry(self.entries, epoch, start_offset))

    def end_offset_for(self, epoch: int, log_end_offset: int) -> tuple[int, int]:
        """(largest known epoch <= ``epoch``, the offset where it ended) -- the start of the
        next epoch, or the log end for the latest. (-1, -1) if ``epoch`` predates them all."""
        found = -1
        for i, (e, _) in enumerate(self.entries):
            if e > epoch:
                break
            found = i
        if found < 0:
            return -1, -1
        e = self.entries[found][0]
        if found + 1 < len(self.entries):
            return e, self.entries[found + 1][1]
        return e, log_end_offset

    def truncate_from_end(self, end_offset: int) -> None:
        """The log was truncated to ``end_offset``: forget epochs that start at or after it."""
        kept = [(e, o) for e, o in self.entries if o < end_offset]
        if kept != self.entries:
            self._replace(kept)

    def truncate_from_start(self, start_offset: int) -> None:
        """Retention moved the log start: keep the epoch covering it, drop older ones."""
        kept = list(self.entries)
        while len(kept) > 1 and kept[1][1] <= start_offset:
            kept.pop(0)
        if kept != self.entries:
            self._replace(kept)


def epoch_contradiction(checkpoint: list[tuple[int, int]], epoch: int, base_offset: int,
                        previous_epoch: int) -> str | None:
    """Why a stored batch at ``base_offset`` cannot carry leader ``epoch`` (the batch
    before it carried ``previous_epoch``, -1 if unknown), or None if it can, given the
    ``checkpoint`` entries (EpochCache.entries as loaded at open). Pure.

    The leader-epoch field (batch header bytes 12-15) is stamped by the leader after the
    producer computed the CRC, so the CRC does not cover it (as in Kafka); this checkpoint
    is the independent record it is checked against. Epochs never go down along a log;
    a batch inside the range of a checkpointed epoch carries exactly that epoch; none
    carries an epoch newer than the checkpoint's latest (the checkpoint is written before
    a leader's first batch of an epoch, and after a follower stored one -- a follower that
    crashed in between loses that unacknowledged tail, which it fetches again). With no
    checkpoint entries only the order is checked. We chose this over a header checksum:
    the batch format, its per-batch stamping cost and every stored log stay as they are."""
    if epoch < previous_epoch:
        return f"leader epoch {epoch} is older than the {previous_epoch} before it"
    if not checkpoint:
        return None
    if epoch > checkpoint[-1][0]:
        return f"leader epoch {epoch} is newer than the checkpoint's latest {checkpoint[-1][0]}"
    i = bisect.bisect_right(checkpoint, base_offset, key=lambda e: e[1]) - 1
    if i < 0:  # before the first checkpointed epoch: the older epochs are not recorded
        return None if epoch <= checkpoint[0][0] else \
            f"leader epoch {epoch} before offset {checkpoint[0][1]}, where epoch {checkpoint[0][0]} starts"
    if epoch != checkpoint[i][0]:
        return f"leader epoch {epoch} inside epoch {checkpoint[i][0]} (from offset {checkpoint[i][1]})"
    return None
