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


def test_loom_status_counts_the_internal_topics_partitions_apart_in_every_column(monkeypatch) -> None:  # noqa: ANN001
    """`loom status` showed "partitions: 1, under-replicated: 2" when an internal partition
    was under-replicated too: the partitions were counted without the internal topics, the
    under-replicated with them. The totals stay (the alert rules read them)."""
    import io

    from rich.console import Console

    from fabric.config import load_config
    from nodes import cli_monitor
    parts = {"t": TopicInfo("t", (PartitionInfo("t", 0, 1, 0, (1, 2), (1,)),)),
             "__consumer_offsets": TopicInfo("__consumer_offsets", (PartitionInfo("__consumer_offsets", 0, 1, 0, (1, 2), (1,)),))}
    facts = ClusterFacts()
    facts.apply_metadata(ClusterMetadata(1, "loom", {1: BrokerInfo(1, "h", 1, 2)}, parts))
    counts = facts.partition_counts()
    assert (counts["under_replicated"], counts["internal_under_replicated"], counts["internal_partitions"]) == (2, 1, 1)
    status = {"nodes": [], "cluster": {"name": "loom", "state": "degraded", "coordinator_up": True, "brokers_up": 1, **counts},
              "rates": {"records_in_per_s": 0, "records_out_per_s": 0}, "alerts_firing": 0}

    class Monitor:
        def status(self) -> dict:
            return status

        def close(self) -> None:
            pass
    buf = io.StringIO()
    monkeypatch.setattr(cli_monitor, "_monitor_client", lambda cfg: Monitor())
    cli_monitor.print_monitor_status(load_config(None), Console(file=buf, width=200))
    assert "topics: 1, partitions: 1, under-replicated: 1, offline: 0 (1 internal partitions besides: 1 under-replicated)" \
        in buf.getvalue()
