"""What `loom bench produce|consume|e2e` reports: latency percentiles, the --json shape with
medians and ratios to the first combination, the self-contained --chart page, the progress bar
only when enabled, and the peer figure or a clear skip."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from bench import peer, report
from bench.options import parse
from bench.stats import LatencyHistogram, growth_mb_per_min


def test_histogram_percentiles_within_a_bucket_and_merge_exactly() -> None:
    a, b = LatencyHistogram(), LatencyHistogram()
    for us in range(1, 1001):          # 1 µs .. 1 ms
        (a if us % 2 else b).record_us(us * 1.0)
    merged = LatencyHistogram.from_json(json.loads(json.dumps(a.to_json()))).merge(b)
    assert merged.count == 1000
    for q, exact_ms in ((50, 0.5), (99, 0.99), (99.9, 0.999)):
        got = merged.percentile_ms(q)
        assert exact_ms <= got <= exact_ms * 1.02, (q, got)
    assert LatencyHistogram().summary_ms() == {"p50": None, "p99": None, "p999": None, "samples": 0}


def _run(engine: str, rate: int, p99: float, run: int) -> dict:
    return {"combination": {"engine": engine, "fsync": "interval", "api": "send"}, "run": run,
            "records": 1000, "errors": 0, "seconds": 1.0, "records_per_s": rate, "mb_per_s": rate / 1e4,
            "latency_ms": {"p50": p99 / 2, "p99": p99, "p999": p99 * 1.5, "samples": 10},
            "cpu_us_per_record": {"client": 2.0, "cluster": 1.0}, "broker_peak_rss_mb": {"broker-1": 40.0 + run, "broker-2": 30.0 + run},
            "broker_rss_growth_mb_per_min": {"broker-1": 0.5 * run, "broker-2": None},
            "timeline": [{"t_s": 0.5 * i, "produced_per_s": rate, "consumed_per_s": 0, "p50_ms": p99 / 2,
                          "p99_ms": p99, "e2e_p99_ms": None} for i in range(1, 4)]}


def _doc() -> dict:
    o = parse("produce", ["--engine", "segment,lmdb", "--runs", "3"])
    combos = o.combinations()
    runs = {combos[0]: [_run("segment", r, 4.0, i) for i, r in enumerate((100, 300, 200))],
            combos[1]: [_run("lmdb", r, 8.0, i) for i, r in enumerate((50, 150, 100))]}
    return report.document(o, combos, runs)


def test_json_document_has_medians_ratios_and_every_run() -> None:
    doc = json.loads(json.dumps(_doc()))
    assert doc["records_per_s"] == 200 and doc["mb_per_s"] == 0.02
    assert doc["latency_ms"] == {"p50": 2.0, "p99": 4.0, "p999": 6.0}
    assert doc["cpu_us_per_record"] == {"client": 2.0, "cluster": 1.0}
    first, second = doc["combinations"]
    assert (first["label"], second["label"]) == ("segment/interval/send", "lmdb/interval/send")
    assert second["ratio_to_first"] == {"records_per_s": 0.5, "p99": 2.0}
    assert second["broker_peak_rss_mb"] == {"broker-1": 42.0, "broker-2": 32.0}
    assert second["broker_rss_growth_mb_per_min"] == 0.5  # the median run's fastest-growing broker
    assert len(doc["runs"]) == 6 and doc["meta"]["command"] == "produce"


def test_table_has_one_row_per_combination_with_its_ratio() -> None:
    out = io.StringIO()
    report.print_table(_doc(), out)
    lines = out.getvalue().strip().splitlines()
    rows = [line for line in lines if line.endswith(("1.000  1.000", "0.500  2.000"))]
    assert rows[0].startswith("segment/interval/send") and rows[0].endswith("1.000  1.000")
    assert rows[1].startswith("lmdb/interval/send") and rows[1].endswith("0.500  2.000")
    # every broker's peak RSS over the runs, not only the largest (the column)
    assert lines[-2] == "segment/interval/send: peak RSS MB per broker over its runs: broker-1 42.0, broker-2 32.0"
    assert lines[-1] == "lmdb/interval/send: peak RSS MB per broker over its runs: broker-1 42.0, broker-2 32.0"


def test_chart_is_self_contained_html_with_both_charts(tmp_path: Path) -> None:
    path = tmp_path / "chart.html"
    report.write_chart(str(path), _doc())
    page = path.read_text()
    assert page.startswith("<!doctype html>") and page.count("<svg") == 2
    assert "Throughput over time" in page and "latency over time" in page
    assert page.count("<polyline") == 2 * 1 + 2 * 2  # rate per combination; p99 and p50 per combination
    assert not re.search(r"(src|href)=\"?https?:", page) and "<script" not in page


def test_progress_bar_only_when_enabled(capsys: pytest.CaptureFixture[str]) -> None:
    o = parse("produce", ["--records", "1000"])
    tick = {"produced": 500, "consumed": 0, "elapsed_s": 1.0}
    report.Progress(o, enabled=False).tick("run 1", tick)
    assert capsys.readouterr().out == ""
    bar = report.Progress(o, enabled=True)
    bar.tick("run 1", tick)
    assert "50%" in capsys.readouterr().out


def test_peer_is_skipped_with_a_clear_message_when_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "quick_jetstream.sh").write_text("exit 1\n")
    monkeypatch.setattr(peer, "PEER_VENV", tmp_path / "no-venv")
    said: list[str] = []
    got = peer.run(parse("produce", ["--peer", "jetstream", "--peer-dir", str(tmp_path)]), said.append)
    assert got["name"] == "jetstream" and "not installed" in got["skipped"] and "setup.sh" in got["skipped"]
    assert said and "skipped" in said[0]
    doc = _doc() | {"peer": got}
    assert "skipped" in report.peer_line(doc)


def test_peer_output_lines_are_read_as_the_scripts_print_them() -> None:
    assert peer.parse_output("jetstream", "16512", False, None) == {
        "name": "jetstream", "script": "quick_jetstream.sh", "records_per_s": 16512}
    lat = peer.parse_output("jetstream", "1.64 6.60 15.00", True, 2000)
    assert lat["latency_ms"] == {"p50": 1.64, "p99": 6.6, "p999": 15.0} and "note" not in lat
    doc = _doc() | {"peer": lat}
    assert "p99 / peer p99 = 0.606" in report.peer_line(doc)


def test_memory_trend_is_the_slope_of_the_second_half_in_mb_per_minute() -> None:
    warm_up = [(2.0 * t, 10.0 + 5 * t) for t in range(10)]          # buffers filling: not a trend
    flat = [(2.0 * t, 60.0 + (0.3 if t % 2 else -0.3)) for t in range(10, 20)]
    assert abs(growth_mb_per_min(warm_up + flat)) < 1.0  # noise, against a leak's 15
    leaking = [(2.0 * t, 60.0 + 0.5 * t) for t in range(10, 20)]   # 0.25 MB/s = 15 MB/min
    assert growth_mb_per_min(warm_up + leaking) == 15.0
    assert growth_mb_per_min([(0.0, 1.0), (1.0, 2.0)]) is None    # too few samples to say
    assert growth_mb_per_min([(t / 2, 50.0 + t) for t in range(30)]) is None  # 15 s: too short to say
    assert growth_mb_per_min([]) is None


def test_a_tail_percentile_needs_ten_samples_above_its_rank_and_ranks_are_nearest() -> None:
    from bench.stats import LatencyHistogram, nearest_rank
    h = LatencyHistogram()
    for i in range(999):
        h.record_us(1000.0 + i)
    assert h.summary_ms()["p50"] is not None and h.summary_ms()["p99"] is None   # 999 samples
    h.record_us(5000.0)
    assert h.summary_ms()["p99"] is not None and h.summary_ms()["p999"] is None  # 1,000: a p99, no p99.9
    assert nearest_rank([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0 and nearest_rank([1.0, 2.0, 3.0, 4.0], 0.99) == 4.0
    assert nearest_rank(list(map(float, range(1, 201))), 0.99) == 198.0 and nearest_rank([], 0.5) is None


def test_a_runs_peak_rss_starts_over_on_a_cluster_used_before() -> None:
    import os
    from bench.stats import peak_rss_mb, reset_peak_rss
    big = bytearray(64 * 1024 * 1024)
    big[::4096] = b"x" * len(big[::4096])  # resident
    del big
    before = peak_rss_mb(os.getpid())
    reset_peak_rss(os.getpid())
    after = peak_rss_mb(os.getpid())
    assert before is not None and after is not None and after < before - 30
