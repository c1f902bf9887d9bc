"""The supervisor's watch over the monitor (nodes/monitor_watch.py), on a manual clock with
nothing answering: silence it listened to past the monitor's own limit is a verdict; silence
while the supervisor itself did not run (a stall) is forgiven; a new process is silent from
its start."""

from __future__ import annotations

from pathlib import Path

import zmq

from fabric.clock import ManualClock
from fabric.config import parse_config
from nodes.monitor_watch import MonitorWatch, silent_after_ms

PASS_MS = 200  # the supervisor's loop interval


def watch_of(tmp_path: Path) -> tuple[MonitorWatch, ManualClock]:
    cfg = parse_config({"cluster": {"data_dir": str(tmp_path)},
                        "nodes": {"coordinator": {"role": "coordinator", "port": 19004},
                                  "broker-1": {"role": "broker", "broker_id": 1, "port": 19001},
                                  "monitor": {"role": "monitor", "port": 19099, "metrics_port": 19098}},
                        "monitor": {"health_interval_ms": 300, "unresponsive_after_ms": 2000}},
                       str(tmp_path / "c.yaml"), environ={})
    assert silent_after_ms(cfg) == 2000
    clock = ManualClock(1000)
    return MonitorWatch(zmq.Context.instance(), clock, cfg, "monitor", cfg.node("monitor")), clock


def passes_until_verdict(watch: MonitorWatch, clock: ManualClock, pid: int) -> int:
    """Silent passes until the watch says to kill ``pid``: the ms they took."""
    for n in range(1, 100):
        clock.advance(PASS_MS)
        if watch.tick(pid) is not None:
            return n * PASS_MS
    raise AssertionError("never judged")


def test_listened_silence_past_the_limit_is_a_verdict_and_a_stall_is_forgiven(tmp_path: Path) -> None:
    watch, clock = watch_of(tmp_path)
    try:
        assert watch.tick(4242) is None
        clock.advance(60_000)  # the supervisor did not run for a minute: no evidence against the monitor
        assert watch.tick(4242) is None
        took_ms = passes_until_verdict(watch, clock, 4242)
        assert 2000 < took_ms <= 2000 + PASS_MS
        why = watch.tick(4242)
        assert why is not None and "process 4242 has not answered PING" in why and "limit 2000 ms" in why
    finally:
        watch.close()


def test_a_new_process_is_silent_from_its_start(tmp_path: Path) -> None:
    watch, clock = watch_of(tmp_path)
    try:
        watch.tick(4242)
        clock.advance(1800)
        assert watch.tick(None) is None  # exited: nothing to judge
        clock.advance(1800)
        assert watch.tick(4343) is None  # restarted: its predecessor's silence is not its own
        took_ms = passes_until_verdict(watch, clock, 4343)
        assert 2000 < took_ms <= 2000 + PASS_MS
    finally:
        watch.close()
