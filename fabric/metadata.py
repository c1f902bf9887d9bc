"""Cluster metadata as every node and client sees it: brokers, topics, partitions (leader,
leader epoch, replicas, ISR), with a version number that only grows.

Wire form (msgpack):
    {"version": int, "cluster": str,
     "cluster_id": str,          # UUID made once with the coordinator's state ("" from old nodes)
     "state_id": str,            # random per coordinator process: tells a restart from a reorder
     "deleted_topic_ids": [str], # topics deleted explicitly (bounded): only these are removed
     "coordinator": "tcp://host:port",
     "brokers": [[broker_id, host, port, pub_port, alive, incarnation, [replaced, ...]], ...],
     "topics": {name: {"id": str, "configs": {k: v},
                       "partitions": [[leader, leader_epoch, replicas, isr, partition_epoch], ...]}}}

``partition_epoch`` (Kafka's partition epoch, KIP-497) grows at every change of a partition's
leader, leader epoch or ISR; a receiver never applies a partition state whose partition epoch
is older than the one it holds, whichever path (push, reply, snapshot) it came by. Entries of
four elements (no partition epoch) read as partition epoch 0.

``incarnation`` names the broker's current process as the coordinator last committed it ("" when
unknown, and in entries of five elements): a leader counts a follower's log end only from the
process named here (Kafka's broker epoch, KIP-903), so that a report of a process that has
restarted since is not taken for its successor's. ``replaced`` lists the broker's latest
processes that restarts replaced (oldest first, bounded; empty in entries of six elements): a
leader that missed the metadata naming one of them -- two restarts in quick succession, one
push lost -- learns here that its late reports are not its successor's.

Deltas (``MetadataDelta``, pushed by the coordinator at every commit):
    {"version": int, "base_version": int, "cluster": str, "coordinator": str,
     "cluster_id": str, "state_id": str,
     "deleted_topic_ids": [str],  # only when the list changed since ``base_version``
     "brokers": [...as above...], "deleted": [topic, ...],
     "topics": {name: {"id": str, "configs": {k: v}, "partition_count": int,
                       "changed": [[partition, leader, leader_epoch, replicas, isr, partition_epoch], ...]}}}
A delta applies only on top of metadata at exactly ``base_version`` of the same cluster and
coordinator state (``cluster_id``, ``state_id``); a receiver holding anything else asks for a
full snapshot instead. A topic whose id changed (deleted and re-created under its name) has all
its partitions in ``changed``: nothing of the old topic carries over.

Immutable snapshots; thread-safe to share.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from fabric.errors import MalformedFrame

# what reading a malformed metadata push or reply raises (``wire.decode_pub``: MalformedFrame;
# ``from_wire`` / ``apply_delta`` on a map of the wrong shape: the others). A reader forgives
# exactly these, and only around the reading: a bug while applying what was read stops the node.
UNREADABLE_METADATA = (MalformedFrame, KeyError, TypeError, ValueError, IndexError, AttributeError)

log = logging.getLogger(__name__)


def read_answer(header: Any, sender: str) -> "ClusterMetadata | None":
    """The snapshot in a METADATA answer's ``header``, or None (logged) when it cannot be read
    -- a failed answer for the asker, which asks again (or elsewhere): raised out of a reply
    callback, it stopped the node whose client asked."""
    try:
        return ClusterMetadata.from_wire(header["metadata"])
    except UNREADABLE_METADATA as e:
        log.warning("unreadable metadata in an answer of %s: %s: %s", sender, type(e).__name__, e)
        return None


def _broker_from_wire(b: list) -> "BrokerInfo":
    return BrokerInfo(b[0], b[1], b[2], b[3], bool(b[4]), str(b[5]) if len(b) > 5 else "",
                      _processes_from_wire(b[6]) if len(b) > 6 else ())


def _processes_from_wire(processes: list) -> tuple[str, ...]:
    """A broker entry's replaced processes: a list of names, or TypeError (unreadable). Not
    coerced: a string iterated as one gave a replaced process per character, enough of them to
    push the real ones out of what a leader keeps."""
    if not isinstance(processes, (list, tuple)) or not all(isinstance(i, str) for i in processes):
        raise TypeError(f"replaced processes must be a list of names, not {type(processes).__name__}")
    return tuple(processes)


def _brokers_to_wire(brokers: dict[int, "BrokerInfo"]) -> list[list]:
    return [[b.broker_id, b.host, b.port, b.pub_port, b.alive, b.incarnation, list(b.replaced)]
            for b in brokers.values()]


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    broker_id: int
    host: str
    port: int
    pub_port: int
    alive: bool = True
    incarnation: str = ""  # the broker's current process as the coordinator knows it ("": unknown)
    replaced: tuple[str, ...] = ()  # its latest processes that restarts replaced, oldest first

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    @property
    def pub_endpoint(self) -> str:
        return f"tcp://{self.host}:{self.pub_port}"


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    topic: str
    partition: int
    leader: int  # -1: offline
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    partition_epoch: int = 0  # grows at every leader/epoch/ISR change of this partition

    def to_wire(self) -> list:
        return [self.leader, self.leader_epoch, list(self.replicas), list(self.isr), self.partition_epoch]

    @classmethod
    def from_wire(cls, topic: str, partition: int, p: list) -> "PartitionInfo":
        return cls(topic, partition, p[0], p[1], tuple(p[2]), tuple(p[3]), int(p[4]) if len(p) > 4 else 0)

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)

    @property
    def offline(self) -> bool:
        return self.leader < 0


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: tuple[PartitionInfo, ...]
    configs: dict = field(default_factory=dict)
    topic_id: str = ""  # UUID: a topic deleted and re-created with the same name is another topic


@dataclass(frozen=True, slots=True)
class ClusterMetadata:
    version: int
    cluster: str
    brokers: dict[int, BrokerInfo]
    topics: dict[str, TopicInfo]
    coordinator: str = ""  # endpoint of the coordinator (producer ids, groups)
    cluster_id: str = ""
    state_id: str = ""
    deleted_topic_ids: tuple[str, ...] = ()

    @classmethod
    def empty(cls) -> "ClusterMetadata":
        return cls(-1, "", {}, {})

    def partitions(self) -> Iterator[PartitionInfo]:
        for t in self.topics.values():
            yield from t.partitions

    def partition(self, topic: str, partition: int) -> PartitionInfo | None:
        t = self.topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            return None
        return t.partitions[partition]

    def dead_endpoints(self) -> frozenset[str]:
        """The request endpoints of the brokers this metadata says are dead."""
        return frozenset(b.endpoint for b in self.brokers.values() if not b.alive)

    def topic_ids_of(self, topics: Iterable[str]) -> dict[str, str]:
        """{name: topic id} of the known ``topics`` that have one: requests carry it so that a
        broker holding a deleted topic of the same name refuses them (retriably)."""
        out = {}
        for name in topics:
            t = self.topics.get(name)
            if t is not None and t.topic_id:
                out[name] = t.topic_id
        return out

    def leader_endpoint(self, topic: str, partition: int) -> str | None:
        p = self.partition(topic, partition)
        if p is None or p.leader < 0 or p.leader not in self.brokers:
            return None
        return self.brokers[p.leader].endpoint

    def leader_epoch(self, topic: str, partition: int) -> int:
        """The partition's leader epoch, -1 when the partition is unknown."""
        p = self.partition(topic, partition)
        return p.leader_epoch if p is not None else -1

    def leader_moved(self, topic: str, partition: int, endpoint: str, epoch: int) -> bool:
        """A request sent to ``endpoint`` when it led at ``epoch`` will not be answered by the
        leader now: another broker leads (or none), or the same endpoint at another epoch -- a
        restarted process, which never answers what its old process was sent."""
        p = self.partition(topic, partition)
        return self.leader_endpoint(topic, partition) != endpoint or (p is not None and p.leader_epoch != epoch)

    @classmethod
    def from_wire(cls, raw: dict) -> "ClusterMetadata":
        brokers = {b[0]: _broker_from_wire(b) for b in raw.get("brokers", [])}
        topics = {}
        for name, t in raw.get("topics", {}).items():
            parts = tuple(PartitionInfo.from_wire(name, i, p) for i, p in enumerate(t["partitions"]))
            topics[name] = TopicInfo(name, parts, dict(t.get("configs", {})), str(t.get("id", "")))
        return cls(int(raw["version"]), raw.get("cluster", ""), brokers, topics, raw.get("coordinator", ""),
                   str(raw.get("cluster_id", "")), str(raw.get("state_id", "")),
                   tuple(str(i) for i in raw.get("deleted_topic_ids", ())))

    def to_wire(self) -> dict:
        return {
            "version": self.version, "cluster": self.cluster, "coordinator": self.coordinator,
            "cluster_id": self.cluster_id, "state_id": self.state_id, "deleted_topic_ids": list(self.deleted_topic_ids),
            "brokers": _brokers_to_wire(self.brokers),
            "topics": {n: {"id": t.topic_id, "configs": t.configs,
                           "partitions": [p.to_wire() for p in t.partitions]}
                       for n, t in self.topics.items()},
        }

    def delta_to(self, new: "ClusterMetadata") -> dict:
        """The delta (wire form, see the module docstring) that turns this metadata into ``new``."""
        topics: dict[str, dict] = {}
        for name, t in new.topics.items():
            old = self.topics.get(name)
            if old is not None and old.topic_id != t.topic_id:
                old = None  # another topic of the same name: all of it is new
            old_parts = old.partitions if old is not None else ()
            changed = [[i, *p.to_wire()] for i, p in enumerate(t.partitions)
                       if i >= len(old_parts) or old_parts[i] != p]
            if changed or old is None or old.configs != t.configs:
                topics[name] = {"id": t.topic_id, "configs": t.configs, "partition_count": len(t.partitions),
                                "changed": changed}
        delta = {"version": new.version, "base_version": self.version, "cluster": new.cluster,
                 "coordinator": new.coordinator, "cluster_id": new.cluster_id, "state_id": new.state_id,
                 "brokers": _brokers_to_wire(new.brokers),
                 "deleted": [n for n in self.topics if n not in new.topics], "topics": topics}
        if new.deleted_topic_ids != self.deleted_topic_ids:
            delta["deleted_topic_ids"] = list(new.deleted_topic_ids)
        return delta

    def apply_delta(self, raw: dict) -> tuple["ClusterMetadata", list[PartitionInfo]]:
        """This metadata with a delta applied, and the partitions the delta changed. Raises
        ValueError when the delta does not start at this version of this cluster's coordinator
        state (ask for a snapshot) and KeyError/TypeError/IndexError on a malformed delta."""
        if int(raw["base_version"]) != self.version:
            raise ValueError(f"delta from version {raw['base_version']} does not apply to version {self.version}")
        cluster_id, state_id = str(raw.get("cluster_id", "")), str(raw.get("state_id", ""))
        if (cluster_id, state_id) != (self.cluster_id, self.state_id):
            # the same version number of another coordinator process (or cluster) is another
            # metadata: only a snapshot, judged as a whole, may replace ours
            raise ValueError(f"delta of coordinator state {cluster_id}/{state_id} does not apply to metadata of "
                             f"{self.cluster_id}/{self.state_id}")
        deleted = set(raw.get("deleted", ()))
        topics = {n: t for n, t in self.topics.items() if n not in deleted}
        changed: list[PartitionInfo] = []
        for name, t in raw.get("topics", {}).items():
            topic_id = str(t.get("id", ""))
            old = topics.get(name)
            if old is not None and old.topic_id != topic_id:
                old = None  # deleted and re-created: nothing of the old topic carries over
            parts = list(old.partitions if old is not None else ())[:int(t["partition_count"])]
            for entry in t.get("changed", ()):
                i = int(entry[0])
                info = PartitionInfo.from_wire(name, i, entry[1:])
                if i == len(parts):
                    parts.append(info)
                else:
                    parts[i] = info
                changed.append(info)
            if len(parts) != int(t["partition_count"]):
                raise IndexError(f"delta leaves topic {name!r} with a hole in its partitions")
            topics[name] = TopicInfo(name, tuple(parts), dict(t.get("configs", {})), topic_id)
        brokers = {b[0]: _broker_from_wire(b) for b in raw.get("brokers", [])}
        deleted_ids = tuple(str(i) for i in raw["deleted_topic_ids"]) if "deleted_topic_ids" in raw \
            else self.deleted_topic_ids
        md = ClusterMetadata(int(raw["version"]), raw.get("cluster", self.cluster), brokers, topics,
                             raw.get("coordinator", self.coordinator), cluster_id, state_id, deleted_ids)
        return md, changed
