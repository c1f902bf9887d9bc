"""`loom bench cluster`: the common flags shape each scenario's workload (a produce-then-drain
run of `loom bench consume` on the one cluster of the invocation), -c/--bootstrap name that
cluster, the baseline moves the same records, and the report is the common one (table, --json
with the common keys and the older `results`, --chart) with ratios to the baseline."""

from __future__ import annotations

import io
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from bench import cluster, report, runner
from bench.cluster import Phase
from bench.workload import Run, Target
from fabric.client.producer import RECORD_OVERHEAD_BYTES


def _timeline(rate: int) -> list[dict]:
    return [{"t_s": 0.5 * i, "produced_per_s": rate, "consumed_per_s": rate * 2, "p50_ms": 1.0, "p99_ms": 2.0,
             "e2e_p99_ms": None} for i in range(1, 4)]


def _consume_run(records: int, rate: int) -> dict:
    """What runner.run_once returns for a consume run (the shape the cluster bench reads)."""
    produce = {"records": records, "errors": 0, "seconds": records / rate, "records_per_s": rate,
               "mb_per_s": rate / 1e4, "offered_per_s": None,
               "latency_ms": {"p50": 1.0, "p99": 2.0, "p999": 3.0, "samples": 5},
               "cpu_us_per_record": {"client": 2.0, "cluster": 3.0}, "cpu_s": {"client": 0.002, "cluster": 0.003}}
    return {"combination": {"engine": "segment", "fsync": "interval", "api": "send"}, "run": 1, "topic": "t",
            "produce": produce, "consumed_records": records, "expected_records": records,
            "consume_seconds": records / (2 * rate), "consume_records_per_s": 2 * rate, "consume_mb_per_s": rate / 5e3,
            "records": records, "seconds": records / (2 * rate), "records_per_s": 2 * rate, "mb_per_s": rate / 5e3,
            "cpu_us_per_record": {"client": 1.0, "cluster": 0.5}, "cpu_s": {"client": 0.001, "cluster": 0.0005},
            "latency_ms": produce["latency_ms"], "broker_peak_rss_mb": {"broker-1": 50.0},
            "broker_rss_growth_mb_per_min": {"broker-1": None}, "timeline": _timeline(rate)}


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict:
    """cluster.run_all with the cluster, the workload runs and the baseline recorded, not run."""
    seen: dict = {"clusters": [], "runs": [], "baselines": []}

    @contextmanager
    def cluster_for(o, combo) -> Iterator[Target]:  # noqa: ANN001
        seen["clusters"].append((o, combo))
        yield Target(["tcp://127.0.0.1:1"], {}, o.self_contained)

    def run_once(o, combo, target, run, on_tick=None) -> dict:  # noqa: ANN001
        seen["runs"].append((o, combo, target, run))
        return _consume_run(1000, 10_000 * o.replication_factor)

    def baseline(records, value, frame_records, seconds_max, rate=None) -> tuple[Phase, Phase]:  # noqa: ANN001
        seen["baselines"].append((records, value, frame_records, seconds_max))
        return Phase(1000, 0.01, 0.004, 0.002), Phase(1000, 0.005, 0.001, 0.001)

    monkeypatch.setattr(runner, "cluster_for", cluster_for)
    monkeypatch.setattr(runner, "run_once", run_once)
    monkeypatch.setattr(cluster, "baseline", baseline)
    return seen


