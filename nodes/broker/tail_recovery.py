"""A replica's state rebuilt from its log's tail when it opens (``Partition.__init__``): the
idempotent producers' state from the last PRODUCER_STATE_SCAN_RECORDS_MAX records' batches, each
batch's leader epoch checked against the epoch checkpoint on the way. A batch whose epoch cannot
be right (``epochs.epoch_contradiction``: the field is outside the batch CRC) cuts the log there,
as recovery cuts a batch whose CRC fails.

Runs on the thread that opens the partition, before it is served."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterator

from engines import batch as B
from nodes.broker.epochs import epoch_contradiction

if TYPE_CHECKING:
    from nodes.broker.partition import Partition

log = logging.getLogger(__name__)

PRODUCER_STATE_SCAN_RECORDS_MAX = 500_000  # rebuild idempotence state from this much tail
READ_CHUNK_BYTES = 4 * 1024 * 1024


def tail_start(part: Partition) -> int:
    """Where the tail read at open begins."""
    return max(part.log_start_offset, part.log_end_offset - PRODUCER_STATE_SCAN_RECORDS_MAX)


def tail_headers(part: Partition) -> Iterator[B.BatchHeader]:
    """Headers of the tail's batches, oldest first."""
    offset = tail_start(part)
    end = part.log_end_offset
    while offset < end:
        data = part.engine.read(offset, READ_CHUNK_BYTES)
        if not data:
            return
        for h, _ in B.iter_batches(data):
            yield h
            offset = h.next_offset


def recover_tail(part: Partition) -> None:
    """Rebuild ``part``'s producer state from its log's tail, cutting the log at the first batch
    whose leader epoch contradicts the checkpoint. Raises EngineError."""
    # producers that wrote only before the tail read here (or before the log start, in
    # batches retention deleted) are unknown to the table
    part.producers.truncate(forgot_producers=tail_start(part) > 0)
    checkpoint = list(part.epochs.entries)
    previous = -1
    for h in tail_headers(part):
        problem = epoch_contradiction(checkpoint, h.leader_epoch, h.base_offset, previous)
        if problem is not None:
            log.warning("%s-%d: recovery cuts the log at offset %d (was %d): %s", part.topic,
                        part.partition, h.base_offset, part.log_end_offset, problem)
            part.engine.truncate_to(h.base_offset)
            part.epochs.truncate_from_end(part.log_end_offset)
            break
        previous = h.leader_epoch
        part.record_appended([h])
