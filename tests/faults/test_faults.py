"""Fault injection with real processes: kill -9, SIGSTOP, corrupted tails, cut links.

Every scenario runs the same acks=all idempotent workload and the same checker (see
``workload_checker.py``); each prints its counts. Seeds are fixed and printed so a failure reproduces.
"""

from __future__ import annotations

import signal

import pytest

from engines.direct_write import BLOCK_BYTES
from fabric import protocol as P
from tests.faults import workload_checker as J
from tests.harness import wait_until

pytestmark = pytest.mark.faults
SEED = 20261127


# storage.direct_write_min_bytes: the default (None: only large writes go direct, which this
# workload's small batches seldom make), or 0: every write direct (engines/direct_write.py) --
# its zero padding, cut at rolls and found by recovery after each kill -9
DIRECT_WRITES = pytest.mark.parametrize("direct_write_min_bytes", [None, 0], ids=["default", "every-write-direct"])


def _cluster(cluster_factory, fsync: str = "always", direct_write_min_bytes: int | None = None):  # noqa: ANN001, ANN202
    overrides: dict = {"faults": {"enabled": True}}
    if direct_write_min_bytes is not None:
        overrides["storage"] = {"direct_write_min_bytes": direct_write_min_bytes}
    return cluster_factory(3, fsync=fsync, overrides=overrides)


def _check_direct_writes_happened(c, direct_write_min_bytes: int | None) -> None:  # noqa: ANN001
    """With every write direct, the active segments end on a block once partition 0 is written
    again: the padding is there. (Waited for: recovery after a kill cuts the padding, and the
    acknowledgements waited for before may all be of the other partitions -- partition 0's
    writes wait while its leader is elected again -- which left its files cut on every broker.)"""
    if direct_write_min_bytes == 0:
        def sizes() -> list[int]:
            return [sorted(c.replica_log_dir(b, J.TOPIC, 0).glob("*.log"))[-1].stat().st_size for b in c.broker_names()]
        wait_until(lambda: any(size and size % BLOCK_BYTES == 0 for size in sizes()), 30,
                   what="a direct write's padding at the end of a replica of partition 0")


@DIRECT_WRITES
def test_kill_leader_five_times(cluster_factory, direct_write_min_bytes: int | None) -> None:
    c = _cluster(cluster_factory, direct_write_min_bytes=direct_write_min_bytes)
    admin, w, obs = J.setup(c)
    for _ in range(5):
        victim = J.leader_name(admin, 0)
        c.kill(victim)
        w.wait_acks(200, timeout_s=30)  # writes go on while it is down
        c.start_node(victim)
        w.wait_acks(200, timeout_s=30)
    _check_direct_writes_happened(c, direct_write_min_bytes)
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


@DIRECT_WRITES
def test_kill_all_brokers_at_once(cluster_factory, direct_write_min_bytes: int | None) -> None:
    c = _cluster(cluster_factory, fsync="always", direct_write_min_bytes=direct_write_min_bytes)
    admin, w, obs = J.setup(c)
    for b in c.broker_names():
        c.kill(b)
    for b in c.broker_names():
        c.start_node(b, wait=False)
    for b in c.broker_names():
        c.wait_ready(b)
    w.wait_acks(500, timeout_s=45)
    _check_direct_writes_happened(c, direct_write_min_bytes)
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


def test_follower_restarted_twice_while_its_leader_is_paused(cluster_factory) -> None:
    """A follower restarted twice in quick succession while its leader does not run (SIGSTOP):
    the leader, resumed, reads what the follower's dead processes had sent it (acks, fetches)
    besides the metadata of both restarts. Nothing acknowledged is lost, the follower is back in
    every ISR, and the coordinator saw exactly two processes of it replaced -- no process taken
    for replaced by a late message, no registration loop (docs/replication.md, "incarnation")."""
    c = _cluster(cluster_factory)
    admin, w, obs = J.setup(c)
    leader, victim = J.leader_name(admin, 0), J.follower_name(admin, 0)
    vid = int(victim.split("-")[1])
    first = admin.metadata().brokers[vid].incarnation
    c.kill(leader, signal.SIGSTOP)
    try:
        for _ in range(2):
            c.kill(victim)
            c.start_node(victim)
    finally:
        c.kill(leader, signal.SIGCONT)
    w.wait_acks(300, timeout_s=30)
    J.finish(c, admin, w, obs)
    b = admin.metadata().brokers[vid]
    assert len(b.replaced) == 2 and b.replaced[0] == first and b.incarnation not in b.replaced, b
