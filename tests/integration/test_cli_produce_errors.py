"""``loom produce`` when records fail, against a real two-broker cluster with broker-2 stopped:

- acks=all below min.insync.replicas is retried until ``--delivery-timeout-ms`` and then
  reported as ``not_enough_replicas`` (the real error), not ``request_timed_out``;
- ``--print-offsets`` prints the line of every acknowledged record, in input order, then the
  first error, whether the failing record comes first (an offline partition) or its ``send``
  fails at once (a record over the size limit).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from fabric.client import Admin
from fabric.records import partition_for_key
from tests.harness import ROOT, Cluster, wait_until

pytestmark = pytest.mark.timeout(120)

COMMAND_TIMEOUT_S = 40
DELIVERY_TIMEOUT_MS = 2000

CLUSTER_OPTIONS = {"brokers": 2}  # one cluster for the module (tests/conftest.py)


@pytest.fixture(scope="module", autouse=True)
def _prepared(module_cluster: Cluster) -> None:
    c = module_cluster
    with Admin(c.bootstrap) as admin:
        admin.create_topic("strict", partitions=1, replication_factor=2, configs={"min.insync.replicas": "2"})
        admin.create_topic("halves", partitions=2, replication_factor=1)
        c.wait_topic_ready(admin, "strict")
        c.wait_topic_ready(admin, "halves")
        c.stop("broker-2")

        def degraded() -> bool:
            md = admin.metadata()
            strict = md.topics["strict"].partitions[0]
            return strict.leader == 1 and strict.isr == (1,) and any(
                p.leader < 0 for p in md.topics["halves"].partitions)
        wait_until(degraded, 30, what="broker-2 out of every ISR and its partition offline")


def _partitions(cluster: Cluster) -> tuple[int, int]:
    """(live, offline) partition of 'halves'."""
    with Admin(cluster.bootstrap) as admin:
        parts = admin.metadata().topics["halves"].partitions
    offline = next(p.partition for p in parts if p.leader < 0)
    return 1 - offline, offline


def _key_for(partition: int) -> str:
    return next(f"k{i}" for i in range(1000) if partition_for_key(f"k{i}".encode(), 2) == partition)


def loom(cluster: Cluster, *args: str, stdin: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nodes.cli", *args, "--bootstrap", cluster.bootstrap],
                          input=stdin, capture_output=True, cwd=str(ROOT), timeout=COMMAND_TIMEOUT_S)


def test_acks_all_below_min_isr_reports_not_enough_replicas_at_the_delivery_timeout(cluster: Cluster) -> None:
    started_s = time.monotonic()
    p = loom(cluster, "produce", "strict", "--acks", "all", "--delivery-timeout-ms", str(DELIVERY_TIMEOUT_MS), stdin=b"one\n")
    elapsed_s = time.monotonic() - started_s
    assert p.returncode == 1, p.stderr.decode()
    assert "not_enough_replicas" in p.stderr.decode(), p.stderr.decode()
    assert elapsed_s < DELIVERY_TIMEOUT_MS / 1000 + 10, f"took {elapsed_s:.1f} s"


def test_print_offsets_prints_acknowledged_records_after_an_earlier_failing_one(cluster: Cluster) -> None:
    live, offline = _partitions(cluster)
    lines = [f"{_key_for(offline)}:lost"] + [f"{_key_for(live)}:v{i}" for i in range(3)]
    p = loom(cluster, "produce", "halves", "--key-separator", ":", "--print-offsets", "--acks", "1",
             "--delivery-timeout-ms", str(DELIVERY_TIMEOUT_MS), stdin="\n".join(lines).encode() + b"\n")
    assert p.returncode == 1, p.stderr.decode()
    printed = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert [(r["partition"], r["key"]) for r in printed] == [(live, _key_for(live))] * 3
    offsets = [r["offset"] for r in printed]
    assert offsets == sorted(offsets) and len(set(offsets)) == 3
    assert "loom: error:" in p.stderr.decode()


def test_print_offsets_prints_acknowledged_records_before_a_record_too_large(cluster: Cluster) -> None:
    live, _ = _partitions(cluster)
    stdin = b"a\nb\n" + b"x" * (2 * 1024 * 1024) + b"\nnever-read\n"
    p = loom(cluster, "produce", "halves", "--partition", str(live), "--print-offsets", stdin=stdin)
    assert p.returncode == 1, p.stderr.decode()
    printed = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert len(printed) == 2 and all(r["partition"] == live for r in printed)
    assert "record_too_large" in p.stderr.decode()
