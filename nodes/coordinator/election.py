"""Leader election: what the coordinator changes in partition leadership and ISRs when a broker
dies, comes back, or is the preferred leader again, and when a topic's config changes. Pure
functions over the cluster state, like ``nodes.coordinator.topics``: the partitions' states and
the live brokers in, the changes out.
``apply`` writes changes into the state; the coordinator then commits once (one durable write,
one push) if there were any.

The rules (Kafka's, with ``unclean_leader_election`` as its ``unclean.leader.election.enable``):

- A broker dies: every partition it led gets a new leader, the first of its replicas (in
  replica order) that is in the electable part of the ISR, and the ISR becomes its live part. With
  no electable ISR member the partition goes offline (leader -1) and keeps its ISR, so that the
  brokers that have the data stay known -- unless unclean election is on, which takes the first
  electable replica and makes it the whole ISR (acknowledged records may be lost). A partition
  it followed in the ISR loses every dead broker from its ISR, unless none would be left.
- Alive and electable: ``alive`` are the brokers that may run, ``electable`` (a part of them,
  all of them unless given) those a leader is chosen among. A restarted coordinator takes
  every broker for alive for one session before it has heard it (nodes/coordinator/broker_liveness.py
  ``electable``): such a broker is not elected, but it may run and hold every acknowledged
  record, so it stays in the ISRs (the leader in its own; an elected leader's too: else that
  leader's own restart found itself the last in-sync replica) and the dead broker leaves them
  -- the partition it led goes offline with the ISR members that may run, to be elected when
  heard, rather than keep the dead broker, which elected alone when it comes back would lose
  what they hold (a restarted process may have lost its unflushed tail) -- and no unclean
  election is made while an ISR member may run. The last such member's death then makes it.
- Unclean election is on for a topic when its config ``unclean.leader.election.enable`` says so,
  or, where it does not set it, when the cluster's ``unclean_leader_election`` does (the
  ``unclean_allowed`` given), as Kafka's topic config overrides its broker default. A change of
  a topic's config elects its offline partitions that can be elected then (``on_topic_config``).
- A partition that never had a leader (made offline in a restarted coordinator's grace, leader
  -1 at leader epoch 0) holds no record: any of its replicas may lead it, in the ISR or not (a
  restart of one takes it out of the ISR; else a whole-cluster restart with one broker lost
  left such a partition offline for good, its ISR down to that broker). Its first ISR is its
  electable replicas: one not heard yet joins through the leader's ISR expansion, as the
  replicas of a new partition do (``topics.place_partitions``).
- Preferred leaders: a partition whose first replica is alive, in the ISR and not the leader
  (and that is not offline) moves its leadership back to it (Kafka's auto leader rebalance),
  at the coordinator's periodic check. Only the ISR says that a replica holds the log (its
  leader took it in once it had caught up): a broker's first heartbeat says nothing of that
  (after a coordinator restart, the stored ISR may still name a follower its leader found
  lagging while the coordinator was down, the leader's shrink still to be sent again).
- Every change of leader, including going offline, bumps the leader epoch; an ISR change alone
  does not (the coordinator's commit bumps the partition epoch of every changed partition).

Pure functions; thread-safe (they do not change what they are given, except ``apply``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import AbstractSet, Callable, Iterator, Mapping

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
          unclean_allowed: bool, electable: AbstractSet[int] | None = None) -> PartitionChange | None:
    """A new leader for ``ps`` from its electable ISR (or, if allowed and no ISR member is
    alive, any electable replica); offline if there is none, with the ISR members that are
    alive (all of it if none is). None if nothing changes (it is offline already and stays so,
    its ISR too)."""
    electable = alive if electable is None else electable
    # never led (made offline, topics.place_partitions): no record was ever written, so every
    # replica holds all of it -- one whose restart took it out of the ISR too
    never_led = ps.leader < 0 and ps.leader_epoch == 0
    in_sync = ps.replicas if never_led else ps.isr
    candidates = tuple(b for b in in_sync if b in electable)
    isr = tuple(b for b in in_sync if b in alive)  # with those not heard yet: they may hold what the leader lacks later
    if candidates:
        leader = next((r for r in ps.replicas if r in candidates), candidates[0])
        # a first leader's ISR is the replicas heard: one not heard has fetched nothing, and
        # joins through the leader's ISR expansion once it has caught up (in the ISR by
        # election alone, it could be made leader with an empty log)
        return PartitionChange(topic, partition, ELECTED, leader, ps.leader_epoch + 1,
                               candidates if never_led else isr)
    if not isr:
        live = [r for r in ps.replicas if r in electable]
        if unclean_allowed and live:
            return PartitionChange(topic, partition, UNCLEAN, live[0], ps.leader_epoch + 1, (live[0],))
        isr = tuple(ps.isr)
    if ps.leader >= 0:
        return PartitionChange(topic, partition, OFFLINE, -1, ps.leader_epoch + 1, isr)
    if isr != tuple(ps.isr):
        return PartitionChange(topic, partition, ISR_SHRUNK, -1, ps.leader_epoch, isr)
    return None


def on_broker_down(topics: Mapping[str, TopicState], broker_id: int, alive: AbstractSet[int],
                   unclean_allowed: bool, electable: AbstractSet[int] | None = None) -> list[PartitionChange]:
    """The changes once ``broker_id`` is dead (``alive`` no longer holds it); ``unclean_allowed``:
    the cluster's default, for topics that do not set ``unclean.leader.election.enable``;
    ``electable``: the part of ``alive`` a leader is chosen among (all of it by default)."""
    out = []
    for name, i, ps in _partitions(topics):
        if ps.leader == broker_id or (ps.leader < 0 and broker_id in ps.isr):
            # an offline partition's ISR: the dead broker leaves it if a member that may run
            # stays; the last one's death is what an unclean election waited for
            change = elect(name, i, ps, alive, _unclean_allowed(topics[name], unclean_allowed), electable)
            if change is not None:
                out.append(change)
        elif broker_id in ps.isr:
            live_isr = tuple(b for b in ps.isr if b in alive)
            if live_isr:
                out.append(PartitionChange(name, i, ISR_SHRUNK, ps.leader, ps.leader_epoch, live_isr))
    return out


def on_broker_up(topics: Mapping[str, TopicState], broker_id: int, alive: AbstractSet[int],
                 unclean_allowed: bool, electable: AbstractSet[int] | None = None) -> list[PartitionChange]:
    """The changes once ``broker_id`` is alive again (``alive`` holds it), or electable for the
    first time: offline partitions it is a replica of get a leader if one can be elected."""
    return _offline_elections(topics, lambda name, ps: broker_id in ps.replicas, alive, unclean_allowed, electable)


def on_topic_config(topics: Mapping[str, TopicState], topic: str, alive: AbstractSet[int],
                    unclean_allowed: bool, electable: AbstractSet[int] | None = None) -> list[PartitionChange]:
    """The changes once ``topic``'s config changed: its offline partitions get a leader if one
    can be elected now -- ``unclean.leader.election.enable`` turned on elects an out-of-sync
    replica where no in-sync one may run (Kafka's controller does the same). Waiting for a
    replica's death or sign of life instead, a partition whose in-sync replicas were lost for
    good stayed offline with its other replicas running."""
    return _offline_elections(topics, lambda name, ps: name == topic, alive, unclean_allowed, electable)


def _offline_elections(topics: Mapping[str, TopicState], wanted: Callable[[str, PartitionState], bool],
                       alive: AbstractSet[int], unclean_allowed: bool,
                       electable: AbstractSet[int] | None) -> list[PartitionChange]:
    """The elections of the offline partitions ``wanted`` picks. Only elections: a partition
    that stays offline is left as it is (``elect`` would drop the ISR members not alive, but a
    sign of life or a config is no reason to rewrite it, and a death did that)."""
    out = []
    for name, i, ps in _partitions(topics):
        if ps.leader >= 0 or not wanted(name, ps):
            continue
        change = elect(name, i, ps, alive, _unclean_allowed(topics[name], unclean_allowed), electable)
        if change is not None and change.kind in (ELECTED, UNCLEAN):
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
