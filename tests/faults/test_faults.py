"""Fault injection with real processes: kill -9, SIGSTOP, corrupted tails, cut links.

Every scenario runs the same acks=all idempotent workload and the same checker (see
``workload_checker.py``); each prints its counts. Seeds are fixed and printed so a failure reproduces.
"""

from __future__ import annotations

import signal

import pytest

from fabric import protocol as P
from tests.faults import workload_checker as J
from tests.harness import wait_until

pytestmark = pytest.mark.faults
SEED = 20261127


def _cluster(cluster_factory, fsync: str = "always"):  # noqa: ANN001, ANN202
    return cluster_factory(3, fsync=fsync, overrides={"faults": {"enabled": True}})


def test_kill_leader_five_times(cluster_factory) -> None:
    c = _cluster(cluster_factory)
    admin, w, obs = J.setup(c)
    for _ in range(5):
        victim = J.leader_name(admin, 0)
        c.kill(victim)
        w.wait_acks(200, timeout_s=30)  # writes go on while it is down
        c.start_node(victim)
        w.wait_acks(200, timeout_s=30)
    J.finish(c, admin, w, obs)


def test_zombie_leader_paused_past_session(cluster_factory) -> None:
    c = _cluster(cluster_factory)
    admin, w, obs = J.setup(c)
    victim = J.leader_name(admin, 0)
    c.kill(victim, signal.SIGSTOP)
    # the coordinator moves leadership away; writes continue on the new leader
    wait_until(lambda: J.leader_name(admin, 0) != victim, 20, what="a new leader for partition 0")
    w.wait_acks(500, timeout_s=30)
    c.kill(victim, signal.SIGCONT)
    w.wait_acks(300, timeout_s=30)
    J.finish(c, admin, w, obs)


def test_kill_all_brokers_at_once(cluster_factory) -> None:
    c = _cluster(cluster_factory, fsync="always")
    admin, w, obs = J.setup(c)
    for b in c.broker_names():
        c.kill(b)
    for b in c.broker_names():
        c.start_node(b, wait=False)
    for b in c.broker_names():
        c.wait_ready(b)
    w.wait_acks(500, timeout_s=45)
    J.finish(c, admin, w, obs)


def test_follower_catches_up_after_restart(cluster_factory) -> None:
    c = _cluster(cluster_factory)
    admin, w, obs = J.setup(c)
    victim = J.follower_name(admin, 0)
    c.kill(victim)
    w.wait_acks(2000, timeout_s=30)
    c.start_node(victim)
    w.wait_acks(300, timeout_s=30)
    J.finish(c, admin, w, obs)


def test_corrupted_follower_tail_is_cut_and_refetched(cluster_factory) -> None:
    c = _cluster(cluster_factory)
    admin, w, obs = J.setup(c)
    victim = J.follower_name(admin, 0)
    c.kill(victim)
    print(f"seed {SEED}: flipping bytes in {victim}")
    J.flip_tail_bytes(c, victim, 0, SEED)
    c.start_node(victim)
    w.wait_acks(500, timeout_s=30)
    J.finish(c, admin, w, obs)


def _block(c, node: str, names: list[str]) -> None:  # noqa: ANN001
    c.call(node, P.FAULTS, {"block": names})


def test_cut_leader_from_coordinator(cluster_factory) -> None:
    c = _cluster(cluster_factory)
    admin, w, obs = J.setup(c)
    victim = J.leader_name(admin, 0)
    _block(c, victim, ["coordinator"])
    _block(c, "coordinator", [victim])
    wait_until(lambda: J.leader_name(admin, 0) != victim, 20, what="a new leader for partition 0")
    w.wait_acks(500, timeout_s=30)
    _block(c, victim, [])
    _block(c, "coordinator", [])
    w.wait_acks(300, timeout_s=30)
    J.finish(c, admin, w, obs)


def test_cut_follower_from_leader(cluster_factory) -> None:
    c = _cluster(cluster_factory)
    admin, w, obs = J.setup(c)
    leader, follower = J.leader_name(admin, 0), J.follower_name(admin, 0)
    _block(c, leader, [follower])
    _block(c, follower, [leader])
    fid = int(follower.split("-")[1])
    # the leader drops the silent follower from the ISR; acks=all goes on with two replicas
    wait_until(lambda: fid not in admin.metadata().topics[J.TOPIC].partitions[0].isr, 30, what="ISR shrink")
    w.wait_acks(500, timeout_s=30)
    _block(c, leader, [])
    _block(c, follower, [])
    w.wait_acks(300, timeout_s=30)
    J.finish(c, admin, w, obs)
