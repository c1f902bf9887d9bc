"""Under fsync ``interval`` the broker's reactor never waits for an interval fsync: the segment
engine's flush jobs run on the broker's flusher thread (nodes/broker/flusher.py).

A real in-process ``Broker`` (segment engine, real reactor and ROUTER port) leading one
partition; the seam is ``os.fdatasync`` itself, made slow (held on an event, at most a few
seconds) for every caller -- so on a broker that fsyncs on its reactor the reactor is what
waits, and a PING sent meanwhile is not answered."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import zmq

from engines.api import StorageFailed
from engines.segment_recovery import read_checkpoint
from fabric import protocol as P
from fabric import wire
from fabric.clock import ManualClock
from fabric.config import load_config
from fabric.metadata import ClusterMetadata, PartitionInfo, TopicInfo
from nodes.broker.node import Broker
from tests.harness import make_config, wait_until
from tests.unit.builders_broker import HOLD_S, SlowSync, produce


def ping_while_held(broker: Broker, sync: SlowSync) -> bool:
    """Send a PING and run the broker's reactor; True if answered before the fsync was released."""
    ctx = zmq.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(f"tcp://127.0.0.1:{broker.node_config.port}")
    try:
        dealer.send_multipart(wire.encode_request(P.PING, {"id": 1}))
        deadline = time.monotonic() + HOLD_S / 2
        while time.monotonic() < deadline:  # bounded: well inside the hold
            broker.reactor.run_once(10)
            if dealer.poll(0):
                header, _ = wire.decode_reply(dealer.recv_multipart())
                return header.get("id") == 1 and not sync.release.is_set()
        return False
    finally:
        dealer.close(0)


def test_an_interval_fsync_in_progress_does_not_hold_the_reactor(leader, monkeypatch: pytest.MonkeyPatch) -> None:
    broker, clock = leader
    produce(broker, 0, 5)
    sync = SlowSync(monkeypatch)
    clock.advance(broker.storage.fsync_interval_ms)
    began = time.monotonic()
    snapshot_end = broker.partitions[("t", 0)].log_end_offset
    broker.core.flush_due()  # the interval tick, on the reactor's thread
    took_s = time.monotonic() - began
    assert sync.started.wait(HOLD_S)  # an fsync is under way ...
    assert took_s < HOLD_S / 3, f"the flush tick held the reactor {took_s:.2f} s"
    assert ping_while_held(broker, sync)  # ... and the broker answers meanwhile
    produce(broker, 5, 2)  # and takes writes
    sync.release.set()
    engine = broker.partitions[("t", 0)].engine
    wait_until(lambda: broker.reactor.run_once(10) or not broker.core._flushing, timeout_s=5)
    cp = read_checkpoint(engine.directory)
    assert cp is not None and cp.next_offset == snapshot_end  # the job's snapshot: the two later writes stay dirty
    assert engine._active.dirty


def test_shutdown_with_a_job_in_flight_is_bounded_and_leaves_a_clean_log(leader, monkeypatch: pytest.MonkeyPatch) -> None:
    broker, clock = leader
    produce(broker, 0, 5)
    sync = SlowSync(monkeypatch)
    clock.advance(broker.storage.fsync_interval_ms)
    broker.core.flush_due()
    assert sync.started.wait(HOLD_S)
    engine = broker.partitions[("t", 0)].engine
    threading.Timer(0.2, sync.release.set).start()
    began = time.monotonic()
    broker.close()  # the fixture's close is then a no-op for the engines
    assert time.monotonic() - began < HOLD_S + 1
    assert broker.core.flusher is not None and broker.core.flusher._thread is not None
    assert not broker.core.flusher._thread.is_alive()
    cp = read_checkpoint(engine.directory)
    assert cp is not None and cp.clean and cp.next_offset == engine.log_end_offset


