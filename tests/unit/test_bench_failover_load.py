"""`loom bench failover` with the common flags: the producer settings, record size, topic, rate
and producer/consumer counts reach its load; --records/--duration set how long a run goes on
(never shorter than its failover); the figures and the timeline of a run come from the send,
acknowledgement and read times the load notes; the report is the common one plus the older
failover document."""

from __future__ import annotations

import io
import json

import pytest

from bench import failover, failover_load, report


class _Producer:
    built: list[dict] = []

    def __init__(self, bootstrap: object, **kw: object) -> None:
        _Producer.built.append(kw | {"bootstrap": bootstrap})


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> failover_load.Load:
    """A load of 2 producers (1,000 records/s between them) and one reader, nothing started."""
    _Producer.built = []
    monkeypatch.setattr(failover_load, "Producer", _Producer)
    o = failover.parse(["--producers", "2", "--consumers", "1", "--rate", "1000", "--record-size", "100",
                        "--topic", "ft", "--acks", "1", "--batch-size", "50", "--linger-ms", "7",
                        "--compression", "lz4"])[0]
    return failover_load.Load("127.0.0.1:1", o, time_max_s=10.0, start_offsets={0: 0, 1: 0, 2: 0})


def test_the_common_flags_reach_the_producers_and_readers(load: failover_load.Load) -> None:
    assert [p.rate_per_s for p in load.producers] == [500, 500]
    assert all(p.topic == "ft" and p.partitions == 3 for p in load.producers)
    assert len(_Producer.built) == 2
    for kw in _Producer.built:
        assert (kw["acks"], kw["batch_records_max"], kw["linger_ms"], kw["compression"]) == ("1", 50, 7, "lz4")
    assert [r.partitions for r in load.readers] == [[0, 1, 2]]
    value = failover_load.record_value(1, 7, 100)
    assert len(value) == 100 and failover_load.parse_value(value) == (1, 7)


def test_readers_share_the_partitions_and_none_without_consumers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(failover_load, "Producer", _Producer)
    three = failover.parse(["--consumers", "3", "--partitions", "2"])[0]
    assert [r.partitions for r in failover_load.Load("h:1", three, 10.0, {0: 0, 1: 0}).readers] == [[0], [1]]
    assert failover_load.Load("h:1", failover.parse([])[0], 10.0, {}).readers == []


def test_records_or_duration_make_a_run_last_at_least_that_long() -> None:
    plain = failover.parse([])[0]
    assert failover.budget_done(plain, sent=0, elapsed_s=0.0)  # the failover alone ends the run
    by_count = failover.parse(["--records", "5000"])[0]
    assert not failover.budget_done(by_count, 4999, 100.0) and failover.budget_done(by_count, 5000, 0.1)
    by_time = failover.parse(["--duration", "3"])[0]
    assert not failover.budget_done(by_time, 10**6, 2.9) and failover.budget_done(by_time, 0, 3.0)
    assert failover.workload_s_max(by_time) > failover.WORKLOAD_S_MAX  # the producers outlast the budget
    assert failover.workload_s_max(failover.parse(["--records", "20000", "--rate", "100"])[0]) >= 200


def test_figures_and_timeline_come_from_the_notes(load: failover_load.Load) -> None:
    a, b = load.producers
    a.sent_s = [10.0, 10.1, 10.6]                                  # seq -> send time; partition = seq % 3
    a.acks = {0: [(10.002, 0)], 1: [(10.104, 1)], 2: [(10.61, 2)]}
    b.sent_s = [10.2]
    b.acks = {0: [(10.21, 0)], 1: [], 2: []}
    b.failed = 1
    load.readers[0].reads = [(10.05, 0, 0, 0), (10.7, 2, 0, 2)]      # (read time, partition, producer, seq)
    assert load.ack_count(0) == 2 and load.acked() == 4 and load.sent() == 4
    assert load.first_ack_sent_after(0, 10.15) == 10.21 and load.first_ack_sent_after(1, 10.15) is None
    assert load.first_read_sent_after(2, 10.15) == 10.7
    assert load.ack_gap_s(0, 10.0, 10.3) == pytest.approx(0.208)
    f = load.figures(t0_s=10.0, t1_s=11.0, record_size=100)
    assert (f["records"], f["errors"], f["seconds"], f["records_per_s"], f["consumed_records"]) == (4, 1, 1.0, 4, 2)
    assert f["latency_ms"]["samples"] == 4 and 3.9 <= f["latency_ms"]["p50"] <= 4.1   # of 2, 4, 10, 10 ms
    assert f["latency_ms"]["p99"] is None, "four samples make no p99"
    assert f["e2e_latency_ms"]["samples"] == 2 and 49.0 <= f["e2e_latency_ms"]["p50"] <= 51.0  # of 50, 100 ms
    assert [(p["t_s"], p["produced_per_s"], p["consumed_per_s"]) for p in f["timeline"]] == [(0.5, 6, 2), (1.0, 2, 2)]


def _run(n: int, first_ack_ms: float) -> failover.Run:
    return failover.Run(n, n - 1, "broker-1", "broker-2", coordinator_declared_dead_ms=3000.0,
                        first_post_kill_ack_ms=first_ack_ms, ack_gap_ms=first_ack_ms - 100, heal_s=5.0,
                        acknowledged_records=1000)


def _figures(rate: int, p99: float) -> dict:
    return {"records": 1000, "errors": 0, "seconds": 1000 / rate, "records_per_s": rate, "mb_per_s": rate / 1e4,
            "latency_ms": {"p50": 1.0, "p99": p99, "p999": p99 * 2, "samples": 1000},
            "cpu_us_per_record": {"client": 50.0, "cluster": 80.0}, "broker_peak_rss_mb": {"broker-1": 40.0},
            "broker_rss_growth_mb_per_min": {}, "consumed_records": 0,
            "timeline": [{"t_s": 0.5 * i, "produced_per_s": rate, "consumed_per_s": 0, "p50_ms": 1.0,
                          "p99_ms": p99, "e2e_p99_ms": None} for i in range(1, 5)],
            "markers": [{"t_s": 0.6, "label": "SIGKILL"}, {"t_s": 1.7, "label": "first ack"}]}


def test_the_document_has_the_common_keys_and_the_older_ones() -> None:
    o = failover.parse(["--runs", "2"])[0]
    runs, figures = [_run(1, 3500.0), _run(2, 4000.0)], [_figures(100, 2.0), _figures(300, 4.0)]
    doc = json.loads(json.dumps(failover.document(o, runs, figures, {"session_timeout_ms": 3000})))
    assert doc["records_per_s"] == 200 and doc["latency_ms"] == {"p50": 1.0, "p99": 3.0, "p999": 6.0}
    assert doc["cpu_us_per_record"] == {"client": 50.0, "cluster": 80.0}
    assert (doc["target_ms"], doc["target_met"], doc["worst_first_post_kill_ack_ms"]) == (4000, True, 4000.0)
    assert doc["medians"]["first_post_kill_ack_ms"] == 3750.0
    assert doc["meta"]["session_timeout_ms"] == 3000 and doc["meta"]["command"] == "failover"
    assert doc["runs"][1]["victim"] == "broker-1" and doc["runs"][1]["records_per_s"] == 300
    out = io.StringIO()
    report.print_table(doc, out)
    assert "loom bench failover" in out.getvalue() and "segment/interval" in out.getvalue()
    page = report.chart_html(doc)
    assert page.count("<svg") == 2 and "SIGKILL" in page
