"""The coordinator's durable state: the cluster id, topics (each with its id), placement,
leaders, ISRs, epochs, the metadata version, the next producer id, the ids of topics deleted
explicitly, and where each offsets partition's latest snapshot starts. One
JSON file replaced atomically on every change through ``engines.durable.replace_file`` (write
a temp file, fsync, rename, fsync the directory; errors translated), so a coordinator restart
loses nothing.

Not thread-safe: owned by the coordinator's reactor.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from engines.durable import replace_file

FILE_NAME = "cluster-state.json"
# ids of explicitly deleted topics kept (and published) so that a broker that was down at the
# delete still removes that topic's data; older ones are forgotten (their data is then set aside)
# a producer id block never starts below the wall clock's milliseconds times this (the
# coordinator's blocks, nodes/coordinator/node.py, and the offsets topic's producer ids,
# nodes/coordinator/offsets_producer.py): ids handed out before a
# restart on an older copy of the state (a backup put back) lie below the clock of that moment,
# so the copy's stale ``next_producer_id`` cannot hand them out again -- a reused id's first
# batches could be taken by a broker for duplicates of the old producer's (acknowledged, not
# written). Ids stay below 2^53 (exact in JSON and JavaScript) until the year 2248; the clock
# floor outruns the ids as long as fewer than ~1,000,000 producers start per second
PRODUCER_IDS_PER_WALL_MS = 1024
DELETED_TOPIC_IDS_MAX = 256

log = logging.getLogger(__name__)


def new_id() -> str:
    """A fresh UUID (cluster ids, topic ids)."""
    return str(uuid.uuid4())


@dataclass
class PartitionState:
    leader: int
    leader_epoch: int
    replicas: list[int]
    isr: list[int]
    # grows at every change of leader, leader epoch or ISR (Kafka's partition epoch): brokers
    # apply a partition state only if it is newer than theirs; the coordinator bumps it in commit
    partition_epoch: int = 0
    # when the partition was made: the metadata version of the change that made it, and the
    # coordinator's wall clock then (0: unknown -- a state written before these were kept). A
    # group judges by them which partitions are newer than its reading of their topic
    # (nodes/coordinator/group_readings.py). Stored apart from ``to_list`` (a topic's
    # ``created``), so that a state file written now still loads in older code
    created_version: int = 0
    created_ms: int = 0

    def to_list(self) -> list:
        return [self.leader, self.leader_epoch, list(self.replicas), list(self.isr), self.partition_epoch]


def new_partitions(placement: list[list[int]], version: int, wall_ms: int) -> list[PartitionState]:
    """Partitions placed on ``placement`` (each a replica list, the leader first), made by the
    change that becomes metadata ``version`` at wall time ``wall_ms``."""
    return [PartitionState(r[0], 0, r, list(r), created_version=version, created_ms=wall_ms) for r in placement]


@dataclass
class TopicState:
    partitions: list[PartitionState]
    configs: dict = field(default_factory=dict)
    topic_id: str = field(default_factory=new_id)


@dataclass
class ClusterState:
    version: int = 0
    next_producer_id: int = 1
    topics: dict[str, TopicState] = field(default_factory=dict)
    # broker id -> the random id of its current process: a new one means it restarted
    incarnations: dict[int, str] = field(default_factory=dict)
    # offsets partition -> [start offset, snapshot id, wall ms] of its latest complete snapshot
    offsets_snapshots: dict[int, list] = field(default_factory=dict)
    deleted_topic_ids: list[str] = field(default_factory=list)  # oldest first, bounded
    cluster_id: str = field(default_factory=new_id)  # made once, with the first state
    # broker id -> its latest processes that a stored restart replaced (oldest first, bounded
    # by the coordinator): their late messages are not a restart, and the metadata lists them
    replaced_incarnations: dict[int, list[str]] = field(default_factory=dict)
    # broker id -> the data directory id its current process named (absent: it named none)
    directories: dict[int, str] = field(default_factory=dict)
    # offsets partition -> [producer id, epoch] of the coordinator's appends to it
    # (nodes/coordinator/offsets_producer.py): an epoch is stored before it is used
    offsets_producer: dict[int, list[int]] = field(default_factory=dict)

    def topic_deleted(self, topic_id: str) -> None:
        self.deleted_topic_ids = (self.deleted_topic_ids + [topic_id])[-DELETED_TOPIC_IDS_MAX:]


class StateStore:
    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / FILE_NAME

    def load(self) -> ClusterState:
        """The saved state; a new cluster (with a new cluster id, saved at once) when there is
        none. A state written before cluster and topic ids existed gets them here, once."""
        if not self.path.exists():
            state = ClusterState()
            log.warning("no cluster state in %s: starting a NEW cluster %s (brokers that belong to "
                        "another cluster will refuse it: see docs/replication.md to recover)", self.path, state.cluster_id)
            self.save(state)
            return state
        raw = json.loads(self.path.read_text())
        topics = {
            name: TopicState([PartitionState(*p) for p in t["partitions"]], t.get("configs", {}), t.get("id") or new_id())
            for name, t in raw.get("topics", {}).items()
        }
        for name, t in raw.get("topics", {}).items():  # absent in a state written before they were kept
            for ps, (version, wall_ms) in zip(topics[name].partitions, t.get("created", [])):
                ps.created_version, ps.created_ms = int(version), int(wall_ms)
        incarnations = {int(k): str(v) for k, v in raw.get("incarnations", {}).items()}
        snapshots = {int(k): list(v) for k, v in raw.get("offsets_snapshots", {}).items()}
        state = ClusterState(raw.get("version", 0), raw.get("next_producer_id", 1), topics, incarnations, snapshots,
                             deleted_topic_ids=list(raw.get("deleted_topic_ids", [])),
                             cluster_id=raw.get("cluster_id") or new_id(),
                             replaced_incarnations={int(k): [str(i) for i in v]
                                                    for k, v in raw.get("replaced_incarnations", {}).items()},
                             directories={int(k): str(v) for k, v in raw.get("directories", {}).items()},
                             offsets_producer={int(k): [int(x) for x in v]
                                               for k, v in raw.get("offsets_producer", {}).items()})
        if not raw.get("cluster_id") or any(not t.get("id") for t in raw.get("topics", {}).values()):
            self.save(state)  # ids made for an older state file must not change at the next start
        return state

    def save(self, state: ClusterState) -> None:
        """Replace the state file with ``state`` (engines/durable.py: the previous content stays
        whole if this fails). Raises StorageFull / EngineError."""
        raw = {
            "cluster_id": state.cluster_id,
            "version": state.version,
            "next_producer_id": state.next_producer_id,
            "incarnations": {str(k): v for k, v in state.incarnations.items()},
            "replaced_incarnations": {str(k): v for k, v in state.replaced_incarnations.items()},
            "directories": {str(k): v for k, v in state.directories.items()},
            "offsets_snapshots": {str(k): v for k, v in state.offsets_snapshots.items()},
            "offsets_producer": {str(k): v for k, v in state.offsets_producer.items()},
            "deleted_topic_ids": state.deleted_topic_ids,
            "topics": {n: {"id": t.topic_id, "configs": t.configs, "partitions": [p.to_list() for p in t.partitions],
                           "created": [[p.created_version, p.created_ms] for p in t.partitions]}
                       for n, t in state.topics.items()},
        }
        replace_file(self.path, json.dumps(raw, separators=(",", ":")).encode())
