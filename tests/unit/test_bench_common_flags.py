"""The older benchmarks take the common `loom bench` flag names too (their own names still work):
engines --engine/--runs/--chart, cluster --record-size (--value-bytes)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import engines


def test_engines_takes_engine_runs_and_chart(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out, page = tmp_path / "e.json", tmp_path / "e.html"
    assert engines.main(["--quick", "--engine", "memory", "--fsync", "never", "--runs", "1", "--no-recovery",
                         "--json", str(out), "--chart", str(page)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert rows and {r["engine"] for r in rows} == {"memory"}
    assert page.read_text().count("<svg") == 2


def test_cluster_takes_record_size_and_its_older_name_value_bytes() -> None:
    from bench import cluster
    assert cluster.parse(["--record-size", "1024"])[0].record_size == 1024
    assert cluster.parse(["--value-bytes", "512"])[0].record_size == 512
