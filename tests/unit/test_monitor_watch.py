"""The supervisor's watch over the monitor (nodes/monitor_watch.py), on a manual clock with
nothing answering: silence it listened to past the monitor's own limit is a verdict; silence
while the supervisor itself did not run (a stall) is forgiven; a new process is silent from
its start."""

from __future__ import annotations

import time
from pathlib import Path

import zmq

from fabric import wire
from fabric.clock import Clock, ManualClock
from fabric.config import parse_config
from nodes.monitor_watch import MonitorWatch, silent_after_ms
from tests.harness import free_ports

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


def test_a_restarted_monitor_answering_at_once_is_not_judged_silent_for_the_watch_s_reconnect_backoff(
        tmp_path: Path) -> None:
    """Real sockets and clock: while the monitor was down (killed, its restart backing off, the
    new process starting), the watch's connection attempts were refused, and their backoff grew
    (RECONNECT_IVL_MAX, 5 s). The new process answers every PING at once, yet the watch heard
    nothing until its next attempt -- seconds later, past the limit (2 s here; the default 10 s
    is as near for a slow start): it killed a healthy monitor, and again at every restart."""
    port = free_ports(1)[0]
    cfg = parse_config({"cluster": {"data_dir": str(tmp_path)},
                        "nodes": {"coordinator": {"role": "coordinator", "port": 19004},
                                  "broker-1": {"role": "broker", "broker_id": 1, "port": 19001},
                                  "monitor": {"role": "monitor", "port": port, "metrics_port": 19098}},
                        "monitor": {"health_interval_ms": 300, "unresponsive_after_ms": 2000}},
                       str(tmp_path / "c.yaml"), environ={})
    ctx = zmq.Context.instance()
    watch = MonitorWatch(ctx, Clock(), cfg, "monitor", cfg.node("monitor"))
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    try:
        down_until = time.monotonic() + 7.0  # the monitor's port refuses: killed, restarting
        while time.monotonic() < down_until:  # the supervisor's loop meanwhile
            assert watch.tick(None) is None
            time.sleep(PASS_MS / 1000)
        router.bind(f"tcp://127.0.0.1:{port}")  # the new process serves, and answers at once
        judged_until = time.monotonic() + (silent_after_ms(cfg) + 3 * PASS_MS) / 1000
        while time.monotonic() < judged_until:
            while router.poll(0):
                req = wire.decode_request(router.recv_multipart())
                router.send_multipart(wire.encode_reply(req.identity, {"id": req.id, "node": "monitor", "pid": 4545}))
            why = watch.tick(4545)
            assert why is None, why
            router.poll(50)  # the supervisor's loop pace, and the next PING's arrival
    finally:
        router.close(0)
        watch.close()
