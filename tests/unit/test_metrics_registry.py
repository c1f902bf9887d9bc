"""The declared metrics (fabric/metrics.py) and their registry, and the Prometheus exposition
(nodes/monitor/exposition.py): naming conventions, typed samples round-tripped, bounded series,
output that Prometheus's own parser reads."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fabric import metrics as M
from nodes.monitor.exposition import Exposition, render_text


def test_every_declared_metric_follows_prometheus_conventions() -> None:
    for spec in M.SPECS:
        assert spec.name.startswith("loom_"), spec.name
        assert spec.name.endswith("_total") == (spec.kind == M.COUNTER), spec.name
        if spec.unit in ("seconds", "bytes"):
            assert spec.unit in spec.name, spec.name
        assert "key" not in spec.labels and "address" not in spec.labels and "client" not in spec.labels


def test_registry_records_and_round_trips_typed_samples() -> None:
    reg = M.MetricsRegistry()
    reg.inc("loom_broker_records_in_total", ("t",), 5)
    reg.inc("loom_broker_records_in_total", ("t",), 7)
    reg.observe("loom_request_duration_seconds", ("PRODUCE",), 0.003)
    reg.observe("loom_request_duration_seconds", ("PRODUCE",), 100.0)
    reg.add_collector(lambda: [("loom_broker_disk_free_bytes", (), 123)])
    decoded = {s.name: s for s in M.decode_samples(reg.encode())}
    assert decoded["loom_broker_records_in_total"].value == 12
    hist = decoded["loom_request_duration_seconds"]
    assert hist.count == 2 and hist.buckets[2] == 1 and hist.buckets[-1] == 1  # 3 ms <= 5 ms; 100 s in +Inf
    assert decoded["loom_broker_disk_free_bytes"].value == 123
    with pytest.raises(AssertionError):
        reg.inc("loom_broker_records_in_total", ("t", "extra"))
    with pytest.raises(KeyError):
        reg.inc("loom_not_declared_total")
    assert M.decode_samples([["loom_not_declared_total", [], 1, 0, []], "junk"]) == []


def test_series_past_the_bound_are_dropped_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(M, "SERIES_PER_METRIC_MAX", 3)
    reg = M.MetricsRegistry()
    for i in range(10):
        reg.inc("loom_broker_records_in_total", (f"t{i}",))
    samples = reg.snapshot()
    assert len([s for s in samples if s.name == "loom_broker_records_in_total"]) == 3
    dropped = [s for s in samples if s.name == "loom_metric_series_dropped_total"]
    assert dropped[0].value == 7


def test_a_forgotten_series_is_no_longer_reported_and_frees_its_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(M, "SERIES_PER_METRIC_MAX", 2)
    reg = M.MetricsRegistry()
    reg.inc("loom_broker_records_in_total", ("gone",))
    reg.inc("loom_broker_records_in_total", ("kept",))
    reg.forget("loom_broker_records_in_total", ("gone",))
    reg.forget("loom_broker_records_in_total", ("never-counted",))  # nothing to forget: no error
    reg.inc("loom_broker_records_in_total", ("new",))
    names = {s.labels[0] for s in reg.snapshot() if s.name == "loom_broker_records_in_total"}
    assert names == {"kept", "new"}


def test_exposition_parses_with_prometheus_client_parser() -> None:
    reg = M.MetricsRegistry()
    reg.inc("loom_broker_records_in_total", ("t",), 10)
    reg.observe("loom_request_duration_seconds", ("FETCH",), 0.02)
    snap = Exposition((("broker-1", tuple(reg.snapshot())),), (M.Sample("loom_cluster_offline_partitions", (), 2),))
    families = {f.name: f for f in text_string_to_metric_families(render_text(snap).decode())}
    rec = families["loom_broker_records_in"]
    assert rec.type == "counter" and rec.samples[0].name == "loom_broker_records_in_total"
    assert rec.samples[0].labels == {"node": "broker-1", "topic": "t"} and rec.samples[0].value == 10
    hist = families["loom_request_duration_seconds"]
    names = {s.name for s in hist.samples}
    assert names == {"loom_request_duration_seconds_bucket", "loom_request_duration_seconds_sum",
                     "loom_request_duration_seconds_count"}
    inf = [s for s in hist.samples if s.labels.get("le") == "+Inf"]
    assert inf[0].value == 1
    assert families["loom_cluster_offline_partitions"].samples[0].value == 2
