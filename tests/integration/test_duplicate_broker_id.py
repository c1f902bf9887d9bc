"""Two live processes with one broker id, real processes: a second config gives broker 1's id
to a broker with its own data directory and ports (the data-directory lock cannot see it). The
coordinator refuses it while broker 1's process lives -- the cluster's metadata keeps naming that
process, no partition of broker 1 is fenced -- and takes it once that process is dead."""

from __future__ import annotations

from pathlib import Path

import yaml

from fabric import protocol as P
from fabric.metadata import ClusterMetadata
from tests.harness import Cluster, free_ports, make_config, wait_until

# the test config's session: at 1.5 s, seen once in CI, the twin of the refusal test was taken instead of
# refused (broker 1's heartbeats held past the session while the twin process started on a loaded
# machine: broker 1 taken for dead -- the suspected cause; the run's logs were not kept)
SESSION_MS = 3000


def _broker_1_process(cluster: Cluster) -> str:
    header, _ = cluster.call("coordinator", P.METADATA, {})
    return ClusterMetadata.from_wire(header["metadata"]).brokers[1].incarnation


def _cluster_and_twin(tmp_path: Path) -> tuple[Cluster, Cluster]:
    """A three-broker cluster (not started), and a copy of its config that gives broker 1 a
    data directory and ports of its own: the twin."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cluster = Cluster(make_config(tmp_path / "a", 3, overrides={"liveness": {"session_timeout_ms": SESSION_MS}}))
    raw = yaml.safe_load(cluster.config_path.read_text())
    raw["cluster"]["data_dir"] = str(tmp_path / "b" / "data")
    raw["nodes"]["broker-1"]["port"], raw["nodes"]["broker-1"]["pub_port"] = free_ports(2)
    (tmp_path / "b" / "cluster.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return cluster, Cluster(tmp_path / "b" / "cluster.yaml")


def test_a_second_broker_with_the_same_id_is_refused_until_the_first_is_dead(tmp_path: Path) -> None:
    cluster, twin = _cluster_and_twin(tmp_path)
    try:
        cluster.start()
        # every broker's first registration is a commit: the version is taken after all three
        wait_until(lambda: all(b.incarnation for b in _metadata(cluster).brokers.values()), timeout_s=20,
                   what="every broker registered")
        first = _broker_1_process(cluster)
        version = cluster.stats("coordinator")["metadata_version"]

        twin.start_node("broker-1")
        wait_until(lambda: "another live process is broker 1" in twin.ping("broker-1").get("metadata_refused", ""),
                   timeout_s=20, what="the second broker 1 refused")
        # it asks again (every 2 s), and is refused again: nothing of broker 1 moves meanwhile
        wait_until(lambda: cluster.stats("coordinator")["counters"].get("duplicate_broker_registrations", 0) >= 2,
                   timeout_s=20, what="a second refusal")
        assert _broker_1_process(cluster) == first, "the second process was taken for a restart of broker 1"
        assert cluster.stats("coordinator")["metadata_version"] == version, "broker 1's partitions were fenced"
        assert cluster.ping("broker-1")["metadata_refused"] == ""
        assert twin.procs["broker-1"].poll() is None

        cluster.kill("broker-1")  # the first one dead, the second one is broker 1 now
        wait_until(lambda: _broker_1_process(cluster) not in ("", first), timeout_s=30,
                   what="the second process taken once the first is dead")
        wait_until(lambda: twin.ping("broker-1")["metadata_refused"] == "", timeout_s=20, what="the refusal cleared")
    finally:
        twin.stop_all()
        cluster.stop_all()


def test_a_twin_that_was_broker_1_stands_aside_once_refused(tmp_path: Path) -> None:
    """Broker 1 crashed, its twin (another data directory and ports, one config copied) came up
    meanwhile and was taken; broker 1 came back and, once the twin's session ran out (the
    coordinator never hears its heartbeats: they are on its own port), was taken in turn. The
    twin, shown that another process is broker 1, registers again and is refused -- and then
    follows and leads nothing: before, it went on fetching as broker 1 under a process no
    metadata named, its own log counted by the leaders as broker 1's."""
    cluster, twin = _cluster_and_twin(tmp_path)
    try:
        cluster.start()
        cluster.create_topic("t", partitions=3, replication_factor=3)
        first = _broker_1_process(cluster)
        cluster.kill("broker-1")
        twin.start_node("broker-1")
        wait_until(lambda: _broker_1_process(cluster) not in ("", first), timeout_s=30, what="the twin taken as broker 1")
        twin_process = _broker_1_process(cluster)
        wait_until(lambda: twin.stats("broker-1")["fetchers"], timeout_s=20, what="the twin following as broker 1")
        cluster.start_node("broker-1")
        wait_until(lambda: _broker_1_process(cluster) not in ("", first, twin_process), timeout_s=30,
                   what="broker 1 taken back once the twin's session ran out")
        wait_until(lambda: "another live process is broker 1" in twin.ping("broker-1").get("metadata_refused", ""),
                   timeout_s=20, what="the twin refused")
        stats = twin.stats("broker-1")
        assert stats["fetchers"] == [], "the refused twin still fetches as broker 1"
        assert not [p for p in stats["partitions"] if p["role"] == "leader"], "the refused twin still leads"
        # broker 1's real process is back in every ISR, and stays its process
        back = _broker_1_process(cluster)
        wait_until(lambda: all(len(p.isr) == 3 for p in _metadata(cluster).topics["t"].partitions), timeout_s=30,
                   what="broker 1 back in every ISR")
        wait_until(lambda: cluster.stats("coordinator")["counters"].get("duplicate_broker_registrations", 0) >= 2,
                   timeout_s=20, what="the twin refused again")
        assert _broker_1_process(cluster) == back
        assert twin.stats("broker-1")["fetchers"] == []
    finally:
        twin.stop_all()
        cluster.stop_all()


def _metadata(cluster: Cluster) -> ClusterMetadata:
    header, _ = cluster.call("coordinator", P.METADATA, {})
    return ClusterMetadata.from_wire(header["metadata"])
