"""The high-watermark checkpoint of one partition replica (Kafka's replication-offset-checkpoint,
one file per partition here): the HW as one text line in the engine's folder of the partition,
beside its epoch checkpoint, since both describe that engine's log (partition_dirs.py).

Read once at open, so that a restarted leader serves its HW before its followers fetch. Written
by the broker every ``HW_CHECKPOINT_INTERVAL_MS`` and at close, only when the HW moved since the
last write, through ``engines.durable.replace_file`` without fsync: a stale or lost file only
makes a restart start from a lower HW, which the followers' next fetches raise again, and an
fsync per partition every interval would stall the reactor.

Not thread-safe: owned by the broker's reactor, with the Partition that holds it.
"""

from __future__ import annotations

import os

from engines.durable import replace_file

HW_CHECKPOINT_FILE = "high-watermark-checkpoint"
HW_CHECKPOINT_INTERVAL_MS = 5000  # the broker writes moved HWs this often (and at close)


class HighWatermarkCheckpoint:
    def __init__(self, directory: str | None) -> None:
        """``directory`` None: no file, nothing read or written."""
        self._path = os.path.join(directory, HW_CHECKPOINT_FILE) if directory is not None else None
        self._written = 0  # the HW the file holds, as far as we know

    def load(self, log_start_offset: int, log_end_offset: int) -> int:
        """The HW to start from: the checkpointed one capped by the log (a crash may have cut
        an unflushed tail) and raised to its start (retention may have moved it since, as
        Kafka's updateHighWatermark bounds it). A missing or unreadable file means the log
        start, as before checkpoints."""
        try:
            with open(self._path, "rb") as f:  # type: ignore[arg-type]
                saved = int(f.read(64).split()[0])
        except (TypeError, OSError, ValueError, IndexError):
            return log_start_offset
        self._written = max(log_start_offset, min(saved, log_end_offset))
        return self._written

    def save(self, high_watermark: int) -> None:
        """Write ``high_watermark`` unless it is the one last written (or there is no
        directory). Raises StorageFull / EngineError: the previous file is then left whole,
        and the next call tries again."""
        if self._path is None or high_watermark == self._written:
            return
        replace_file(self._path, f"{high_watermark}\n".encode(), sync=False)
        self._written = high_watermark
