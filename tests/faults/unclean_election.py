"""The fault that makes unclean leader elections with truncation (the group nemesis's unclean
mode), and the evidence in the node logs that they happened. The topic must allow them
(``unclean.leader.election.enable``) and take acks=all records with one replica in sync
(``min.insync.replicas`` 1); a cluster of three brokers, every partition on all three.
"""

from __future__ import annotations

import random
import signal
from collections import defaultdict
from typing import Callable

from fabric.client import Admin
from fabric.metadata import PartitionInfo
from tests.faults.group_nemesis_checks import truncations, unclean_elections
from tests.harness import Cluster, wait_until

WAIT_S = 45  # each step's bound: a concurrent fault (the coordinator stopped) may slow it


def unclean_election(cluster: Cluster, topic: str, rng: random.Random, acked: Callable[[], int],
                     note: Callable[[str], None]) -> None:
    """Every partition of ``topic`` elected uncleanly, with a shorter log than the leader
    before: ``stale`` is SIGKILLed and left out of the ISRs while the others take records it
    lacks; ``second`` is SIGKILLed and left out, and ``last``, alone in the ISRs, takes more
    (acknowledged: min.insync.replicas 1); ``last`` is SIGKILLed (the partitions go offline)
    and ``stale`` started first: elected uncleanly, its log ends where it stopped, and the
    producer writes records at the offsets it lacks while consumers read; then the other two
    start again and truncate to it. Half the time ``last`` is SIGSTOPped instead, and SIGCONTed
    (a zombie leader, its log the longer) before the others start. A topic that elects cleanly (the offsets topic) stays
    offline until one of its ISR is back. ``acked``: the count of acknowledged records. Each
    wait is bounded; one that is not met is noted, and the brokers are started again all the
    same."""
    stale, second, last = rng.sample(cluster.broker_names(), 3)
    sid, lid = int(stale.rpartition("-")[2]), int(last.rpartition("-")[2])
    back = [last, second] if rng.random() < 0.5 else [second, last]
    zombie = rng.random() < 0.5  # ``last`` SIGSTOPped, not killed: SIGCONTed a leader the others no longer follow
    note(f"unclean election: SIGKILL {stale}, {second}, then {'SIGSTOP' if zombie else 'SIGKILL'} {last}; "
         f"{stale} back first, then {back}")

    def until(ok: Callable[[PartitionInfo], bool], what: str) -> bool:
        return _wait_partitions(cluster.bootstrap, topic, ok, what, note)

    def more_acks(n: int) -> None:
        want = acked() + n
        try:
            wait_until(lambda: acked() >= want, 20, interval_s=0.05, what=f"{n} more acknowledgements")
        except AssertionError:
            note(f"unclean election: fewer than {n} acknowledgements in 20s")
    try:
        cluster.kill(stale)
        until(lambda p: sid not in p.isr, f"{stale} to leave the ISRs")
        more_acks(rng.randint(30, 300))
        cluster.kill(second)
        until(lambda p: list(p.isr) == [lid] and p.leader == lid, f"{last} to lead every partition alone")
        more_acks(rng.randint(30, 300))  # acknowledged by {last} alone: lost below
        cluster.kill(last, signal.SIGSTOP if zombie else signal.SIGKILL)
        until(lambda p: p.leader < 0, "every partition to go offline")
        cluster.start_node(stale, wait=False)
        cluster.wait_ready(stale, 30)
        if until(lambda p: p.leader == sid, f"{stale} to be elected uncleanly"):
            more_acks(rng.randint(30, 300))  # written again at offsets the election lost
    finally:
        if zombie:  # until it hears of the new epoch, it answers clients that still take it for the leader
            cluster.kill(last, signal.SIGCONT)
        for n in (stale, *back):
            if cluster.procs[n].poll() is not None:
                cluster.start_node(n, wait=False)
        for n in (stale, *back):
            cluster.wait_ready(n, 30)


def _wait_partitions(bootstrap: str, topic: str, ok: Callable[[PartitionInfo], bool], what: str,
                     note: Callable[[str], None]) -> bool:
    """Until every partition of ``topic`` meets ``ok`` in the metadata; False (noted) at WAIT_S."""
    def met() -> bool:
        try:
            with Admin(bootstrap, timeout_ms=1000) as admin:
                t = admin.metadata().topics.get(topic)
        except Exception:  # the coordinator stopped or restarting: asked again
            return False
        return t is not None and all(ok(p) for p in t.partitions)
    try:
        wait_until(met, WAIT_S, interval_s=0.2, what=what)
        return True
    except AssertionError:
        note(f"unclean election: gave up waiting for {what} after {WAIT_S}s")
        return False


def read_unclean_evidence(cluster: Cluster, topic: str) -> tuple[dict[int, list[float]],
                                                                dict[int, list[tuple[float, int, int]]]]:
    """(partition -> times of ``topic``'s unclean elections, from the coordinator's log;
    partition -> (time, log end, offset cut to) of the truncations of its replicas that cut
    records, from the brokers' logs)."""
    unclean_at = unclean_elections((cluster.log_dir / "coordinator.log").read_text(errors="replace"), topic)
    cuts: dict[int, list[tuple[float, int, int]]] = defaultdict(list)
    for b in cluster.broker_names():
        for p, found in truncations((cluster.log_dir / f"{b}.log").read_text(errors="replace"), topic).items():
            cuts[p] += [(t, end, to) for t, end, to in found if end > to]
    return unclean_at, dict(cuts)
