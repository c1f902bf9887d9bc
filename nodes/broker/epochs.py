"""The leader-epoch cache of one partition replica (Kafka's LeaderEpochFileCache, KIP-101).

An ordered list of (leader_epoch, start_offset): the first offset written under each epoch.
It answers "where did epoch E end?", which is how a returning replica finds the point where
its log diverges from the leader's (truncate there, not at the high watermark).

Persisted as a small text file, replaced atomically on every change (changes are rare: one
per leadership change). Not thread-safe.
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path

FILE_NAME = "leader-epoch-checkpoint"


class EpochCache:
    def __init__(self, directory: str | os.PathLike | None) -> None:
        self._path = Path(directory) / FILE_NAME if directory is not None else None
        self.entries: list[tuple[int, int]] = []
        if self._path is not None and self._path.exists():
            self._load()

    def _load(self) -> None:
        entries = []
        for line in self._path.read_text().split("\n"):  # type: ignore[union-attr]
            parts = line.split()
            if len(parts) == 2 and all(p.lstrip("-").isdigit() for p in parts):
                entries.append((int(parts[0]), int(parts[1])))
        self.entries = entries

    def _save(self) -> None:
        if self._path is None:
            return
        tmp = self._path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write("".join(f"{e} {o}\n" for e, o in self.entries))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)
        fd = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself must survive a crash
        finally:
            os.close(fd)

    @property
    def latest_epoch(self) -> int:
        return self.entries[-1][0] if self.entries else -1

    def assign(self, epoch: int, start_offset: int) -> None:
        """Record that ``epoch`` starts at ``start_offset`` (no-op if not newer)."""
        if epoch < 0 or (self.entries and epoch <= self.entries[-1][0]):
            return
        self.entries.append((epoch, start_offset))
        self._save()

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
            self.entries = kept
            self._save()

    def truncate_from_start(self, start_offset: int) -> None:
        """Retention moved the log start: keep the epoch covering it, drop older ones."""
        kept = list(self.entries)
        while len(kept) > 1 and kept[1][1] <= start_offset:
            kept.pop(0)
        if kept != self.entries:
            self.entries = kept
            self._save()


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
