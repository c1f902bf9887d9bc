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


def _broker_1_process(cluster: Cluster) -> str:
    header, _ = cluster.call("coordinator", P.METADATA, {})
    return ClusterMetadata.from_wire(header["metadata"]).brokers[1].incarnation


def test_a_second_broker_with_the_same_id_is_refused_until_the_first_is_dead(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cluster = Cluster(make_config(tmp_path / "a", 3))
    raw = yaml.safe_load(cluster.config_path.read_text())
    raw["cluster"]["data_dir"] = str(tmp_path / "b" / "data")
    raw["nodes"]["broker-1"]["port"], raw["nodes"]["broker-1"]["pub_port"] = free_ports(2)
    (tmp_path / "b" / "cluster.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    twin = Cluster(tmp_path / "b" / "cluster.yaml")
    try:
        cluster.start()
        wait_until(lambda: _broker_1_process(cluster), timeout_s=20, what="broker 1 registered")
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
