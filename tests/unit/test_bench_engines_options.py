"""`loom bench engines` with the common flags: --record-size and --batch-size pick the rows,
--records and --duration bound each row, --runs repeats the key rows; a flag that only means
something through a cluster runs the end-to-end engine comparison (`loom bench produce` with the
engine and fsync lists) and says so in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import engines, options, runner


@pytest.fixture
def rows(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """engines.main with every row recorded instead of run."""
    calls: list[tuple] = []

    def run_row(name, fsync, records, record_bytes, limits, work, runs):  # noqa: ANN001, ANN202
        calls.append((name, fsync, records, record_bytes, runs, limits))
        return engines.Row(name, fsync, records, record_bytes, 1, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, runs,
                           append_latency_ms={"p50": 0.01, "p99": 0.02, "p999": 0.03, "samples": 1},
                           append_cpu_us_per_record=1.0)
    monkeypatch.setattr(engines, "run_row", run_row)
    return calls


def test_record_size_and_batch_size_pick_the_rows_and_runs_repeat_the_key_rows(rows: list[tuple], capsys) -> None:  # noqa: ANN001
    assert engines.main(["--engine", "segment,memory", "--fsync", "never,always", "--record-size", "512",
                         "--batch-size", "10", "--runs", "2", "--no-recovery"]) == 0
    assert [c[:5] for c in rows] == [("segment", "never", 10, 512, 2), ("segment", "always", 10, 512, 1),
                                     ("memory", "never", 10, 512, 1)]


def test_without_them_the_whole_matrix_with_the_usual_key_rows(rows: list[tuple], capsys) -> None:  # noqa: ANN001
    assert engines.main(["--engine", "lmdb", "--fsync", "never", "--no-recovery"]) == 0
    assert [c[2:5] for c in rows] == [(1, 100, 1), (1, 1024, 1), (100, 100, 1), (100, 1024, 1), (1000, 100, 3),
                                      (1000, 1024, 1)]
    assert all(c[5] == engines.FULL for c in rows)


def test_records_and_duration_bound_each_row(rows: list[tuple], capsys) -> None:  # noqa: ANN001
    engines.main(["--engine", "memory", "--records", "5000", "--batch-size", "100", "--record-size", "100",
                  "--no-recovery"])
    engines.main(["--engine", "memory", "--duration", "1.5", "--batch-size", "100", "--record-size", "100",
                  "--no-recovery"])
    by_count, by_time = rows[0][5], rows[1][5]
    assert (by_count.row_records_max, by_count.row_seconds_max) == (5000, options.DURATION_S_MAX)
    assert (by_time.row_records_max, by_time.row_seconds_max) == (None, 1.5)
    assert by_time.row_bytes_max == engines.ROW_BYTES_MAX_ASKED


def test_a_row_of_records_appends_that_many_in_whole_batches(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "e.json"
    assert engines.main(["--engine", "memory", "--records", "2500", "--batch-size", "1000", "--record-size", "64",
                         "--runs", "1", "--no-recovery", "--json", str(out)]) == 0
    [row] = json.loads(out.read_text())["rows"]
    assert (row["records_per_batch"], row["record_bytes"], row["batches"]) == (1000, 64, 3)


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list:
    got: list = []
    monkeypatch.setattr(runner, "publish", lambda o, run: got.append((o, run)) or 0)
    return got


@pytest.mark.parametrize("flag", [["-c", "cluster.yaml"], ["--bootstrap", "127.0.0.1:1"], ["--self-contained"],
                                  ["--topic", "t"], ["--partitions", "8"], ["--replication-factor", "1"],
                                  ["--acks", "1"], ["--producers", "2"], ["--consumers", "2"], ["--linger-ms", "0"],
                                  ["--compression", "zstd"], ["--rate", "500"]])
def test_a_cluster_flag_runs_the_end_to_end_comparison_and_says_so(flag: list[str], published: list,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert engines.main(flag + ["--records", "1000", "--record-size", "200", "--batch-size", "50"]) == 0
    [(o, run)] = published
    assert run is runner.run_all and o.command == "produce"
    assert (o.record_target(), o.record_size, o.batch_size, o.runs) == (1000, 200, 50, 1)
    said = [line for line in capsys.readouterr().out.splitlines() if line]
    assert len(said) == 1 and flag[0] in said[0] and "end-to-end" in said[0]
    if o.self_contained:  # the engine lists of the engine benchmark, on a fresh cluster each
        assert (o.engines, o.fsyncs) == (["segment", "lmdb", "memory"], ["never", "interval", "always"])
        assert "loom bench produce --engine segment,lmdb,memory --fsync never,interval,always" in said[0]
    else:  # a running cluster has the engine of its config
        assert (o.engines, o.fsyncs) == (["segment"], ["interval"])


def test_the_comparison_takes_the_engine_flags_under_either_name(published: list, capsys) -> None:  # noqa: ANN001
    assert engines.main(["--partitions", "2", "--engines", "lmdb,memory", "--fsync", "always", "--repeat", "2",
                         "--html", "c.html", "--json", "c.json", "--duration", "3"]) == 0
    [(o, _)] = published
    assert (o.engines, o.fsyncs, o.runs, o.chart, o.json, o.duration, o.partitions) == (
        ["lmdb", "memory"], ["always"], 2, "c.html", "c.json", 3.0, 2)
