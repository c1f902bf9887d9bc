"""`loom bench rtt --loom`: one-record produces through a real self-contained cluster, each
acknowledged (acks=all) before the next, with the CPU every process spent per request; the
cluster's processes are gone afterwards. Run under the heavy lock (starts node processes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench import rtt
from nodes import local_cluster
from nodes.local_cluster import Cluster


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_loom_round_trips_are_acknowledged_produces_with_each_process_cpu(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    out = tmp_path / "rtt.json"
    started: list[int] = []

    class Recording(Cluster):
        def start(self, names: list[str] | None = None, wait: bool = True) -> None:
            super().start(names, wait)
            started.extend(p.pid for p in self.procs.values())

    monkeypatch.setattr(local_cluster, "Cluster", Recording)  # running_cluster builds one
    assert rtt.main(["--loom", "--count", "300", "--pause-ms", "0", "--runs", "1", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    run = doc["runs"][0]
    assert run["samples"] == 300 and doc["loom"] is True
    assert 0 < run["p50"] < rtt.RECV_TIMEOUT_MS
    assert run["p99"] is None and run["p999"] is None, "300 round trips make no p99 (bench/stats.py)"
    cpu = doc["cpu_us_per_request"]
    assert {"leader", "coordinator", "client", "cluster"} <= set(cpu)
    assert len([n for n in cpu if n.startswith("broker-")]) == 2  # the two followers
    assert cpu["leader"] > 0 and cpu["client"] > 0  # every request went through both
    assert len(started) == 4 and not [pid for pid in started if _alive(pid)]  # every node stopped


def test_hops_line_up_every_request_across_the_client_the_leader_and_the_followers(tmp_path: Path) -> None:
    out = tmp_path / "rtt.json"
    assert rtt.main(["--loom", "--hops", "--count", "200", "--pause-ms", "0.5", "--runs", "1", "--json", str(out)]) == 0
    hops = json.loads(out.read_text())["runs"][0]["hops"]
    assert hops["requests"] == 200 and hops["lined_up"] >= 180
    steps = {(s["process"], s["point"]) for s in hops["steps"]}
    # every process a produce passes marked its points: the request went there and back
    assert {("client", "sender.request"), ("leader", "produce.appended"), ("follower", "replica.ack"),
            ("leader", "ack.received"), ("leader", "produce.answer"), ("client", "app.acked")} <= steps
    assert all(0 <= s["p50"] <= s["p99"] for s in hops["steps"])
    assert hops["work_us"]["p50"] > 0 and hops["hop_us"]["p50"] > 0
    assert "LOOM_HOPTRACE" not in os.environ  # the bench leaves no tracing behind
