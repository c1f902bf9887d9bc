"""Seeded simulation of the coordinator's liveness and elections against a model of what each
broker holds: real ``Coordinator`` objects (restarted on one data directory), driven by a
ManualClock, with brokers that heartbeat, pause, crash, restart as new processes that lost their
unflushed tail, catch up and are proposed into ISRs by their leaders, and acknowledged writes;
the coordinator restarts, stalls (the clock jumps between two passes), finds its disk full
for a while (every durable write fails: the change goes back, the handler's error is logged)
and moves leadership back to preferred replicas (its periodic check, at random steps). Topics
are made (CREATE_TOPIC) and given more partitions (ALTER_TOPIC) at random steps, more often
while the coordinator has not heard every broker (its restart's grace): a new partition's ISR
is its heard replicas (nodes/coordinator/topics.py ``place_partitions``), one made with none
heard is elected when the first of its replicas is, and the others join through their leader.
A topic's ``unclean.leader.election.enable`` is turned on and off (ALTER_TOPIC) at random
steps, more often in that grace too: turned on, it elects the topic's offline partitions whose
in-sync replicas may not run any longer -- never one past a replica taken for alive.

The model: a broker *holds* a partition when its log has every record acknowledged so far. An
acknowledged write needs a running leader and every member of the committed ISR running and
holding; replicas outside the ISR stop holding. A new process holds nothing until it catches up
from a leader that holds (or the partition has no acknowledged record: a new one is held by
every broker). Checked after every step:

- safety: a newly elected leader (its current process) holds the partition, unless no other
  member of the ISR it was chosen from held it and was taken for alive (the last in-sync
  replica restarted, or an unclean election: nothing better to elect -- its log is the
  partition's from then on, and what only the others held is lost); a leader is in its own ISR.
- epochs, on what the coordinator publishes (every metadata delta it sends, and its state as a
  METADATA request or a registration is answered), over the whole run, its restarts included:
  a partition's leader epoch never goes back, and no epoch is given to two leaders (-1, offline,
  counting as one) -- so every leader change comes with a higher epoch, and no two brokers
  both lead a partition in one epoch (a broker leads by the metadata it applied).
- liveness: after the faults heal (every broker running and heard for two sessions), every
  partition has a leader.

A failing seed is printed by pytest's parameter id; run it alone to reproduce it.
"""

from __future__ import annotations

import errno
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import zmq

from fabric import protocol as P
from fabric import wire
from fabric.clock import ManualClock
from engines.errors import LoomError
from fabric.config import load_config
from fabric.metadata import PartitionInfo
from nodes.coordinator.node import Coordinator
from nodes.coordinator.store import PartitionState, TopicState
from nodes.coordinator.topics import UNCLEAN_LEADER_ELECTION
from tests.harness import make_config
from tests.unit.fakes import request

BROKERS = (1, 2, 3)
PARTITIONS = 3
STEPS = 300
PASS_MS = 100
SEEDS = range(40)
PORT_ATTEMPTS = 5
TOPICS_MADE_MAX = 3  # topics made by CREATE_TOPIC during a run, besides t

Key = tuple[str, int]  # (topic, partition)


@dataclass
class Broker:
    bid: int
    running: bool = True
    paused: bool = False
    process: int = 0
    registered: bool = True  # a process acts (leads, fetches) once its registration is answered
    holds: set[Key] = field(default_factory=lambda: {("t", p) for p in range(PARTITIONS)})

    @property
    def incarnation(self) -> str:
        return f"p-{self.bid}-{self.process}"

    @property
    def heard(self) -> bool:
        return self.running and not self.paused

    @property
    def acts(self) -> bool:
        return self.heard and self.registered


