"""`loom bench cluster` and `loom bench failover` with the common flags, end to end on
self-contained clusters (a couple of seconds of tiny records each): the workload the flags
shape, the common --json keys beside each one's older keys, and the --chart page. Run under
the heavy lock (starts node processes)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import cluster, failover


def test_cluster_runs_one_scenario_shaped_by_the_common_flags(tmp_path: Path) -> None:
    out, page = tmp_path / "cluster.json", tmp_path / "cluster.html"
    assert cluster.main(["--duration", "2", "--record-size", "64", "--partitions", "2", "--replication-factor", "2",
                         "--acks", "1", "--producers", "2", "--consumers", "2", "--batch-size", "200",
                         "--linger-ms", "1", "--compression", "lz4", "--rate", "5000", "--runs", "1",
                         "--json", str(out), "--chart", str(page)]) == 0
    doc = json.loads(out.read_text())
    assert 3000 < doc["records_per_s"] <= 5500 and doc["mb_per_s"] > 0  # offered 5,000/s for 2 s
    assert set(doc["latency_ms"]) == {"p50", "p99", "p999"} and doc["latency_ms"]["p99"] > 0
    assert doc["cpu_us_per_record"]["client"] > 0 and doc["cpu_us_per_record"]["cluster"] >= 0
    assert [c["label"] for c in doc["combinations"]] == ["rf2-acks1", "baseline"]
    [run] = [r for r in doc["runs"] if r["combination"].get("scenario") == "rf2-acks1"]
    assert run["consumed_records"] == run["records"] > 0 and run["errors"] == 0
    assert len(run["broker_peak_rss_mb"]) == 3
    assert {"produce_records_per_s", "consume_records_per_s", "produce_ratio", "consume_ratio"} <= set(
        doc["results"]["rf2-acks1"])
    assert doc["meta"]["value_bytes"] == 64
    assert page.read_text().count("<svg") == 2


def test_failover_with_the_common_flags(tmp_path: Path) -> None:
    out, page = tmp_path / "failover.json", tmp_path / "failover.html"
    assert failover.main(["--runs", "1", "--duration", "2", "--record-size", "32", "--partitions", "2",
                          "--topic", "ft", "--producers", "2", "--consumers", "1", "--rate", "1000",
                          "--batch-size", "100", "--linger-ms", "1", "--compression", "zstd",
                          "--json", str(out), "--chart", str(page)]) == 0
    doc = json.loads(out.read_text())
    [run] = doc["runs"]
    assert run["partition"] == 0 and run["first_post_kill_ack_ms"] > 0 and run["new_leader"]
    assert run["first_post_kill_read_ms"] >= run["first_post_kill_ack_ms"] * 0.5  # a reader saw it too
    assert run["seconds"] >= 2.0 and run["consumed_records"] > 0
    lat = doc["latency_ms"]  # ~2,000 acknowledged records: a p99, too few samples for a p99.9
    assert doc["records_per_s"] > 0 and lat["p50"] > 0 and lat["p999"] is None
    assert lat["p99"] is None or lat["p99"] >= lat["p50"]
    assert doc["cpu_us_per_record"]["client"] > 0 and doc["cpu_us_per_record"]["cluster"] > 0
    assert "target_met" in doc and doc["medians"]["first_post_kill_ack_ms"] == run["first_post_kill_ack_ms"]
    assert len(run["broker_peak_rss_mb"]) == 3
    assert "SIGKILL" in page.read_text()
