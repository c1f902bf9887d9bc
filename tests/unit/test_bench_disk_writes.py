"""`loom bench produce|consume|e2e` reports what the cluster wrote to storage while the
producers ran: bytes per record (the write amplification of the engine and the replication
factor) and MB/s (to hold against the disk's own ceiling), from each node's /proc/PID/io."""

from __future__ import annotations

import os
from pathlib import Path

from bench import report, stats


def test_write_bytes_of_this_process_grow_by_what_it_wrote_to_disk(tmp_path: Path) -> None:
    if not stats.counts_writes(str(tmp_path)):
        import pytest
        pytest.skip(f"{tmp_path} is on a memory file system: nothing is written back")
    me = os.getpid()
    before = stats.process_write_bytes([me])
    if before is None:  # no /proc/PID/io (a kernel without task I/O accounting)
        import pytest
        pytest.skip("no /proc/self/io here")
    with open(tmp_path / "f", "wb") as f:
        f.write(b"x" * (4 << 20))
        f.flush()
        os.fsync(f.fileno())
    after = stats.process_write_bytes([me])
    assert after - before >= 4 << 20


def test_unknown_processes_give_none_not_zero() -> None:
    assert stats.process_write_bytes([]) is None
    assert stats.process_write_bytes([2**22 + 12345]) is None  # no such pid


def test_the_figures_per_record_and_per_second() -> None:
    assert stats.disk_figures(345_000_000, 1_000_000, 2.0) == {"bytes_per_record": 345.0, "mb_per_s": 172.5}
    assert stats.disk_figures(None, 1_000_000, 2.0) == {"bytes_per_record": None, "mb_per_s": None}
    assert stats.disk_figures(100, 0, 0.0) == {"bytes_per_record": None, "mb_per_s": None}


def _run(disk: dict | None) -> dict:
    r = {"records_per_s": 10, "mb_per_s": 1.0, "latency_ms": {"p50": 1.0, "p99": None, "p999": None},
         "cpu_us_per_record": {"client": 1.0, "cluster": 1.0}, "errors": 0}
    if disk is not None:
        r["disk_write"] = disk
    return r


def test_the_summary_takes_medians_and_the_table_shows_bytes_per_record() -> None:
    runs = [_run({"bytes_per_record": b, "mb_per_s": m}) for b, m in ((340.0, 800.0), (350.0, 900.0), (345.0, 700.0))]
    s = report._summary(runs)
    assert s["disk_write"] == {"bytes_per_record": 345.0, "mb_per_s": 800.0}
    doc = {"combinations": [{"label": "x", **s, "ratio_to_first": {"records_per_s": 1.0, "p99": None}}]}
    head, rows = report.table_rows(doc)
    assert rows[0][head.index("disk B/rec")] == "345.00" and rows[0][head.index("disk MB/s")] == "800.00"


def test_runs_without_the_figure_show_a_dash() -> None:
    s = report._summary([_run(None)])
    assert s["disk_write"] == {"bytes_per_record": None, "mb_per_s": None}
    doc = {"combinations": [{"label": "x", **s, "ratio_to_first": {"records_per_s": 1.0, "p99": None}}]}
    head, rows = report.table_rows(doc)
    assert rows[0][head.index("disk B/rec")] == "-"


def test_a_memory_file_system_counts_no_writes_so_the_figure_is_unknown() -> None:
    """tmpfs pages are never written back: /proc/PID/io would say 0 bytes, a wrong figure."""
    assert stats.fs_type("/proc") == "proc"
    if os.path.isdir("/dev/shm") and stats.fs_type("/dev/shm") == "tmpfs":
        assert stats.counts_writes("/dev/shm") is False
    assert stats.counts_writes("/") is (stats.fs_type("/") not in stats.MEMORY_FILE_SYSTEMS)


def test_disk_megabytes_per_second_are_over_the_producers_span_as_records_per_second() -> None:
    """An e2e phase lasts past the producers (the consumers catch up): MB/s over the phase
    would read low beside records/s over the producers' span."""
    from types import SimpleNamespace

    from bench import runner
    from bench.stats import LatencyHistogram
    from bench.workload import PhaseCost
    done = {"records": 1_000_000, "errors": 0, "cpu_s": 1.0, "t_start": 100.0, "t_end": 102.0,
            "lat": LatencyHistogram().to_json(), "send_delay": None}
    o = SimpleNamespace(record_size=100, rate=None)
    figures = runner._produce_figures(o, [SimpleNamespace(done=done)], PhaseCost(1.0, 10.0, 2_000_000_000))
    assert figures["records_per_s"] == 500_000
    assert figures["disk_write"] == {"bytes_per_record": 2000.0, "mb_per_s": 1000.0}
