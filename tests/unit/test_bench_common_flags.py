"""The older benchmarks take the common `loom bench` flag names too (their own names still work):
engines --engine/--runs/--chart, cluster --record-size."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bench import engines


def test_engines_takes_engine_runs_and_chart(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out, page = tmp_path / "e.json", tmp_path / "e.html"
    assert engines.main(["--quick", "--engine", "memory", "--fsync", "never", "--runs", "1", "--no-recovery",
                         "--json", str(out), "--chart", str(page)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert rows and {r["engine"] for r in rows} == {"memory"}
    assert page.read_text().count("<svg") == 2


def test_cluster_takes_record_size_as_value_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.cluster as cluster
    seen: dict = {}
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):  # noqa: ANN001, ANN202
        seen.update(vars(original(self, args, namespace)))
        raise SystemExit(0)  # stop before any cluster starts
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(SystemExit):
        cluster.main(["--record-size", "1024"])
    assert seen["value_bytes"] == 1024
