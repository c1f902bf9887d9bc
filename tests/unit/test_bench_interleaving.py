"""`loom bench` runs every combination once per run on a cluster of its own, and interleaves
the combinations over the runs (the order rotates each run), so a drift in the machine's load
falls on all of them alike."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pytest

from bench import runner
from bench.options import parse


def test_combinations_rotate_over_the_runs_each_on_a_fresh_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    o = parse("produce", ["--engine", "segment,lmdb,memory", "--fsync", "interval", "--runs", "3", "--no-progress"])
    clusters: list[str] = []
    order: list[tuple[int, str]] = []

    @contextmanager
    def fresh_cluster(_o, combo) -> Iterator[object]:  # noqa: ANN001
        clusters.append(combo.label)
        yield object()  # a distinct target per run: nothing is shared between runs
        clusters.append("stopped")

    def one_run(_o, combo, _target, run, on_tick=None) -> dict:  # noqa: ANN001
        order.append((run, combo.engine))
        return {"combination": {"engine": combo.engine, "fsync": combo.fsync, "api": combo.api}, "run": run,
                "records": 10, "errors": 0, "seconds": 1.0, "records_per_s": 10.0, "mb_per_s": 0.001,
                "latency_ms": {"p50": 1.0, "p99": 2.0, "p999": 3.0, "samples": 10},
                "cpu_us_per_record": {"client": 1.0, "cluster": 1.0}, "broker_peak_rss_mb": {},
                "broker_rss_growth_mb_per_min": {}, "timeline": []}

    monkeypatch.setattr(runner, "cluster_for", fresh_cluster)
    monkeypatch.setattr(runner, "run_once", one_run)
    lines: list[str] = []
    doc = runner.run_all(o, lines.append)
    assert order == [(0, "segment"), (0, "lmdb"), (0, "memory"),
                     (1, "lmdb"), (1, "memory"), (1, "segment"),
                     (2, "memory"), (2, "segment"), (2, "lmdb")]
    assert clusters == [c for label in [x for _, x in order] for c in (f"{label}/interval/send", "stopped")]
    assert [c["runs"] for c in doc["combinations"]] == [3, 3, 3]
    assert len(lines) == 9  # one line per run
