"""Cluster-wide facts the monitor derives: partition counts from the coordinator's metadata,
ISR shrinks/expands and leader elections from successive metadata versions, consumer lag
from committed offsets and the leaders' high watermarks.

Metadata diffs count what the monitor sees: the coordinator publishes every change (and
republishes each second), so a change is missed only when two land between the monitor's
receipts or while the monitor is down (the counters restart at zero with the monitor).

Not thread-safe: owned by the monitor's reactor.
"""

from __future__ import annotations

from collections import Counter

from fabric import protocol as P
from fabric.metadata import ClusterMetadata
from fabric.metrics import Sample


class ClusterFacts:
    def __init__(self) -> None:
        self.metadata: ClusterMetadata | None = None
        self.isr_shrinks: Counter[str] = Counter()
        self.isr_expands: Counter[str] = Counter()
        self.elections: Counter[str] = Counter()
        self.lag: dict[tuple[str, str, int], int] = {}   # (group, topic, partition) -> records
        self.lag_known = False

    def apply_metadata(self, md: ClusterMetadata) -> None:
        old = self.metadata
        if old is not None and md.state_id == old.state_id and md.version <= old.version:
            return  # versions only grow within one coordinator state; another state's (a
            # restarted coordinator, even one that lost its state) is what the cluster is now
        if old is not None:  # the first one is the baseline
            for p in md.partitions():
                q = old.partition(p.topic, p.partition)
                if q is None:
                    continue
                if p.leader_epoch > q.leader_epoch:
                    self.elections[p.topic] += p.leader_epoch - q.leader_epoch
                if set(q.isr) - set(p.isr):
                    self.isr_shrinks[p.topic] += 1
                if set(p.isr) - set(q.isr):
                    self.isr_expands[p.topic] += 1
            if old.topics.keys() - md.topics.keys():
                self._forget_topics_gone(md)
        self.metadata = md  # its version recorded only once it is applied

    def _forget_topics_gone(self, md: ClusterMetadata) -> None:
        """A deleted topic's counters go with it (as its broker metrics do): kept, every topic
        that ever had an election or an ISR change stayed exposed for good, in tables with no
        bound. One re-created under the name counts from 0."""
        for counter in (self.isr_shrinks, self.isr_expands, self.elections):
            for topic in [t for t in counter if t not in md.topics]:
                del counter[topic]

    def partition_counts(self) -> dict[str, int]:
        md = self.metadata
        if md is None:
            return {}
        parts = list(md.partitions())
        internal = [p for p in parts if p.topic.startswith(P.INTERNAL_TOPIC_PREFIX)]
        return {"topics": sum(1 for t in md.topics if not t.startswith(P.INTERNAL_TOPIC_PREFIX)), "partitions": len(parts),
                "internal_partitions": len(internal),
                "under_replicated": sum(p.under_replicated for p in parts), "offline": sum(p.offline for p in parts),
                # of the counts above (which the alert rules read), the internal topics' share
                "internal_under_replicated": sum(p.under_replicated for p in internal),
                "internal_offline": sum(p.offline for p in internal),
                "brokers": len(md.brokers), "brokers_alive": sum(1 for b in md.brokers.values() if b.alive),
                "metadata_version": md.version}

    def apply_groups(self, groups: list, high_watermarks: dict[tuple[str, int], float]) -> None:
        """``groups``: DESCRIBE_GROUPS entries ({group, offsets: [[t, p, o]]})."""
        lag: dict[tuple[str, str, int], int] = {}
        for g in groups[:P.MONITORED_GROUPS_MAX]:
            if not isinstance(g, dict) or not isinstance(g.get("group"), str):
                continue
            for entry in g.get("offsets") or ():
                if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], int)):
                    continue
                hw = high_watermarks.get((entry[0], entry[1]))
                if hw is not None and entry[2] >= 0:
                    lag[(g["group"], entry[0], entry[1])] = max(0, int(hw) - entry[2])
        self.lag = lag
        self.lag_known = True

    def group_lag(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (g, _, _), n in self.lag.items():
            out[g] += n
        return dict(out)

    def samples(self) -> list[Sample]:
        out = []
        counts = self.partition_counts()
        if counts:
            out += [Sample("loom_cluster_brokers_alive", (), counts["brokers_alive"]),
                    Sample("loom_cluster_partitions", (), counts["partitions"]),
                    Sample("loom_cluster_under_replicated_partitions", (), counts["under_replicated"]),
                    Sample("loom_cluster_offline_partitions", (), counts["offline"])]
        for name, counter in (("loom_isr_shrinks_total", self.isr_shrinks), ("loom_isr_expands_total", self.isr_expands),
                              ("loom_leader_elections_total", self.elections)):
            out += [Sample(name, (t,), n) for t, n in sorted(counter.items())]
        out += [Sample("loom_consumer_lag_records", (g, t, str(p)), n) for (g, t, p), n in sorted(self.lag.items())]
        out += [Sample("loom_consumer_group_lag_records", (g,), n) for g, n in sorted(self.group_lag().items())]
        return out
