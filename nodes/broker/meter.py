"""What a broker records into its metrics registry (fabric/metrics.py): records and bytes in
per group commit, records and bytes out per consumer fetch reply, and the state gauges
(partition offsets, log bytes, disk) computed only when a snapshot is taken.

Not thread-safe: owned by the broker's reactor.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Mapping

from fabric.metrics import MetricsRegistry, batch_records
from nodes.broker.partition import Partition


class BrokerMeter:
    def __init__(self, registry: MetricsRegistry, partitions: Mapping[tuple[str, int], Partition],
                 engine: str, data_dir: Path, parked: Callable[[], int]) -> None:
        """``partitions`` is the broker's live table (read at snapshot time); ``parked()``
        returns the number of parked requests."""
        self.registry = registry
        self.partitions = partitions
        self.engine = engine
        self.data_dir = data_dir
        self.parked = parked
        registry.add_collector(self._gauges)

    def appended(self, topic: str, records: int, batches: list) -> None:
        """One group-commit append of ``batches`` to a partition of ``topic`` as leader."""
        self.registry.inc("loom_broker_records_in_total", (topic,), records)
        self.registry.inc("loom_broker_bytes_in_total", (topic,), sum(map(len, batches)))

    def fetched(self, topic: str, data: bytes | memoryview) -> None:
        """A consumer fetch reply carries ``data`` (whole batches) of ``topic``."""
        self.registry.inc("loom_broker_records_out_total", (topic,), batch_records(data))
        self.registry.inc("loom_broker_bytes_out_total", (topic,), len(data))

    def _gauges(self) -> Iterable[tuple[str, tuple, float]]:
        leaders = followers = under = 0
        log_bytes = 0
        for (topic, p), part in self.partitions.items():
            log_bytes += part.engine.size_bytes
            if part.is_leader:
                leaders += 1
                under += len(part.isr) < len(part.replicas)
                yield "loom_partition_high_watermark", (topic, p), part.high_watermark
                yield "loom_partition_log_end_offset", (topic, p), part.log_end_offset
            else:
                followers += 1
        yield "loom_broker_partitions", ("leader",), leaders
        yield "loom_broker_partitions", ("follower",), followers
        yield "loom_broker_under_replicated_partitions", (), under
        yield "loom_broker_log_bytes", (self.engine,), log_bytes
        yield "loom_broker_parked_requests", (), self.parked()
        try:
            st = os.statvfs(self.data_dir)
        except OSError:
            return
        total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        yield "loom_broker_disk_free_bytes", (), free
        yield "loom_broker_disk_used_ratio", (), (1 - free / total) if total else 0.0