def test_an_engine_without_the_asynchronous_flush_is_flushed_on_the_reactor_as_before(
        tmp_path: Path) -> None:
    config = load_config(make_config(tmp_path, 1, engine="memory", fsync="interval"))
    clock = ManualClock(start_ms=1_000_000)
    broker = Broker(config, "broker-1", clock=clock)
    try:
        broker.coordinator.request = lambda *a, **kw: None  # type: ignore[method-assign]
        info = PartitionInfo("t", 0, 1, 1, (1,), (1,), 1)
        broker.apply_metadata(ClusterMetadata(1, "test", {}, {"t": TopicInfo("t", (info,), {})}).to_wire())
        engine = broker.partitions[("t", 0)].engine
        calls: list[int] = []
        engine.maybe_flush = lambda now_ms: calls.append(now_ms) or True  # type: ignore[method-assign]
        produce(broker, 0, 2)
        clock.advance(broker.storage.fsync_interval_ms)
        broker.core.flush_due()
        assert calls == [clock.now_ms()]
        assert broker.core.flusher is not None and broker.core.flusher._thread is None  # never started
        assert not broker.core._unflushed  # flushed: dropped as before
    finally:
        broker.close()


def run_until_collected(broker: Broker) -> None:
    wait_until(lambda: broker.reactor.run_once(10) or not broker.core._flushing, timeout_s=5)


def test_a_failed_fsync_in_the_thread_stops_the_broker_and_fences_the_log(
        leader, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The kernel may have dropped the pages a failed fsync covered (fsyncgate): a later one
    that succeeds proves nothing about them. So the failure is not logged and retried (a
    retry would move the checkpoint over bytes that may not be on disk): it leaves the
    reactor's pass as StorageFailed, which stops the node (nodes/run.py), and the log takes no
    more writes, flushes or checkpoints meanwhile."""
    broker, clock = leader
    produce(broker, 0, 3)
    engine = broker.partitions[("t", 0)].engine
    checkpoint_before = read_checkpoint(engine.directory)
    real = os.fdatasync
    failures = []

    def failing(fd: int) -> None:
        if threading.current_thread().name.endswith("-flusher") and not failures:
            failures.append(fd)
            raise OSError(5, "Input/output error")
        real(fd)
    monkeypatch.setattr(os, "fdatasync", failing)
    clock.advance(broker.storage.fsync_interval_ms)
    broker.core.flush_due()
    deadline = time.monotonic() + 5
    with pytest.raises(StorageFailed, match="Input/output error"):
        while time.monotonic() < deadline:  # until the completion is collected (wait_until would retry)
            broker.reactor.run_once(10)
    assert failures and "takes no more writes" in caplog.text
    with pytest.raises(StorageFailed):
        produce(broker, 3, 1)
    with pytest.raises(StorageFailed):
        engine.flush()
    clock.advance(broker.storage.fsync_interval_ms)
    with pytest.raises(StorageFailed):
        broker.core.flush_due()  # the next interval flush refuses too
    assert read_checkpoint(engine.directory) == checkpoint_before


def test_a_stale_completion_keeps_the_partition_watched_until_a_later_job_flushes_it(
        leader, monkeypatch: pytest.MonkeyPatch) -> None:
    broker, clock = leader
    produce(broker, 0, 6)
    part = broker.partitions[("t", 0)]
    sync = SlowSync(monkeypatch)
    clock.advance(broker.storage.fsync_interval_ms)
    broker.core.flush_due()
    assert sync.started.wait(HOLD_S)
    part.engine.flush()  # a synchronous flush (as truncation's) while the job is in flight
    produce(broker, 6, 1)
    sync.release.set()
    wait_until(lambda: broker.core.flusher.outstanding == 0 or broker.core.collect_flushes(), timeout_s=5)
    assert ("t", 0) in broker.core._flush_again and part.engine._active.dirty
    clock.advance(10 * broker.storage.fsync_interval_ms)  # long past "settled"
    broker.core.flush_due()
    assert ("t", 0) in broker.core._unflushed  # a new job is in flight: not forgotten
    run_until_collected(broker)
    assert not part.engine._active.dirty


def test_a_full_flush_queue_leaves_partitions_watched_and_flushes_them_later(
        leader, monkeypatch: pytest.MonkeyPatch) -> None:
    broker, clock = leader
    produce(broker, 0, 3)
    engine = broker.partitions[("t", 0)].engine
    monkeypatch.setattr("nodes.broker.flusher.FLUSH_JOBS_MAX", 0)
    for _ in range(5):
        clock.advance(broker.storage.fsync_interval_ms)
        broker.core.flush_due()
    assert ("t", 0) in broker.core._unflushed and engine._active.dirty
    monkeypatch.setattr("nodes.broker.flusher.FLUSH_JOBS_MAX", 1)
    clock.advance(broker.storage.fsync_interval_ms)
    broker.core.flush_due()
    run_until_collected(broker)
    assert not engine._active.dirty
