"""Fault scenarios where retention meets replication, with real processes and the Jepsen-style
checker of ``workload_checker.py``:

- a replica returning after the leader's retention removed every epoch it shares with it
  (it must start over at the leader's log start, not loop on truncation);
- out-of-order record timestamps under time retention (a late record ending a segment must not
  expire the fresh records before it: nothing acknowledged may go).

Small segments (4 KiB) and a retention check every 200 ms make retention act within seconds.
"""

from __future__ import annotations

import signal
import time

import pytest

from fabric import protocol as P
from fabric.client import Producer
from tests.faults import workload_checker as J
from tests.harness import wait_until

pytestmark = pytest.mark.faults
HOUR_MS = 3_600_000
TAIL_RECORDS = 1200  # written to the cut-off leader only, one record per batch: its divergent
# tail, in which every offset is a batch boundary (so a truncation lands exactly where asked)
FRESH_EVERY = 4  # one record in this many is fresh, the others are two hours late: every batch
# may end with a late record (a segment too), while every 4 KiB segment holds fresh ones


def _cluster(cluster_factory, **replication):  # noqa: ANN001, ANN202
    return cluster_factory(3, fsync="always", overrides={
        "faults": {"enabled": True}, "storage": {"segment_bytes_max": 4096},
        "topics": {"retention_check_interval_ms": 200}, "replication": replication})


def _row(c, broker: str, partition: int = 0) -> dict:  # noqa: ANN001
    return next(r for r in c.stats(broker)["partitions"] if r["topic"] == J.TOPIC and r["partition"] == partition)


def _block(c, node: str, names: list[str]) -> None:  # noqa: ANN001
    c.call(node, P.FAULTS, {"block": names})


def test_replica_returns_after_its_epochs_were_retained_away(cluster_factory) -> None:
    # a long lag window: the cut-off leader must not shrink its ISR before it is killed
    c = _cluster(cluster_factory, replica_lag_time_max_ms=20_000)
    # a slower workload: retention's steps past the epoch boundary stay well short of the tail
    admin, w, obs = J.setup(c, configs={"retention.bytes": 16_384}, rate_per_s=600)
    victim = J.leader_name(admin, 0)
    others = [b for b in c.broker_names() if b != victim]
    for b in others:
        _block(c, b, [victim])
    _block(c, victim, others)
    # records only the cut-off leader takes (acks=1): a tail of its epoch no one else has
    with Producer(c.bootstrap, acks=1, linger_ms=0, request_timeout_ms=5000) as tail:
        for i in range(TAIL_RECORDS):
            tail.send(J.TOPIC, b"tail-%06d" % i, partition=0)
            tail.flush(5)
    boundary = max(_row(c, b)["log_end_offset"] for b in others)
    victim_end = _row(c, victim)["log_end_offset"]
    assert victim_end - boundary >= TAIL_RECORDS, (boundary, victim_end)
    c.kill(victim)
    for b in others:
        _block(c, b, [])
    leader = wait_until(lambda: (n := J.leader_name(admin, 0)) != victim and n, 20, what="a new leader")
    # the new leader writes on; its retention deletes past the epoch boundary, taking the
    # victim's last epoch out of its epoch cache, while the victim's log end is still past
    # the new leader's log start: the answer it gets is "diverging [-1, log start]"
    wait_until(lambda: _row(c, leader)["log_start_offset"] >= boundary, 60, interval_s=0.05,
               what="retention past the epoch boundary")
    w.pause()
    start = _row(c, leader)["log_start_offset"]
    print(f"boundary {boundary}, victim log end {victim_end}, leader log start {start}")
    assert start <= victim_end, "retention went past the victim's log end: the scenario needs a slower workload"
    c.start_node(victim)
    wait_until(lambda: _row(c, victim)["log_end_offset"] == _row(c, leader)["log_end_offset"]
               and _row(c, victim)["log_start_offset"] >= start, 30, what="the returning replica to catch up")
    w.resume()
    w.wait_acks(300, timeout_s=30)
    report = J.finish(c, admin, w, obs, retention=True)
    assert report["acknowledged"] - report["retained"] > 0


def test_out_of_order_timestamps_with_retention_lose_nothing(cluster_factory) -> None:
    c = _cluster(cluster_factory)

    def timestamp_ms(seq: int) -> int | None:
        return None if seq % FRESH_EVERY == 0 else time.time_ns() // 1_000_000 - 2 * HOUR_MS

    admin, w, obs = J.setup(c, configs={"retention.ms": HOUR_MS}, timestamp_ms_for=timestamp_ms)
    w.wait_acks(2000, timeout_s=30)  # many segments; retention runs every 200 ms
    victim = J.leader_name(admin, 1)
    c.kill(victim, signal.SIGKILL)  # and a restart: reopened segments must know their largest timestamp
    w.wait_acks(500, timeout_s=30)
    c.start_node(victim)
    w.wait_acks(1000, timeout_s=30)
    # every segment holds fresh records, so nothing may be deleted (retention=False: every
    # replica must still start at offset 0)
    report = J.finish(c, admin, w, obs)
    assert report["retained"] == 0