def test_the_common_flags_shape_every_scenario_run(recorded: dict) -> None:
    o, scenarios = cluster.parse(["--duration", "2", "--record-size", "256", "--partitions", "5", "--producers", "2",
                                  "--consumers", "3", "--batch-size", "300", "--linger-ms", "1", "--compression", "lz4",
                                  "--rate", "5000", "--engine", "lmdb", "--fsync", "always", "--runs", "2",
                                  "--no-progress"])
    assert [s.name for s in scenarios] == ["rf1-acks1", "rf3-acksall"]
    cluster.run_all(o, scenarios, out=lambda _: None)
    [(_, combo)] = recorded["clusters"]  # one cluster for every run and scenario
    assert (combo.engine, combo.fsync) == ("lmdb", "always")
    assert [(so.replication_factor, so.acks, run) for so, _, _, run in recorded["runs"]] == [
        (1, "1", 0), (3, "all", 0), (1, "1", 1), (3, "all", 1)]
    for so, _, _, _ in recorded["runs"]:
        assert so.command == "consume"  # produce, then drain: both measured
        assert (so.duration, so.record_target(), so.record_size, so.partitions) == (2.0, None, 256, 5)
        assert (so.producers, so.consumers, so.rate) == (2, 3, 5000)
        assert so.topic.startswith("bench-cluster-")
    topics = [so.topic for so, _, _, _ in recorded["runs"]]
    assert len(set(topics)) == 4  # a fresh topic per scenario run
    # what the workload's producer processes are told
    so, _, target, _ = recorded["runs"][0]
    spec = Run(so, target, so.topic, "/tmp", None).spec("producer", 0)
    assert (spec["batch_size"], spec["linger_ms"], spec["compression"], spec["record_size"], spec["acks"]) == (
        300, 1, "lz4", 256, "1")
    # the baseline: the same record size and batch, bounded by the same time
    assert [(r, len(v), f, s) for r, v, f, s in recorded["baselines"]] == [(None, 256, 300, 2.0)] * 2


def test_replication_factor_and_acks_make_the_one_scenario_and_topic_names_it(recorded: dict) -> None:
    o, scenarios = cluster.parse(["--replication-factor", "2", "--acks", "1", "--topic", "mine", "--records", "500",
                                  "--runs", "1", "--no-progress"])
    assert [s.name for s in scenarios] == ["rf2-acks1"]
    cluster.run_all(o, scenarios, out=lambda _: None)
    [(so, _, _, _)] = recorded["runs"]
    assert (so.replication_factor, so.acks, so.topic, so.record_target()) == (2, "1", "mine", 500)
    assert recorded["baselines"][0][0] == 500 and recorded["baselines"][0][2] == 500  # one frame of 500, not 10,000
    assert [s.name for s in cluster.parse(["--scenarios", "rf2-acks0,rf3-acks1"])[1]] == ["rf2-acks0", "rf3-acks1"]


def test_the_baselines_frames_are_bounded_by_bytes_like_the_producers_batches(recorded: dict) -> None:
    """The baseline frames records as the producer batches them: by count and by its 1 MiB,
    so that large records do not make frames of 10,000 (1 GB at 100 KB each, 16 in flight)."""
    o, scenarios = cluster.parse(["--record-size", "100000", "--duration", "1", "--runs", "1", "--no-progress"])
    cluster.run_all(o, scenarios, out=lambda _: None)
    [(_, _, frame_records, _)] = recorded["baselines"]
    assert frame_records == (1 << 20) // (100_000 + RECORD_OVERHEAD_BYTES) == 10


@pytest.mark.parametrize("argv", [["-c", "cluster.yaml"], ["--bootstrap", "127.0.0.1:9"]])
def test_a_running_cluster_is_used_as_it_is(recorded: dict, argv: list[str]) -> None:
    o, scenarios = cluster.parse(argv + ["--runs", "1", "--no-progress"])
    cluster.run_all(o, scenarios, out=lambda _: None)
    [(co, _)] = recorded["clusters"]
    assert not co.self_contained and (co.config, co.bootstrap) == (o.config, o.bootstrap)


