"""A partition whose replicas' brokers are all down (offline: no leader to elect). The gateway's
v2 partition-offsets route and its records browser (the dashboard's) ask for that partition's
offsets: they held a worker for the gateway's whole admin timeout (5 s) before answering 503,
as Admin.list_offsets waits up to its timeout for a leader. They now wait for a leader only as
long as an election takes (OFFSETS_LEADER_WAIT_MS), and `loom group describe` shows the
partition's log end as unknown at once. `loom group reset-offsets` on such a partition waited
the Admin's whole timeout (10 s) for a leader before its error: it fails at once."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fabric.client import Admin
from fabric.client.admin import TIMEOUT_MS_DEFAULT
from nodes.gateway.agent import ADMIN_TIMEOUT_MS, OFFSETS_LEADER_WAIT_MS
from tests.gateway_client import GATEWAY_NODES, Http, b64, gateway_overrides
from tests.harness import ROOT, wait_until

pytestmark = pytest.mark.timeout(120)

TOPIC = "lonely"
# well below the 5 s it took, with room for a slow machine above the 1.5 s wait
ANSWER_BOUND_S = (OFFSETS_LEADER_WAIT_MS + ADMIN_TIMEOUT_MS) / 2 / 1000


def test_an_offline_partition_answers_503_soon(cluster_factory) -> None:  # noqa: ANN001
    c = cluster_factory(3, extra_nodes=GATEWAY_NODES, overrides=gateway_overrides())
    http = Http(c.raw["nodes"]["gateway"]["port"])
    with Admin(c.bootstrap) as admin:
        admin.create_topic(TOPIC, 1, 1)
        c.wait_topic_ready(admin, TOPIC)
        http.ok("POST", f"/topics/{TOPIC}/partitions/0", {"records": [{"value": b64(b"v")}]},
                "application/vnd.kafka.binary.v2+json", acks="all")
        cli = [sys.executable, "-m", "nodes.cli"]
        subprocess.run([*cli, "consume", TOPIC, "--group", "g", "--from-beginning", "--max-messages", "1",
                        "--bootstrap", c.bootstrap], cwd=ROOT, capture_output=True, timeout=60, check=True)
        assert http.ok("GET", f"/topics/{TOPIC}/partitions/0/offsets") == {"beginning_offset": 0, "end_offset": 1}

        c.kill(f"broker-{admin.metadata().topics[TOPIC].partitions[0].leader}")  # its only replica
        wait_until(lambda: admin.metadata().topics[TOPIC].partitions[0].leader < 0, 30,
                   what="the partition to be offline in the metadata")

        for path in (f"/topics/{TOPIC}/partitions/0/offsets", f"/topics/{TOPIC}/partitions/0/records"):
            t0 = time.monotonic()
            r = http("GET", path)
            took_s = time.monotonic() - t0
            assert r.status_code == 503 and "leader_not_available" in r.json()["message"], (path, r.status_code, r.text)
            assert took_s < ANSWER_BOUND_S, f"{path}: 503 after {took_s:.1f} s (bound {ANSWER_BOUND_S} s)"
        partitions = http.ok("GET", f"/v3/clusters/test/topics/{TOPIC}/partitions")["data"]
        assert [p["leader"] for p in partitions] == [None], partitions

        # the CLI's view of offsets: the committed offset, the log end unknown, at once
        t0 = time.monotonic()
        described = subprocess.run([*cli, "group", "describe", "g", "--bootstrap", c.bootstrap], cwd=ROOT,
                                   capture_output=True, timeout=60)
        took_s = time.monotonic() - t0
        out = described.stdout.decode()
        assert described.returncode == 0, described.stderr.decode()
        row = next(line.split() for line in out.splitlines() if line.startswith("g "))
        assert row[1:5] == [TOPIC, "0", "1", "-"], out
        assert took_s < ADMIN_TIMEOUT_MS / 1000, f"group describe took {took_s:.1f} s"

        # a reset's plan needs every partition's offsets: the offline one fails it, soon
        t0 = time.monotonic()
        reset = subprocess.run([*cli, "group", "reset-offsets", "g", "--topic", TOPIC, "--to-earliest",
                                "--bootstrap", c.bootstrap], cwd=ROOT, capture_output=True, timeout=60)
        took_s = time.monotonic() - t0
        err = reset.stderr.decode()
        assert reset.returncode == 1 and "leader_not_available" in err and f"{TOPIC}-0 is offline" in err, (
            reset.returncode, err, reset.stdout.decode())
        assert took_s < TIMEOUT_MS_DEFAULT / 2 / 1000, f"reset-offsets failed after {took_s:.1f} s"
