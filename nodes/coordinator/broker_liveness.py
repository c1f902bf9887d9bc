"""Broker liveness on the coordinator: which brokers are alive, which process each one is, and
the leader elections that follow.

Brokers prove they are alive by heartbeats on their PUB sockets (any heartbeat resets the
session) and by BROKER_REGISTER. A broker silent for ``session_timeout_ms`` (or disconnected and
then silent: ``nodes.coordinator.liveness.DisconnectWatch``) is dead: it leaves every ISR
(unless it is the last member, which keeps the partition offline rather than lose track of who
has the data), and partitions it led get a new leader from the remaining ISR with the leader
epoch bumped. A new process of a broker (its incarnation) is a restart, taken as down and then
up; one from another data directory while the current process lives is a duplicate, and one of
another cluster is ignored. The rules of each election are ``nodes.coordinator.election``.

``BrokerLivenessMixin`` is that part of ``Coordinator`` (nodes/coordinator/node.py): its state
is the coordinator's own (set by ``Coordinator.__init__``); the cluster metadata, its commit and
push, producer ids and ALTER_ISR stay in node.py, topic admin is ``TopicAdminMixin``
(nodes/coordinator/topic_admin.py).

Not thread-safe: runs on the coordinator's reactor.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from engines.errors import LoomError
from fabric import protocol as P
from fabric import wire
from fabric.errors import MalformedFrame, RemoteError
from fabric.stall import forgiven_ms
from nodes.coordinator import election

if TYPE_CHECKING:
    from collections import Counter

    import zmq

    from fabric.clock import Clock
    from fabric.config import LoomConfig
    from fabric.faults import FaultRules
    from fabric.metadata import BrokerInfo
    from fabric.reactor import Reactor
    from fabric.stall import StallWatch
    from nodes.coordinator.groups import GroupCoordinator
    from nodes.coordinator.liveness import DisconnectWatch
    from nodes.coordinator.store import ClusterState

log = logging.getLogger(__name__)


class BrokerLivenessMixin:
    """``Coordinator``'s broker liveness and elections (see the module doc). Not usable alone:
    the attributes below are the coordinator's, set by ``Coordinator.__init__`` and ``Node``."""

    # the coordinator's state this part uses
    config: LoomConfig
    clock: Clock
    reactor: Reactor
    counters: Counter[str]
    faults: FaultRules
    state: ClusterState
    brokers: dict[int, BrokerInfo]
    last_seen_ms: dict[int, int]
    alive: set[int]
    heard: set[int]
    heartbeats_from: set[int]
    sub: zmq.Socket
    disconnects: DisconnectWatch | None
    stall_watch: StallWatch
    groups: GroupCoordinator
    _foreign_brokers: dict[int, str]
    _duplicates_logged: dict[int, str]
    _fenced: set[tuple[str, int]]
    _metadata_cache: dict | None

    if TYPE_CHECKING:  # Coordinator's, never these
        def commit(self) -> None: ...

        def _publish_metadata(self) -> None: ...

    # -- heartbeats, registrations, a broker's process -------------------------------------------------
    def _on_heartbeat(self, frames: list[bytes]) -> None:
        """A broker's heartbeat (``fabric.wire.Heartbeat``); one we cannot read is counted and dropped."""
        try:
            hb = wire.decode_heartbeat(frames)
        except MalformedFrame:
            self.counters["sub_malformed"] += 1
            return
        bid = hb.broker_id
        if bid is None or bid not in self.brokers or self.faults.blocks(hb.node):
            return
        if self._foreign(bid, hb.cluster_id):
            return
        directory = _named_directory(hb.directory_id)
        if hb.incarnation is not None and self._duplicate(bid, hb.incarnation, directory):
            self.counters["duplicate_broker_heartbeats"] += 1
            return
        self.heartbeats_from.add(bid)
        if hb.incarnation is not None:
            self._observe_incarnation(bid, hb.incarnation, directory)
        else:
            self._seen(bid)

    def _on_register(self, req: wire.Request) -> dict:
        bid = req.get("broker_id", int)
        if bid not in self.brokers:
            raise RemoteError(P.UNKNOWN_BROKER, f"broker {bid} is not in the cluster config")
        if self._foreign(bid, req.header.get("cluster_id")):
            raise RemoteError(P.INCONSISTENT_CLUSTER_ID, f"broker {bid} belongs to cluster {req.header['cluster_id']}, "
                              f"this coordinator to cluster {self.state.cluster_id}")
        incarnation = req.get("incarnation", str)
        if self._replaced(bid, incarnation):
            # a process we saw replaced: a request of the dead one read late (its answer goes
            # nowhere), or a live one another process of the same broker succeeded -- which
            # registers again as a new process
            raise RemoteError(P.STALE_BROKER_EPOCH, f"broker {bid}'s process {incarnation} was replaced by "
                              f"{self.state.incarnations.get(bid)}")
        directory = _named_directory(req.header.get("directory_id"))
        if self._duplicate(bid, incarnation, directory):
            self.counters["duplicate_broker_registrations"] += 1
            current = self.state.incarnations.get(bid)
            if self._duplicates_logged.get(bid) != incarnation:
                self._duplicates_logged[bid] = incarnation
                log.error("broker %d: refusing process %s (data directory %s): process %s (data directory %s) is "
                          "broker %d and alive -- do two configs give broker id %d to two brokers?", bid, incarnation,
                          directory, current, self.state.directories.get(bid), bid, bid)
            raise RemoteError(P.DUPLICATE_BROKER_REGISTRATION,
                              f"another live process is broker {bid}: process {current}, data directory "
                              f"{self.state.directories.get(bid)}; this process's data directory is {directory}. Two "
                              f"brokers with id {bid}? Asked again until that process is dead")
        self._observe_incarnation(bid, incarnation, directory)
        return {"metadata": self.metadata_wire()}

    def _duplicate(self, bid: int, incarnation: str, directory: str | None) -> bool:
        """``incarnation`` is a new process of broker ``bid`` from another data directory than
        the current process's, which is alive: two processes configured as one broker (Kafka's
        DUPLICATE_BROKER_REGISTRATION). A new process from the same directory is a restart (that
        directory's lock says the previous one is gone); one of a broker that names no
        directory (an older version), or of a dead one, is taken as before."""
        current_directory = self.state.directories.get(bid)
        return (directory is not None and current_directory is not None and directory != current_directory
                and incarnation != self.state.incarnations.get(bid) and bid in self.alive)

    def _foreign(self, bid: int, cluster_id: Any) -> bool:
        """True if the broker says it belongs to another cluster (a coordinator started without
        its state has a new id). Such a broker is not ours: not alive here, never elected."""
        if not isinstance(cluster_id, str) or not cluster_id or cluster_id == self.state.cluster_id:
            self._foreign_brokers.pop(bid, None)
            return False
        if self._foreign_brokers.get(bid) != cluster_id:
            self._foreign_brokers[bid] = cluster_id
            log.error("broker %d belongs to cluster %s, this coordinator to cluster %s: ignoring it (was this "
                      "coordinator started without its state? see docs/replication.md)", bid, cluster_id, self.state.cluster_id)
        return True

    def _observe_incarnation(self, bid: int, incarnation: str, directory: str | None = None) -> None:
        """A broker process announced itself (from data directory ``directory``, if it names
        one; not a ``_duplicate``: the caller judged that). A new process of a broker we knew is
        a restart: it may have lost an unflushed tail, so it is treated as down (out of every
        ISR, its partitions re-elected with new epochs) and then up, before it acts on any
        metadata."""
        known = self.state.incarnations.get(bid)
        if self._replaced(bid, incarnation):
            self.counters["replaced_process_heartbeats"] += 1
            return
        if known != incarnation:
            was_alive = bid in self.alive
            self.state.incarnations[bid] = incarnation
            if directory is not None:
                self.state.directories[bid] = directory
            else:
                self.state.directories.pop(bid, None)
            if known is not None:
                # stored with the restart (a write that fails takes both back: one that could
                # not be stored goes back to naming ``known`` -- maybe the live process, after a
                # predecessor's registration read late), and so published: a leader that missed
                # the metadata naming ``known`` still learns its late reports are stale
                replaced = self.state.replaced_incarnations.get(bid, []) + [known]
                self.state.replaced_incarnations[bid] = replaced[-P.REPLACED_PROCESSES_KEPT:]
                log.warning("broker %d restarted (new process): fencing the epochs it led", bid)
                # every partition it is a replica of gets a new partition epoch, also those it
                # was not in the ISR of: an ISR expansion the leader proposed on what its old
                # process reported is then refused as stale (KIP-903), and the leaders forget
                # that report (Partition._new_partition_epoch)
                self._fenced.update((name, i) for name, topic in self.state.topics.items()
                                    for i, ps in enumerate(topic.partitions) if bid in ps.replicas)
                self.alive.discard(bid)
            try:
                if known is not None:
                    self._on_broker_down(bid)
                # also a first process: the metadata names it from now on (a leader takes a
                # report naming a process the metadata showed replaced for stale), with the
                # fencing still owed for the partitions its being down changed nothing in
                self.commit()
            except LoomError:
                if was_alive and bid not in self.alive and self.state.incarnations.get(bid) == known:
                    # nothing stored: the old process leads as before, judged by its silence
                    self.alive.add(bid)
                raise
        elif directory is not None and self.state.directories.get(bid) != directory:
            self.state.directories[bid] = directory  # a state from before directory ids: stored with the next commit
        self._seen(bid)

    def _replaced(self, bid: int, incarnation: str) -> bool:
        """``incarnation`` is a process of broker ``bid`` that a stored restart replaced."""
        return incarnation in self.state.replaced_incarnations.get(bid, ())

    def _seen(self, bid: int) -> None:
        """Any sign of life renews the broker's session and brings a dead one back. The first
        one this process gets from a broker it took for alive from its start (the grace) is a
        coming up too: a partition stored offline (every in-sync replica died or was paused
        before the restart) waits for one of them to be heard, and one that ran all along --
        paused, not restarted -- gives no other sign (seed 110 of the produce nemesis: offline
        for good, every broker running and heard)."""
        self.last_seen_ms[bid] = self.clock.now_ms()
        if self.disconnects is not None:
            self.disconnects.heard(bid)
        came_back = bid not in self.alive
        if not came_back and bid in self.heard:
            return
        if came_back:
            log.info("broker %d is alive", bid)
            self.alive.add(bid)
        self.heard.add(bid)
        try:
            self._on_broker_up(bid)
        except LoomError:  # not stored (StorageFull, EngineError; commit went back): its next sign of life tries again
            self.heard.discard(bid)
            if came_back:
                self.alive.discard(bid)
            raise

    # -- sessions --------------------------------------------------------------------------------------
    def _resume_after_stall(self, now_ms: int, stalled_ms: int) -> None:
        """We did not run for ``stalled_ms``: nobody's silence in that time counts. Every broker's
        and group member's last sign of life moves forward by the stall (capped at now; heartbeats
        queued meanwhile arrive soon), so silence heard before the stall still counts."""
        for bid in self.brokers:
            # forgive the stall, not the silence heard before it: with max(last_seen, now) a
            # coordinator stalling more often than once a session never found a dead broker
            self.last_seen_ms[bid] = forgiven_ms(self.last_seen_ms[bid], now_ms, stalled_ms)
        self.groups.resume_after_stall(now_ms, stalled_ms)

    def _check_liveness(self) -> None:
        # heartbeats that arrived while we were busy are news from before this verdict: read
        # (and timestamp) them first, so that work never makes a live broker look silent
        self.reactor.drain(self.sub, P.HEARTBEATS_DRAIN_MAX)
        self.stall_watch.tick()
        now = self.clock.now_ms()
        timeout = self.config.liveness.session_timeout_ms
        crashed = self.disconnects.crashed if self.disconnects is not None else lambda bid, now: False
        dead = [bid for bid in sorted(self.alive) if now - self.last_seen_ms[bid] > timeout or crashed(bid, now)]
        for bid in dead:  # all at once: brokers that died together are all out of the ISRs
            log.warning("broker %d %s (silent %d ms): dead", bid,
                        "missed its session" if now - self.last_seen_ms[bid] > timeout else "disconnected",
                        now - self.last_seen_ms[bid])
            self.alive.discard(bid)
            if self.disconnects is not None:
                self.disconnects.forget(bid)
        for i, bid in enumerate(dead):
            try:
                self._on_broker_down(bid)
            except LoomError:  # not stored: judged again next time
                self.alive.update(dead[i:])  # not stored (commit went back): judged again next check
                raise

    # -- elections -------------------------------------------------------------------------------------
    def _on_broker_down(self, bid: int) -> None:
        """``bid`` is dead (no longer in ``alive``): re-elect what it led (``electable``), shrink
        ISRs it was in (to their alive part: a broker alive by the start's grace only may hold
        every acknowledged record, and a leader stays in its own ISR)."""
        self._apply_changes(election.on_broker_down(self.state.topics, bid, self.alive,
                                                    self.config.replication.unclean_leader_election,
                                                    self.electable()))

    def _on_broker_up(self, bid: int) -> None:
        """``bid`` is alive again, or heard for the first time since our start: offline
        partitions it is a replica of may get a leader (``electable``). No led partition moves
        to it here: its sign of life says nothing of what it holds (after our restart, the
        stored ISR may still name it though its leader found it lagging while we were down, the
        shrink still to be sent again); the periodic check moves leadership to in-sync
        preferred replicas (``_restore_preferred_leaders``)."""
        self._apply_changes(election.on_broker_up(self.state.topics, bid, self.alive,
                                                  self.config.replication.unclean_leader_election,
                                                  self.electable()))

    def electable(self) -> set[int]:
        """The brokers a leader may be chosen among: alive and heard by this process -- not one
        alive by the start's grace only, of which nothing says yet that it runs (elected, it led
        nothing until its session ran out, and a preferred one took leadership away from a
        broker that runs). Each is heard within a heartbeat of our start if it runs; its first
        sign of life elects what waited for it (``_seen``). Until then it may run and hold what
        was acknowledged: it stays in the ISRs, and neither a broker restarted meanwhile nor an
        unclean election is put past it (nodes/coordinator/election.py). New partitions are
        led by these too, their ISRs are these alone (a broker not heard has fetched nothing),
        and they are made offline while there are none (``topics.place_partitions``)."""
        return self.alive & self.heard

    def _apply_changes(self, changes: list[election.PartitionChange]) -> None:
        """Apply and commit the changes; with none, only publish (liveness is in the metadata)."""
        if changes:
            election.apply(self.state.topics, changes)
            self.commit()
        else:
            self._metadata_cache = None
            self._publish_metadata()

    def _restore_preferred_leaders(self) -> None:
        """Move leadership back to each partition's first replica once it is alive and in
        sync (Kafka's auto leader rebalance), so load spreads again after a restart."""
        changes = election.preferred_leaders(self.state.topics, self.electable())
        if changes:
            election.apply(self.state.topics, changes)
            self.commit()


def _named_directory(value: Any) -> str | None:
    """The data directory id a registration or heartbeat names; None when it names none (an
    older broker version: absent, or "")."""
    return value if isinstance(value, str) and value else None