def test_the_report_is_the_common_one_with_the_older_results(recorded: dict, tmp_path: Path) -> None:
    o, scenarios = cluster.parse(["--runs", "3", "--records", "1000", "--no-progress"])
    lines: list[str] = []
    doc = json.loads(json.dumps(cluster.run_all(o, scenarios, out=lines.append)))
    assert len(lines) == 3 * 3  # a line per baseline and scenario run
    # the common keys: the first scenario's produce figures
    assert doc["records_per_s"] == 10_000 and doc["mb_per_s"] == 1.0
    assert doc["latency_ms"] == {"p50": 1.0, "p99": 2.0, "p999": 3.0}
    assert doc["cpu_us_per_record"] == {"client": 2.0, "cluster": 3.0}
    assert [c["label"] for c in doc["combinations"]] == ["rf1-acks1", "rf3-acksall", "baseline"]
    rf3 = doc["combinations"][1]
    assert rf3["ratio_to_first"]["records_per_s"] == 0.3  # the baseline's 100,000/s is the reference
    assert rf3["consume_records_per_s"] == 60_000 and rf3["consume_cpu_us_per_record"] == {"client": 1.0, "cluster": 0.5}
    # the older document, key for key
    assert {"date", "records", "runs", "engine", "fsync", "value_bytes"} <= set(doc["meta"])
    assert list(doc["results"]) == ["baseline", "rf1-acks1", "rf3-acksall"]
    old = doc["results"]["rf3-acksall"]
    assert (old["produce_records_per_s"], old["consume_records_per_s"]) == (30_000, 60_000)
    assert (old["produce_ratio"], old["consume_ratio"]) == (0.3, 0.3)
    assert (old["produce_client_cpu_us_per_record"], old["produce_server_cpu_us_per_record"]) == (2.0, 3.0)
    assert (old["consume_client_cpu_us_per_record"], old["consume_server_cpu_us_per_record"]) == (1.0, 0.5)
    assert old["runs"]["produce"][0] == {"records": 1000, "seconds": 1000 / 30_000, "client_cpu_s": 0.002,
                                         "server_cpu_s": 0.003, "records_per_s": 30_000}
    assert doc["results"]["baseline"]["produce_records_per_s"] == 100_000
    # the table: a row per scenario and the baseline, ratios to the baseline
    out = io.StringIO()
    report.print_table(doc, out)
    text = out.getvalue()
    assert "loom bench cluster" in text and "x = ratio to baseline" in text
    rows = [line.split()[0] for line in text.splitlines() if line.startswith(("rf", "baseline"))]
    assert rows[:3] == ["rf1-acks1", "rf3-acksall", "baseline"]
    # the chart: produce and drain over time for each scenario (the baseline has no timeline)
    page = report.chart_html(doc)
    assert page.count("<svg") == 2 and "rf3-acksall consumed" in page and "baseline produced" not in page


def test_a_scenario_that_loses_records_stops_the_bench(recorded: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    def short(o, combo, target, run, on_tick=None) -> dict:  # noqa: ANN001
        r = _consume_run(1000, 10_000)
        return r | {"records": 990, "consumed_records": 990}
    monkeypatch.setattr(runner, "run_once", short)
    o, scenarios = cluster.parse(["--runs", "1", "--no-progress"])
    with pytest.raises(RuntimeError, match="produced 1000 records, consumed 990"):
        cluster.run_all(o, scenarios, out=lambda _: None)


def test_a_scenario_stopped_early_by_the_guard_says_so(recorded: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scenarios share one cluster, so their data adds up: a run the disk guard cut short
    says so in its line and in the table's foot, as a `loom bench consume` run does."""
    def stopped(o, combo, target, run, on_tick=None) -> dict:  # noqa: ANN001
        return _consume_run(1000, 10_000) | {"stopped_early": "the disk under /x had 1.0 GB free"}
    monkeypatch.setattr(runner, "run_once", stopped)
    o, scenarios = cluster.parse(["--runs", "1", "--no-progress", "--scenarios", "rf3-acksall"])
    lines: list[str] = []
    doc = cluster.run_all(o, scenarios, out=lines.append)
    assert any("stopped early: the disk under /x had 1.0 GB free" in line for line in lines)
    assert report.early_stop_lines(doc) == ["1 of 2 runs stopped early: the disk under /x had 1.0 GB free"]