class Sim:
    def __init__(self, tmp_path: Path, seed: int) -> None:
        self.tmp_path, self.rng, self.seed = tmp_path, random.Random(seed), seed
        self.brokers = {b: Broker(b) for b in BROKERS}
        self.clock_ms = 1_000_000
        self.disk_full = False  # every durable write of the coordinator fails (ENOSPC)
        # what the coordinator ever published, over its restarts: (partition, leader epoch) ->
        # the leader at that epoch, and each partition's latest (leader, leader epoch)
        self.epoch_leaders: dict[tuple[Key, int], int] = {}
        self.latest_published: dict[Key, tuple[int, int]] = {}
        self.log: list[str] = []
        self.acked: set[Key] = set()  # partitions with an acknowledged record
        self.made = 0  # topics made by CREATE_TOPIC so far
        self.coord = self._start()
        self.coord.state.topics["t"] = TopicState([PartitionState(p + 1, 0, [p + 1, *[b for b in BROKERS if b != p + 1]],
                                                                 list(BROKERS)) for p in range(PARTITIONS)], {})
        self.coord.commit()
        self.leaders = {k: (ps.leader, ps.leader_epoch, list(ps.isr)) for k, ps in self.partitions()}

    def _start(self) -> Coordinator:
        """The coordinator on its data dir, on fresh ports (a closed ZeroMQ socket may hold its
        port a moment longer; another test may take a free port first: tried again)."""
        for attempt in range(PORT_ATTEMPTS):
            try:
                coord = Coordinator(load_config(make_config(self.tmp_path, 3, engine="memory")), "coordinator",
                                    clock=ManualClock(self.clock_ms))
                save = coord.store.save

                def save_unless_full(state: Any) -> None:
                    if self.disk_full:
                        raise OSError(errno.ENOSPC, "No space left on device")
                    save(state)
                coord.store.save = save_unless_full  # type: ignore[method-assign]
                publish = coord.publish

                def publish_checked(topic: bytes, kind: bytes, header: dict, payloads: Any = ()) -> None:
                    if kind == P.PUB_METADATA_DELTA:
                        for name, delta in header["topics"].items():
                            for entry in delta.get("changed", ()) if isinstance(delta, dict) else ():
                                info = PartitionInfo.from_wire(name, entry[0], entry[1:])
                                self.published((name, info.partition), info.leader, info.leader_epoch, "a delta")
                    publish(topic, kind, header, payloads)
                coord.publish = publish_checked  # type: ignore[method-assign]
                return coord
            except (zmq.ZMQError, OSError) as e:
                if e.errno != errno.EADDRINUSE or attempt == PORT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def partitions(self) -> list[tuple[Key, PartitionState]]:
        return [((name, i), ps) for name, topic in self.coord.state.topics.items() if not name.startswith("__")
                for i, ps in enumerate(topic.partitions)]

    def partition(self, key: Key) -> PartitionState:
        return self.coord.state.topics[key[0]].partitions[key[1]]

    def unwritten(self) -> set[Key]:
        """What a new process holds: the partitions no record was acknowledged to yet."""
        return {k for k, _ in self.partitions() if k not in self.acked}

    def make_topic(self) -> None:
        """CREATE_TOPIC (or more partitions for a topic made before): its partitions hold no
        record, so every broker holds them."""
        before = {k for k, _ in self.partitions()}
        if self.made and self.rng.random() < 0.3:
            name = f"n{self.rng.randrange(self.made)}"
            if name in self.coord.state.topics:
                count = len(self.coord.state.topics[name].partitions)
                self.handled(self.coord._on_alter_topic, request(P.ALTER_TOPIC, topic=name, partitions=count + 1))
        elif self.made < TOPICS_MADE_MAX:
            name = f"n{self.made}"
            rf = self.rng.choice((1, 2, 3))
            if self.handled(self.coord._on_create_topic, request(P.CREATE_TOPIC, topic=name, partitions=self.rng.randrange(1, 4),
                                                                 replication_factor=rf)):
                self.made += 1
        new = {k for k, _ in self.partitions()} - before
        for b in self.brokers.values():
            b.holds |= new
        for k in sorted(new):
            ps = self.partition(k)
            self.log.append(f"made {k[0]}-{k[1]} replicas {ps.replicas} leader {ps.leader} isr {ps.isr} "
                            f"(heard {sorted(self.coord.heard)})")

    def set_unclean(self) -> None:
        """ALTER_TOPIC turns ``unclean.leader.election.enable`` on or off for a topic: turned on,
        it elects its offline partitions whose in-sync replicas may no longer run (none taken
        for alive: not in a restarted coordinator's grace)."""
        name = self.rng.choice(sorted({k[0] for k, _ in self.partitions()}))
        value = self.rng.choice(("true", "false"))
        self.log.append(f"topic {name}: {UNCLEAN_LEADER_ELECTION}={value}")
        self.handled(self.coord._on_alter_topic, request(P.ALTER_TOPIC, topic=name, configs={UNCLEAN_LEADER_ELECTION: value}))

    def close(self) -> None:
        self.coord.close()

    # -- the brokers' signs of life --------------------------------------------------------
    def heartbeat(self, b: Broker) -> None:
        self.handled(self.coord._on_heartbeat, wire.encode_heartbeat(wire.Heartbeat(
            f"broker-{b.bid}", "broker", 4242, self.coord.clock.wall_ms(), broker_id=b.bid,
            incarnation=b.incarnation, cluster_id=self.coord.state.cluster_id)))

    def register(self, b: Broker) -> None:
        """The broker's registration; one that fails (a full disk) is asked again later."""
        b.registered = self.handled(self.coord._on_register, request(
            P.BROKER_REGISTER, broker_id=b.bid, incarnation=b.incarnation, cluster_id=self.coord.state.cluster_id))

    def handled(self, handler: Callable[[Any], Any], arg: Any) -> bool:
        """``handler(arg)`` as the reactor runs it: a LoomError (the state could not be stored)
        is logged and the coordinator runs on. True if it succeeded."""
        try:
            handler(arg)
            return True
        except LoomError:
            return False
        finally:
            self.after_coordinator_step()

    def tick(self) -> None:
        self.clock_ms += PASS_MS
        self.coord.clock.advance(PASS_MS)  # type: ignore[attr-defined]
        for b in self.brokers.values():
            if b.heard and self.rng.random() < 0.9:
                self.heartbeat(b)
            if b.heard and not b.registered and self.rng.random() < 0.3:
                self.register(b)
        self.handled(lambda _: self.coord._check_liveness(), None)

    # -- data ---------------------------------------------------------------------------------
    def produce(self, p: Key) -> None:
        ps = self.partition(p)
        members = set(ps.isr) | {ps.leader}
        if ps.leader < 0 or not all(self.brokers[m].acts and p in self.brokers[m].holds for m in members):
            return  # not acknowledged
        for b in self.brokers.values():
            if b.bid not in members:
                b.holds.discard(p)
        self.acked.add(p)
        self.log.append(f"ack {p[0]}-{p[1]} isr {ps.isr} leader {ps.leader}")

    def catch_up_and_propose(self, p: Key) -> None:
        """The leader takes a caught-up follower into its ISR, or drops a stopped one."""
        ps = self.partition(p)
        if ps.leader < 0:
            return
        leader = self.brokers[ps.leader]
        if not leader.acts or self.rng.random() < 0.2:
            return
        isr = set(ps.isr) | {ps.leader}
        for f in self.brokers.values():
            if f.bid == ps.leader:
                continue
            if f.acts and p in leader.holds:
                f.holds.add(p)  # fetched up to the leader's log end
                isr.add(f.bid)
            elif not f.acts:
                isr.discard(f.bid)
        if isr == set(ps.isr):
            return
        ok = self.handled(self.coord._on_alter_isr, request(
            P.ALTER_ISR, broker_id=leader.bid, incarnation=leader.incarnation, parts=[
                {"topic": p[0], "partition": p[1], "leader_epoch": ps.leader_epoch, "partition_epoch": ps.partition_epoch,
                 "isr": sorted(isr)}]))
        self.log.append(f"alter_isr {p[0]}-{p[1]} {sorted(isr)} -> {list(self.partition(p).isr) if ok else 'not stored'}")

    # -- the checks -------------------------------------------------------------------------------
    def published(self, p: Key, leader: int, epoch: int, how: str) -> None:
        """Partition ``p`` was published (in ``how``) led by ``leader`` at leader epoch ``epoch``."""
        last_leader, last_epoch = self.latest_published.get(p, (leader, epoch))
        assert epoch >= last_epoch, f"seed {self.seed}: {p[0]}-{p[1]} published at epoch {epoch} (leader {leader}) in {how} " \
                                    f"after epoch {last_epoch} (leader {last_leader})\n" + self.trace()
        owner = self.epoch_leaders.setdefault((p, epoch), leader)
        assert owner == leader, f"seed {self.seed}: {p[0]}-{p[1]} epoch {epoch} given to two leaders, {owner} and then " \
                                f"{leader} (in {how})\n" + self.trace()
        if (leader, epoch) != (last_leader, last_epoch):
            self.log.append(f"{p[0]}-{p[1]} published led by {leader} at epoch {epoch} in {how}")
        self.latest_published[p] = (leader, epoch)

    def after_coordinator_step(self) -> None:
        for p, ps in self.partitions():
            self.published(p, ps.leader, ps.leader_epoch, "its state")
            if ps.leader >= 0:
                assert ps.leader in ps.isr, f"seed {self.seed}: {p[0]}-{p[1]} led by {ps.leader} outside its ISR {ps.isr}\n" + self.trace()
            # a leader's process the coordinator does not know yet (a restart it has not heard
            # of) never acts on it: it registers first, and that re-elects (down, then up)
            current = ps.leader >= 0 and self.coord.state.incarnations.get(ps.leader) == self.brokers[ps.leader].incarnation
            if p in self.leaders and (ps.leader, ps.leader_epoch) != self.leaders[p][:2] and current:
                holders = {b for b in self.leaders[p][2] if p in self.brokers[b].holds and b in self.coord.alive}
                assert p in self.brokers[ps.leader].holds or not holders, \
                    f"seed {self.seed}: {p[0]}-{p[1]} elected {ps.leader} (isr {ps.isr}), which lacks acknowledged records " \
                    f"that {sorted(holders)} hold\n" + self.trace()
                if p not in self.brokers[ps.leader].holds:
                    # nothing better could be elected (an unclean election, the last in-sync
                    # replica restarted): its log is the partition's from now on, and what only
                    # the others held is lost -- they truncate to it as they follow
                    self.log.append(f"{p[0]}-{p[1]}: {ps.leader} elected without every acknowledged record")
                    for other in self.brokers.values():
                        other.holds.discard(p)
                    self.brokers[ps.leader].holds.add(p)
            self.leaders[p] = (ps.leader, ps.leader_epoch, list(ps.isr))

    def trace(self) -> str:
        return "\n".join(self.log[-40:])

    # -- the run ----------------------------------------------------------------------------------
    def step(self) -> None:
        r = self.rng.random()
        b = self.brokers[self.rng.choice(BROKERS)]
        if r < 0.04:
            self.log.append(f"restart coordinator (alive {sorted(self.coord.alive)})")
            self.coord.close()
            self.coord = self._start()
            self.leaders = {k: (ps.leader, ps.leader_epoch, list(ps.isr)) for k, ps in self.partitions()}
            self.after_coordinator_step()  # what it answers from its stored state
        elif r < 0.08 and b.running:
            self.log.append(f"broker {b.bid} restarts (a new process, its unflushed tail lost)")
            b.process += 1
            b.paused, b.registered = False, False
            b.holds = self.unwritten()
            if self.rng.random() < 0.5:
                self.register(b)
        elif r < 0.10 and b.running:
            self.log.append(f"broker {b.bid} crashes")
            b.running = False
        elif r < 0.13 and not b.running:
            self.log.append(f"broker {b.bid} starts (a new process)")
            b.running, b.paused = True, False
            b.process += 1
            b.holds = self.unwritten()
            self.register(b)
        elif r < 0.17 and b.running:
            b.paused = not b.paused
            self.log.append(f"broker {b.bid} {'paused' if b.paused else 'resumed'}")
        elif r < 0.19:
            self.disk_full = not self.disk_full
            self.log.append(f"coordinator disk {'full' if self.disk_full else 'freed'}")
        elif r < 0.20:
            stalled_ms = self.rng.randrange(PASS_MS, 2 * self.coord.config.liveness.session_timeout_ms)
            self.log.append(f"coordinator stalls {stalled_ms} ms")
            self.clock_ms += stalled_ms
            self.coord.clock.advance(stalled_ms)  # type: ignore[attr-defined]
            self.tick()
        elif r < 0.22:
            self.log.append("preferred leaders restored where they can be")
            self.handled(lambda _: self.coord._restore_preferred_leaders(), None)
        elif r < 0.23 or (r < 0.25 and self.coord.heard != set(BROKERS)):
            self.make_topic()  # often in a restarted coordinator's grace
        elif r < 0.26 or (r < 0.28 and self.coord.heard != set(BROKERS)):
            self.set_unclean()  # often in a restarted coordinator's grace too
        elif r < 0.45:
            self.produce(self.rng.choice(self.partitions())[0])
        elif r < 0.60:
            self.catch_up_and_propose(self.rng.choice(self.partitions())[0])
        else:
            self.tick()

    def heal(self) -> None:
        self.disk_full = False
        for b in self.brokers.values():
            if not b.running:
                b.running, b.process = True, b.process + 1
                b.holds = self.unwritten()
                self.register(b)
            b.paused = False
        self.log.append("healed")
        for _ in range(2 * self.coord.config.liveness.session_timeout_ms // PASS_MS):
            self.tick()
            for p, _ in self.partitions():
                self.catch_up_and_propose(p)
        offline = [p for p, ps in self.partitions() if ps.leader < 0]
        assert not offline, f"seed {self.seed}: {offline} without a leader, every broker running and heard " \
                            f"{[(p, ps.leader, ps.isr) for p, ps in self.partitions()]}\n" + self.trace()


@pytest.mark.parametrize("seed", SEEDS)
def test_elections_keep_acknowledged_records_and_every_partition_gets_a_leader(tmp_path: Path, seed: int) -> None:
    sim = Sim(tmp_path, seed)
    try:
        for b in sim.brokers.values():
            sim.heartbeat(b)
        for _ in range(STEPS):
            sim.step()
        sim.heal()
    finally:
        sim.close()
