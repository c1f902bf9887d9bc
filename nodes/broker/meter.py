"""What a broker records into its metrics registry (fabric/metrics.py): records and bytes in
per group commit, records and bytes out per consumer fetch reply, and the state gauges
(partition offsets, log bytes, disk) computed only when a snapshot is taken.

The monitor takes a snapshot every second, and with 1,000 partitions most of it is the led
partitions' high watermark and log end offset, which do not move on an idle broker: each
partition's two encoded samples are kept with the offsets they were made of and made again
only when one of those offsets differs from the partition's now (a compare of two ints per
partition per snapshot, nothing served that the partition does not hold now).

Not thread-safe: owned by the broker's reactor.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping

from fabric.metrics import MetricsRegistry, batch_records, encode_gauge
from nodes.broker.partition import Partition


# the counters labelled by topic alone: forgotten with the topic's last partition here
TOPIC_COUNTERS = ("loom_broker_records_in_total", "loom_broker_bytes_in_total", "loom_broker_records_out_total",
                  "loom_broker_bytes_out_total")


class BrokerMeter:
    def __init__(self, registry: MetricsRegistry, partitions: Mapping[tuple[str, int], Partition],
                 engine: str, data_dir: Path, parked: Callable[[], int],
                 refusing: Callable[[], bool] = lambda: False) -> None:
        """``partitions`` is the broker's live table (read at snapshot time); ``parked()``
        returns the number of parked requests; ``refusing()`` whether the broker refuses the
        coordinator's metadata or is refused by it (``MetadataGuard.last_refusal``)."""
        self.registry = registry
        self.partitions = partitions
        self.engine = engine
        self.data_dir = data_dir
        self.parked = parked
        self.refusing = refusing
        # (topic, partition) -> (high watermark, log end offset, their two encoded samples)
        self._offset_samples: dict[tuple[str, int], tuple[int, int, list, list]] = {}
        registry.add_encoded_collector(self._gauges)

    def appended(self, topic: str, records: int, batches: list) -> None:
        """One group-commit append of ``batches`` to a partition of ``topic`` as leader."""
        self.registry.inc("loom_broker_records_in_total", (topic,), records)
        self.registry.inc("loom_broker_bytes_in_total", (topic,), sum(map(len, batches)))

    def fetched(self, topic: str, data: bytes | memoryview) -> None:
        """A consumer fetch reply carries ``data`` (whole batches) of ``topic``."""
        self.registry.inc("loom_broker_records_out_total", (topic,), batch_records(data))
        self.registry.inc("loom_broker_bytes_out_total", (topic,), len(data))

    def forget_topic(self, topic: str) -> None:
        """The broker holds no partition of ``topic`` any more (deleted, or another topic of its
        name): its counters go, as Kafka removes a deleted topic's broker metrics. Kept, every
        topic ever written here stayed in each STATS reply, and past SERIES_PER_METRIC_MAX
        names a new topic's counters were dropped. One re-created under the name counts from 0."""
        for name in TOPIC_COUNTERS:
            self.registry.forget(name, (topic,))

    def _gauges(self) -> list[list]:
        out: list[list] = []
        leaders = followers = under = 0
        log_bytes = 0
        cached = self._offset_samples
        for key, part in self.partitions.items():
            log_bytes += part.engine.size_bytes
            if part.is_leader:
                leaders += 1
                under += len(part.isr) < len(part.replicas)
                hw, leo = part.high_watermark, part.log_end_offset
                c = cached.get(key)
                if c is None or c[0] != hw or c[1] != leo:
                    c = cached[key] = (hw, leo, encode_gauge("loom_partition_high_watermark", key, hw),
                                       encode_gauge("loom_partition_log_end_offset", key, leo))
                out.append(c[2])
                out.append(c[3])
            else:
                followers += 1
        if len(cached) > leaders:  # partitions no longer led here (or gone): bounded by those led
            self._offset_samples = {k: c for k, c in cached.items() if k in self.partitions
                                    and self.partitions[k].is_leader}
        gauges = [("loom_broker_partitions", ("leader",), leaders), ("loom_broker_partitions", ("follower",), followers),
                  ("loom_broker_under_replicated_partitions", (), under),
                  ("loom_broker_log_bytes", (self.engine,), log_bytes),
                  ("loom_broker_parked_requests", (), self.parked()),
                  ("loom_broker_metadata_refused", (), 1 if self.refusing() else 0)]
        try:
            st = os.statvfs(self.data_dir)
        except OSError:
            st = None
        if st is not None:
            total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
            gauges += [("loom_broker_disk_free_bytes", (), free),
                       ("loom_broker_disk_used_ratio", (), (1 - free / total) if total else 0.0)]
        out += [encode_gauge(*g) for g in gauges]
        return out
