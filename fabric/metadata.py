"""Cluster metadata as every node and client sees it: brokers, topics, partitions (leader,
leader epoch, replicas, ISR), with a version number that only grows.

Wire form (msgpack):
    {"version": int, "cluster": str,
     "cluster_id": str,          # UUID made once with the coordinator's state ("" from old nodes)
     "state_id": str,            # random per coordinator process: tells a restart from a reorder
     "deleted_topic_ids": [str], # topics deleted explicitly (bounded): only these are removed
     "coordinator": "tcp://host:port",
     "brokers": [[broker_id, host, port, pub_port, alive], ...],
     "topics": {name: {"id": str, "configs": {k: v}, "partitions": [[leader, leader_epoch, replicas, isr], ...]}}}

Immutable snapshots; thread-safe to share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    broker_id: int
    host: str
    port: int
    pub_port: int
    alive: bool = True

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

    @classmethod
    def from_wire(cls, raw: dict) -> "ClusterMetadata":
        brokers = {b[0]: BrokerInfo(b[0], b[1], b[2], b[3], bool(b[4])) for b in raw.get("brokers", [])}
        topics = {}
        for name, t in raw.get("topics", {}).items():
            parts = tuple(PartitionInfo(name, i, p[0], p[1], tuple(p[2]), tuple(p[3]))
                          for i, p in enumerate(t["partitions"]))
            topics[name] = TopicInfo(name, parts, dict(t.get("configs", {})), str(t.get("id", "")))
        return cls(int(raw["version"]), raw.get("cluster", ""), brokers, topics, raw.get("coordinator", ""),
                   str(raw.get("cluster_id", "")), str(raw.get("state_id", "")),
                   tuple(str(i) for i in raw.get("deleted_topic_ids", ())))

    def to_wire(self) -> dict:
        return {
            "version": self.version, "cluster": self.cluster, "coordinator": self.coordinator,
            "cluster_id": self.cluster_id, "state_id": self.state_id, "deleted_topic_ids": list(self.deleted_topic_ids),
            "brokers": [[b.broker_id, b.host, b.port, b.pub_port, b.alive] for b in self.brokers.values()],
            "topics": {n: {"id": t.topic_id, "configs": t.configs,
                           "partitions": [[p.leader, p.leader_epoch, list(p.replicas), list(p.isr)] for p in t.partitions]}
                       for n, t in self.topics.items()},
        }
