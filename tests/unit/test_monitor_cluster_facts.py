"""The monitor's cluster facts (nodes/monitor/cluster.py): ISR changes, elections and consumer
lag counted from successive metadata."""

from __future__ import annotations

from fabric.metadata import BrokerInfo, ClusterMetadata, PartitionInfo, TopicInfo
from nodes.monitor.cluster import ClusterFacts


def test_cluster_facts_count_isr_changes_elections_and_lag() -> None:
    def md(version: int, leader: int, epoch: int, isr: tuple[int, ...]) -> ClusterMetadata:
        part = PartitionInfo("t", 0, leader, epoch, (1, 2, 3), isr)
        return ClusterMetadata(version, "c", {1: BrokerInfo(1, "h", 1, 2)}, {"t": TopicInfo("t", (part,))})
    facts = ClusterFacts()
    facts.apply_metadata(md(1, 1, 0, (1, 2, 3)))
    facts.apply_metadata(md(2, 2, 1, (2, 3)))      # broker 1 died: shrink and election
    facts.apply_metadata(md(2, 3, 5, (3,)))        # not newer: ignored
    facts.apply_metadata(md(3, 2, 1, (1, 2, 3)))   # it is back in sync
    assert (facts.isr_shrinks["t"], facts.isr_expands["t"], facts.elections["t"]) == (1, 1, 1)
    assert facts.partition_counts()["under_replicated"] == 0
    facts.apply_groups([{"group": "g", "offsets": [["t", 0, 40], ["t", 9, 1]]}, "junk"], {("t", 0): 100.0})
    assert facts.lag == {("g", "t", 0): 60} and facts.group_lag() == {"g": 60}
