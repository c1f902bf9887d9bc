"""The coordinator's topic administration: CREATE_TOPIC, DELETE_TOPIC and ALTER_TOPIC (configs,
more partitions). Each change is one ``commit`` of the cluster state (version bump, durable
write, push), made only once every check of the request has passed (a refused request changes
nothing); the rules for names, configs and replica placement are ``nodes.coordinator.topics``.
A config change also elects the topic's offline partitions that can be elected then
(``unclean.leader.election.enable`` turned on: ``election.on_topic_config``).

``TopicAdminMixin`` is that part of ``Coordinator`` (nodes/coordinator/node.py): its state is
the coordinator's own (set by ``Coordinator.__init__``).

Not thread-safe: runs on the coordinator's reactor.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fabric import protocol as P
from fabric import wire
from fabric.errors import RemoteError
from nodes.coordinator import election
from nodes.coordinator.store import PartitionState, TopicState
from nodes.coordinator.topics import place_partitions, validate_configs, validate_topic_name

if TYPE_CHECKING:
    from fabric.clock import Clock
    from fabric.config import LoomConfig
    from nodes.coordinator.groups import GroupCoordinator
    from nodes.coordinator.store import ClusterState

log = logging.getLogger(__name__)


class TopicAdminMixin:
    """``Coordinator``'s topic handlers. Part of Coordinator (its state is the coordinator's own)."""

    # the coordinator's state this part uses (set by Coordinator.__init__ and Node)
    config: LoomConfig
    state: ClusterState
    alive: set[int]
    groups: GroupCoordinator
    clock: Clock

    if TYPE_CHECKING:  # Coordinator's, never this
        def commit(self) -> None: ...

        def electable(self) -> set[int]: ...

    # -- topics ----------------------------------------------------------------------------------
    def _on_create_topic(self, req: wire.Request) -> dict:
        # internal topics (``__…``) are made by the coordinator itself, never over the wire
        name = validate_topic_name(req.header.get("topic"))
        if name in self.state.topics:
            raise RemoteError(P.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
        defaults = self.config.topics
        partitions = req.header.get("partitions", defaults.partitions)
        rf = req.header.get("replication_factor", defaults.replication_factor)
        if not isinstance(partitions, int) or isinstance(partitions, bool) or not 1 <= partitions <= P.PARTITIONS_MAX:
            raise RemoteError(P.INVALID_PARTITIONS, f"partitions must be an integer from 1 to {P.PARTITIONS_MAX}, not {partitions!r}")
        alive = sorted(self.alive)
        if not isinstance(rf, int) or isinstance(rf, bool) or rf < 1:
            raise RemoteError(P.INVALID_REPLICATION_FACTOR, f"replication factor must be a positive integer, not {rf!r}")
        if rf > len(alive):
            raise RemoteError(P.INVALID_REPLICATION_FACTOR,
                              f"replication factor {rf} is larger than the {len(alive)} live brokers")
        configs = validate_configs(req.header.get("configs"), rf)
        configs.setdefault("min.insync.replicas", min(defaults.min_insync_replicas, rf))
        made = self._new_partitions(partitions, rf, len(self.state.topics))
        self.state.topics[name] = TopicState(made, configs)
        self.commit()
        log.info("created topic %s: %d partitions, rf %d%s", name, partitions, rf,
                 "" if made[0].leader >= 0 else " (no broker heard yet: elected when their replicas are)")
        return {"topic": name, "partitions": partitions, "replication_factor": rf, "configs": configs}

    def _new_partitions(self, partitions: int, rf: int, start: int, first_partition: int = 0) -> list[PartitionState]:
        """``partitions`` new partitions of ``rf`` replicas on the live brokers, led by those
        that may be elected (``place_partitions``), made by the next ``commit`` (it bumps the
        version)."""
        return place_partitions(self.alive, self.electable(), partitions, rf, start, self.state.version + 1,
                                self.clock.wall_ms(), first_partition)

    def _on_delete_topic(self, req: wire.Request) -> dict:
        name = req.header.get("topic")
        if not isinstance(name, str) or name not in self.state.topics:
            raise RemoteError(P.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}")
        if isinstance(name, str) and name.startswith(P.INTERNAL_TOPIC_PREFIX):
            raise RemoteError(P.INVALID_TOPIC, "internal topics cannot be deleted")
        self.state.topic_deleted(self.state.topics.pop(name).topic_id)  # brokers delete only these
        self.commit()
        self.groups.topic_deleted(name)
        return {"topic": name}

    def _on_alter_topic(self, req: wire.Request) -> dict:
        name = req.header.get("topic")
        topic = self.state.topics.get(name) if isinstance(name, str) else None
        if topic is None:
            raise RemoteError(P.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}")
        if name.startswith(P.INTERNAL_TOPIC_PREFIX):  # type: ignore[union-attr]
            raise RemoteError(P.INVALID_TOPIC, "internal topics are configured by the coordinator")
        rf = len(topic.partitions[0].replicas)
        # every check before any change: a refused request changes nothing (a config set before
        # the partition count was refused was published and stored with the next change)
        new_configs = req.header.get("configs")
        merged = None
        if new_configs is not None:
            merged = dict(topic.configs)
            merged.update(validate_configs(new_configs, rf))
        partitions = req.header.get("partitions")
        current = len(topic.partitions)
        if partitions is not None:
            if not isinstance(partitions, int) or partitions <= current or partitions > P.PARTITIONS_MAX:
                raise RemoteError(P.INVALID_PARTITIONS, f"partitions can only grow: {name} has {current}, asked for {partitions!r}")
            alive = sorted(self.alive)
            if rf > len(alive):
                raise RemoteError(P.INVALID_REPLICATION_FACTOR, f"only {len(alive)} live brokers for replication factor {rf}")
        if merged is not None:
            topic.configs = merged
            # unclean.leader.election.enable turned on: offline partitions whose in-sync replicas
            # are gone for good are led now, not at a replica's next death or sign of life
            election.apply(self.state.topics, election.on_topic_config(
                self.state.topics, name, self.alive, self.config.replication.unclean_leader_election, self.electable()))
        if partitions is not None:
            topic.partitions += self._new_partitions(partitions - current, rf, current, current)
        self.commit()
        return {"topic": name, "partitions": len(topic.partitions), "configs": topic.configs}
