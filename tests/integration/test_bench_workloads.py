"""`loom bench produce|consume|e2e` end to end on self-contained clusters (tiny record counts):
the combination runner with its JSON and chart, end-to-end latency with consumer processes, and
a backlog drained by a consumer. Run under the heavy lock (starts node processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import runner


def _cluster_cpu_ok(us_per_record: float | None) -> bool:
    """Measured (> 0), or None for a phase too short for /proc to count one CPU tick of the
    cluster's processes (bench.stats.cpu_between) -- never a wrong 0."""
    return us_per_record is None or us_per_record > 0


def _loom() -> Path:
    loom = Path(sys.executable).parent / "loom"
    if not loom.exists():
        pytest.skip("the loom script is not installed next to this interpreter")
    return loom


def test_engine_list_runs_each_combination_on_a_fresh_cluster_from_any_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([str(_loom()), "bench", "produce", "--records", "2000", "--engine", "segment,memory",
                        "--partitions", "2", "--json", "out.json", "--chart", "out.html"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr + p.stdout
    assert "\r" not in p.stdout  # no progress bar when stdout is not a terminal
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["records_per_s"] > 0 and doc["mb_per_s"] > 0
    # 2,000 records in a closed loop time one in 200: a p50, too few samples for a p99
    assert set(doc["latency_ms"]) == {"p50", "p99", "p999"} and doc["latency_ms"]["p50"] > 0
    assert doc["latency_ms"]["p99"] is None
    # the cluster's CPU comes from /proc in clock ticks (10 ms): a tiny run may count none
    assert doc["cpu_us_per_record"]["client"] > 0
    assert _cluster_cpu_ok(doc["cpu_us_per_record"]["cluster"])
    labels = [c["label"] for c in doc["combinations"]]
    assert labels == ["segment/interval/send", "memory/interval/send"]
    assert doc["combinations"][0]["ratio_to_first"]["records_per_s"] == 1.0
    assert all(r["records"] == 2000 and r["errors"] == 0 for r in doc["runs"])
    assert all(len(r["broker_peak_rss_mb"]) == 3 and min(r["broker_peak_rss_mb"].values()) > 0 for r in doc["runs"])
    assert (tmp_path / "out.html").read_text().count("<svg") == 2
    # what the cluster wrote to storage: three copies of every record on disk with the segment
    # engine, next to nothing with the memory engine (no record reaches a file)
    segment_run, memory_run = doc["runs"]
    import tempfile

    from bench.stats import counts_writes
    if counts_writes(tempfile.gettempdir()):
        assert segment_run["disk_write"]["bytes_per_record"] >= 3 * 100
        assert memory_run["disk_write"]["bytes_per_record"] < 100
    else:  # a tmpfs is never written back: unknown, not 0
        assert segment_run["disk_write"]["bytes_per_record"] is None
    table = p.stdout[p.stdout.index("combination"):].splitlines()
    assert table[1].startswith("segment/interval/send") and table[2].startswith("memory/interval/send")


def test_e2e_with_two_consumer_processes_reads_every_record(tmp_path: Path) -> None:
    out = tmp_path / "e2e.json"
    assert runner.main(["e2e", "--records", "2000", "--consumers", "2", "--rate", "4000", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    run = doc["runs"][0]
    assert run["consumed_records"] == run["records"] == 2000
    assert run["latency_ms"]["samples"] == 2000  # open loop: every record's ack is timed
    assert run["e2e_latency_ms"]["samples"] == 2000 and run["e2e_latency_ms"]["p50"] >= run["latency_ms"]["p50"] * 0.5
    assert run["timeline"] and any(pt["consumed_per_s"] > 0 for pt in run["timeline"])


@pytest.mark.parametrize("api", ["send", "send_many"])  # send_many: send_many and poll_batch
def test_consume_drains_the_backlog_of_two_producers(tmp_path: Path, api: str) -> None:
    out = tmp_path / "consume.json"
    assert runner.main(["consume", "--records", "3000", "--producers", "2", "--api", api, "--json", str(out)]) == 0
    run = json.loads(out.read_text())["runs"][0]
    assert run["produce"]["records"] == 3000
    assert run["records"] == run["expected_records"] == 3000
    assert run["records_per_s"] > 0 and _cluster_cpu_ok(run["cpu_us_per_record"]["cluster"])


def test_a_running_cluster_by_config_or_bootstrap(tmp_path: Path) -> None:
    """-c CONFIG finds the node processes (cluster CPU and broker memory are measured);
    --bootstrap alone cannot, and says so with a null rather than a wrong figure."""
    from bench import cluster as bench_cluster
    from fabric.client import Admin
    from fabric.client.group_admin import GroupAdmin
    from nodes.local_cluster import running_cluster
    (tmp_path / "cluster").mkdir()
    with running_cluster(tmp_path / "cluster") as cluster:
        by_config, by_bootstrap = tmp_path / "c.json", tmp_path / "b.json"
        assert runner.main(["produce", "--records", "2000", "-c", str(cluster.config_path), "--topic", "shared",
                            "--json", str(by_config)]) == 0
        assert runner.main(["produce", "--records", "2000", "--bootstrap", cluster.bootstrap, "--topic", "shared",
                            "--json", str(by_bootstrap)]) == 0
        # a topic the run made is deleted after it (a named one is the user's), unless kept
        kept = tmp_path / "kept.json"
        assert runner.main(["consume", "--records", "2000", "--group", "-c", str(cluster.config_path)]) == 0
        assert runner.main(["produce", "--records", "2000", "-c", str(cluster.config_path), "--keep-topics",
                            "--json", str(kept)]) == 0
        assert bench_cluster.main(["--records", "2000", "--scenarios", "rf3-acksall", "-c", str(cluster.config_path),
                                   "--no-progress"]) == 0
        with Admin(cluster.bootstrap) as admin:
            topics = set(admin.metadata().topics)
            groups = [g["group"] for g in GroupAdmin(admin).list_groups()]
    assert topics - {"__consumer_offsets"} == {"shared", json.loads(kept.read_text())["runs"][0]["topic"]}
    assert not [g for g in groups if g.startswith("bench-group")], groups
    c, b = json.loads(by_config.read_text()), json.loads(by_bootstrap.read_text())
    assert _cluster_cpu_ok(c["cpu_us_per_record"]["cluster"])  # its processes found: their RSS below
    assert set(c["runs"][0]["broker_peak_rss_mb"]) == {"broker-1", "broker-2", "broker-3"}
    assert b["cpu_us_per_record"]["cluster"] is None and b["cpu_us_per_record"]["client"] > 0
    assert c["runs"][0]["records"] == b["runs"][0]["records"] == 2000


def test_a_consumer_group_drains_the_backlog_and_commits(tmp_path: Path) -> None:
    from fabric.client import Admin
    from fabric.client.group_admin import GroupAdmin
    from nodes.local_cluster import running_cluster
    out = tmp_path / "group.json"
    (tmp_path / "cluster").mkdir()
    with running_cluster(tmp_path / "cluster") as cluster:
        assert runner.main(["consume", "--records", "3000", "--group", "--consumers", "2", "--topic", "grouped",
                            "-c", str(cluster.config_path), "--json", str(out)]) == 0
        with Admin(cluster.bootstrap) as admin:
            committed = GroupAdmin(admin).committed("bench-group-grouped")
            ends = admin.list_offsets("grouped")
    run = json.loads(out.read_text())["runs"][0]
    assert run["records"] == run["expected_records"] == 3000
    assert committed == {("grouped", p): end for p, end in ends.items()}  # every record's offset committed


def test_a_long_run_stops_its_producers_before_the_disk_fills(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard on a real self-contained cluster: the file system's free space is made to
    shrink with the cluster's own data (the floor is reached once it holds ~100 MB), so that
    nothing else on the machine can move the point; a one-minute run of 1 KiB records ends
    there, every record it sent acknowledged, and the result says why it ended early."""
    from types import SimpleNamespace

    from bench import workload
    real = workload.shutil.disk_usage

    def data_bytes(path: str) -> int:
        total = 0
        for root, _, files in os.walk(path):
            for name in files:
                try:
                    total += os.stat(os.path.join(root, name)).st_blocks * 512
                except FileNotFoundError:
                    pass
        return total

    def shrinking(path: str) -> SimpleNamespace:
        if "loom-bench-" not in str(path):  # anything else asks the real file system
            return real(path)
        free = workload.DISK_FREE_MIN_BYTES + 100_000_000 - data_bytes(path)
        return SimpleNamespace(total=1 << 40, free=free, used=(1 << 40) - free)
    monkeypatch.setattr(workload.shutil, "disk_usage", shrinking)
    monkeypatch.setattr(workload, "DISK_FREE_MIN_SHARE", 0.0)
    out = tmp_path / "guard.json"
    assert runner.main(["produce", "--duration", "60", "--record-size", "1024", "--api", "send_many",
                        "--partitions", "2", "--json", str(out)]) == 0
    run = json.loads(out.read_text())["runs"][0]
    assert "stopped_early" in run and "GB free" in run["stopped_early"]
    assert run["seconds"] < 45 and run["records"] > 0 and run["errors"] == 0
