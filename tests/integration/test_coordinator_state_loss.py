"""A coordinator that starts without its state (a replaced disk, a wrong data_dir) must not make
brokers delete their data. Brokers carry the cluster id they joined; the empty coordinator has
a new one, so they refuse its metadata (one log line, STATS ``metadata_refused``) and keep
their partition directories. Restoring the coordinator's state brings the cluster back.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fabric.client import Admin, Producer
from tests.harness import ROOT, Cluster, wait_until

pytestmark = pytest.mark.timeout(120)

TOPIC = "keep"
RECORDS = 60


def _dirs(cluster: Cluster, broker: str) -> set[str]:
    d = Path(cluster.raw["cluster"]["data_dir"]) / broker
    return {p.name for p in d.iterdir() if p.is_dir() and p.name.startswith(f"{TOPIC}-")}


def _answered(cluster: Cluster, broker: str) -> bool:
    """The broker has acted on (accepted or refused) metadata of the running coordinator."""
    s = cluster.stats(broker)
    return bool(s.get("metadata_refused")) or s["metadata_version"] >= 0


def test_brokers_keep_partitions_across_a_coordinator_restart_from_an_empty_data_dir(cluster_factory) -> None:
    c = cluster_factory(3)
    admin = Admin(c.bootstrap)
    try:
        admin.create_topic(TOPIC, 3, 3)
        c.wait_topic_ready(admin, TOPIC)
        with Producer(c.bootstrap, acks="all", linger_ms=2) as p:
            for i in range(RECORDS):
                p.send(TOPIC, b"r%03d" % i, key=b"k%d" % (i % 7))
            p.flush(30)
        before = {b: _dirs(c, b) for b in c.broker_names()}
        assert all(len(d) == 3 for d in before.values()), before

        state_dir = Path(c.raw["cluster"]["data_dir"]) / "coordinator"
        c.stop("coordinator")
        kept = state_dir.with_name("coordinator.kept")
        state_dir.rename(kept)  # the coordinator starts with an empty data dir
        c.start_node("coordinator")
        # a restarted broker registers with the empty coordinator; the others hear its pushes
        c.stop("broker-1")
        c.start_node("broker-1")
        wait_until(lambda: _answered(c, "broker-1"), 15, what="broker-1 to act on the new coordinator's metadata")
        for b in c.broker_names():
            assert _dirs(c, b) == before[b], f"{b} lost partition directories"
        for b in c.broker_names():  # the running ones refuse its pushes
            wait_until(lambda: "cluster" in (c.stats(b).get("metadata_refused") or ""), 15,
                       what=f"{b} to refuse the new coordinator's metadata")
            assert _dirs(c, b) == before[b], f"{b} lost partition directories"
        assert c.stats("broker-2")["partitions"], "a running broker keeps serving what it has"
        status = subprocess.run([sys.executable, "-m", "nodes.cli", "status", "-c", str(c.config_path)],
                                capture_output=True, text=True, cwd=str(ROOT), timeout=60).stdout
        assert re.search(r"^broker-2: refusing metadata from a coordinator of cluster", status, re.M), status

        # recovery: put the coordinator's state back; the brokers take its metadata again
        c.stop("coordinator")
        shutil.rmtree(state_dir)
        kept.rename(state_dir)
        c.start_node("coordinator")
        c.wait_topic_ready(admin, TOPIC, timeout_s=30)
        wait_until(lambda: sum(admin.list_offsets(TOPIC).values()) == RECORDS, 20,
                   what="every acknowledged record to be served again")
        for b in c.broker_names():
            assert _dirs(c, b) == before[b]
    finally:
        admin.close()
