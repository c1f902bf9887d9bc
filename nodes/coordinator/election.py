"""Leader election: what the coordinator changes in partition leadership and ISRs when a broker
dies, comes back, or is the preferred leader again. Pure functions over the cluster state, like
``nodes.coordinator.topics``: the partitions' states and the live brokers in, the changes out.
``apply`` writes changes into the state; the coordinator then commits once (one durable write,
one push) if there were any.

The rules (Kafka's, with ``unclean_leader_election`` as its ``unclean.leader.election.enable``):

- A broker dies: every partition it led gets a new leader, the first of its replicas (in
  replica order) that is in the live part of the ISR, and the ISR becomes that live part. With
  no live ISR member the partition goes offline (leader -1) and keeps its ISR, so that the
  brokers that have the data stay known -- unless unclean election is on, which takes the first
  live replica and makes it the whole ISR (acknowledged records may be lost). A partition it
  followed in the ISR loses every dead broker from its ISR, unless none would be left.
- A broker comes back: every offline partition it is a replica of is elected again by the same
  rule (so it gets a leader once a member of its ISR is alive, or any replica with unclean
  election on).
- Unclean election is on for a topic when its config ``unclean.leader.election.enable`` says so,
  or, where it does not set it, when the cluster's ``unclean_leader_election`` does (the
  ``unclean_allowed`` given), as Kafka's topic config overrides its broker default.
- Preferred leaders: a partition whose first replica is alive, in the ISR and not the leader
  (and that is not offline) moves its leadership back to it (Kafka's auto leader rebalance).
- Every change of leader, including going offline, bumps the leader epoch; an ISR change alone
  does not (the coordinator's commit bumps the partition epoch of every changed partition).

Pure functions; thread-safe (they do not change what they are given, except ``apply``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import AbstractSet, Iterator, Mapping

from nodes.coordinator.store import PartitionState, TopicState
from nodes.coordinator.topics import UNCLEAN_LEADER_ELECTION

log = logging.getLogger(__name__)

ELECTED = "elected"            # a new leader from the live ISR
UNCLEAN = "unclean"            # a new leader from outside the ISR (data may be lost)
OFFLINE = "offline"            # no leader could be elected
ISR_SHRUNK = "isr_shrunk"      # dead followers left the ISR; same leader
PREFERRED = "preferred"        # leadership back to the first replica


@dataclass(frozen=True, slots=True)
class PartitionChange:
    """The new leader, leader epoch and ISR of one partition, and why."""

    topic: str
    partition: int
    kind: str
    leader: int
    leader_epoch: int
    isr: tuple[int, ...]


def _partitions(topics: Mapping[str, TopicState]) -> Iterator[tuple[str, int, PartitionState]]:
    for name, topic in topics.items():
        for i, ps in enumerate(topic.partitions):
            yield name, i, ps


def _unclean_allowed(topic: TopicState, cluster_default: bool) -> bool:
    return bool(topic.configs.get(UNCLEAN_LEADER_ELECTION, cluster_default))


def elect(topic: str, partition: int, ps: PartitionState, alive: AbstractSet[int],
          unclean_allowed: bool) -> PartitionChange | None:
    """A new leader for ``ps`` from its live ISR (or, if allowed, any live replica); offline if
    there is none. None if nothing changes (it is offline already and stays so)."""
    live_isr = tuple(b for b in ps.isr if b in alive)
    if live_isr:
        leader = next((r for r in ps.replicas if r in live_isr), live_isr[0])
        return PartitionChange(topic, partition, ELECTED, leader, ps.leader_epoch + 1, live_isr)
    live = [r for r in ps.replicas if r in alive]
    if unclean_allowed and live:
        return PartitionChange(topic, partition, UNCLEAN, live[0], ps.leader_epoch + 1, (live[0],))
    if ps.leader < 0:
        return None
    return PartitionChange(topic, partition, OFFLINE, -1, ps.leader_epoch + 1, tuple(ps.isr))


def on_broker_down(topics: Mapping[str, TopicState], broker_id: int, alive: AbstractSet[int],
                   unclean_allowed: bool) -> list[PartitionChange]:
    """The changes once ``broker_id`` is dead (``alive`` no longer holds it); ``unclean_allowed``:
    the cluster's default, for topics that do not set ``unclean.leader.election.enable``."""
    out = []
    for name, i, ps in _partitions(topics):
        if ps.leader == broker_id:
            change = elect(name, i, ps, alive, _unclean_allowed(topics[name], unclean_allowed))
            if change is not None:
                out.append(change)
        elif broker_id in ps.isr:
            live_isr = tuple(b for b in ps.isr if b in alive)
            if live_isr:
                out.append(PartitionChange(name, i, ISR_SHRUNK, ps.leader, ps.leader_epoch, live_isr))
    return out


def on_broker_up(topics: Mapping[str, TopicState], broker_id: int, alive: AbstractSet[int],
                 unclean_allowed: bool) -> list[PartitionChange]:
    """The changes once ``broker_id`` is alive again (``alive`` holds it): offline partitions
    it is a replica of get a leader if one can be elected."""
    out = []
    for name, i, ps in _partitions(topics):
        if ps.leader >= 0 or broker_id not in ps.replicas:
            continue
        unclean = _unclean_allowed(topics[name], unclean_allowed)
        if any(b in alive for b in ps.isr) or unclean:
            change = elect(name, i, ps, alive, unclean)
            if change is not None:
                out.append(change)
    return out


def preferred_leaders(topics: Mapping[str, TopicState], alive: AbstractSet[int]) -> list[PartitionChange]:
    """Leadership back to each partition's first replica where it is alive and in sync."""
    out = []
    for name, i, ps in _partitions(topics):
        pref = ps.replicas[0]
        if ps.leader != pref and pref in alive and pref in ps.isr and ps.leader >= 0:
            out.append(PartitionChange(name, i, PREFERRED, pref, ps.leader_epoch + 1, tuple(ps.isr)))
    return out


def apply(topics: Mapping[str, TopicState], changes: list[PartitionChange]) -> None:
    """Write ``changes`` into the partitions' states, logging each."""
    for c in changes:
        ps = topics[c.topic].partitions[c.partition]
        ps.leader, ps.leader_epoch, ps.isr = c.leader, c.leader_epoch, list(c.isr)
        if c.kind == OFFLINE:
            log.warning("%s-%d is offline: no live in-sync replica", c.topic, c.partition)
        elif c.kind == UNCLEAN:
            log.warning("%s-%d: UNCLEAN election of broker %d (data may be lost)", c.topic, c.partition, c.leader)
        elif c.kind == PREFERRED:
            log.info("%s-%d: preferred leader %d restored at epoch %d", c.topic, c.partition, c.leader, c.leader_epoch)
        elif c.kind == ELECTED:
            log.info("%s-%d: leader %d at epoch %d, isr %s", c.topic, c.partition, c.leader, c.leader_epoch, list(c.isr))
