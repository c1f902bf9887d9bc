"""`loom bench rtt`: the bare two-process round trip it measures is real (an echo process on a
free loopback port, stopped afterwards) and its figures are ordered percentiles."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from bench import rtt


def test_round_trips_through_a_real_echo_process_and_it_is_stopped(tmp_path: Path) -> None:
    out = tmp_path / "rtt.json"
    assert rtt.main(["--count", "1000", "--pause-ms", "0", "--runs", "2", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [r["samples"] for r in doc["runs"]] == [1000, 1000]
    lat = doc["latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] < rtt.RECV_TIMEOUT_MS
    assert lat["p999"] is None, "1,000 round trips make no p99.9 (bench/stats.py TAIL_SAMPLES_ABOVE_MIN)"
    assert set(doc["cpu_us_per_round_trip"]) == {"echo", "client"}  # what each side spent
    assert multiprocessing.active_children() == []  # the echo process is gone


def test_a_replication_factor_the_cluster_cannot_hold_is_a_usage_error(capsys) -> None:  # noqa: ANN001
    import pytest
    with pytest.raises(SystemExit) as e:
        rtt.main(["--loom", "--replication-factor", "4"])
    assert e.value.code == 2
    assert "--replication-factor must be 1..3" in capsys.readouterr().err


def test_cpu_beyond_the_idle_rate_is_never_negative() -> None:
    assert rtt.above_idle(1.0, 0.1, 5.0) == 0.5
    # an idle rate measured while a node still did its start-up work, above what it spent later
    assert rtt.above_idle(0.05, 0.02, 5.0) == 0.0
