"""The coordinator's durable state: topics, placement, leaders, ISRs, epochs, the metadata
version, the next producer id and where each offsets partition's latest snapshot starts. One
JSON file replaced atomically (write, fsync, rename, fsync the directory) on every change, so
a coordinator restart loses nothing.

Not thread-safe: owned by the coordinator's reactor.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

FILE_NAME = "cluster-state.json"


@dataclass
class PartitionState:
    leader: int
    leader_epoch: int
    replicas: list[int]
    isr: list[int]
    # grows at every change of leader, leader epoch or ISR (Kafka's partition epoch): brokers
    # apply a partition state only if it is newer than theirs; the coordinator bumps it in commit
    partition_epoch: int = 0

    def to_list(self) -> list:
        return [self.leader, self.leader_epoch, list(self.replicas), list(self.isr), self.partition_epoch]


@dataclass
class TopicState:
    partitions: list[PartitionState]
    configs: dict = field(default_factory=dict)


@dataclass
class ClusterState:
    version: int = 0
    next_producer_id: int = 1
    topics: dict[str, TopicState] = field(default_factory=dict)
    # broker id -> the random id of its current process: a new one means it restarted
    incarnations: dict[int, str] = field(default_factory=dict)
    # offsets partition -> [start offset, snapshot id, wall ms] of its latest complete snapshot
    offsets_snapshots: dict[int, list] = field(default_factory=dict)


class StateStore:
    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / FILE_NAME

    def load(self) -> ClusterState:
        if not self.path.exists():
            return ClusterState()
        raw = json.loads(self.path.read_text())
        topics = {
            name: TopicState([PartitionState(*p) for p in t["partitions"]], t.get("configs", {}))
            for name, t in raw.get("topics", {}).items()
        }
        incarnations = {int(k): str(v) for k, v in raw.get("incarnations", {}).items()}
        snapshots = {int(k): list(v) for k, v in raw.get("offsets_snapshots", {}).items()}
        return ClusterState(raw.get("version", 0), raw.get("next_producer_id", 1), topics, incarnations, snapshots)

    def save(self, state: ClusterState) -> None:
        raw = {
            "version": state.version,
            "next_producer_id": state.next_producer_id,
            "incarnations": {str(k): v for k, v in state.incarnations.items()},
            "offsets_snapshots": {str(k): v for k, v in state.offsets_snapshots.items()},
            "topics": {n: {"configs": t.configs, "partitions": [p.to_list() for p in t.partitions]}
                       for n, t in state.topics.items()},
        }
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(raw, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
