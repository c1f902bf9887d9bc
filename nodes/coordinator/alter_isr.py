"""ALTER_ISR on the coordinator: one request carries the ISR changes a leader proposes for many
partitions (Kafka's AlterPartition), all applied with one durable write and one metadata push.

Request header: ``{"broker_id": int, "incarnation": str, "parts": [{"topic", "partition", "leader_epoch",
"partition_epoch", "isr"}, ...]}`` (at most ``ALTER_ISR_PARTITIONS_MAX`` parts). Each part is
judged on its own; the reply ``{"parts": [{"topic", "partition", "error", "message", "leader",
"leader_epoch", "partition_epoch", "isr"}, ...]}`` gives, in request order, either error 0 and
the committed state (its ``partition_epoch`` tells the leader how new it is) or the refusal:

- ``FENCED_LEADER_EPOCH``: the proposer is not the partition's leader (it was deposed).
- ``STALE_ISR``: the proposer leads, but computed the change from a partition state we have
  changed since (an older ``partition_epoch`` or leader epoch): it refreshes its metadata and
  recomputes. A routine race, not a sign of a restart.
- ``INVALID_ISR``: the ISR leaves out the leader or adds a broker that is not alive.
- ``UNKNOWN_TOPIC_OR_PARTITION``, ``MALFORMED_REQUEST``.

A request naming another process (``incarnation``) than the broker's current one is refused as
a whole (``STALE_BROKER_EPOCH``, nothing applied): a duplicate of the broker, refused while the
current process lives, may still lead in its own view (node.py ``_on_alter_isr``).

Not thread-safe: runs on the coordinator's reactor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fabric import protocol as P
from nodes.coordinator.store import PartitionState, TopicState

log = logging.getLogger(__name__)


@dataclass(slots=True)
class IsrChange:
    """One part of an ALTER_ISR request, decoded."""
    topic: str
    partition: int
    leader_epoch: int
    partition_epoch: int
    isr: list[int]

    @classmethod
    def from_wire(cls, raw: Any) -> "IsrChange":
        """Raises ValueError naming what is wrong."""
        if not isinstance(raw, dict):
            raise ValueError("each part is a map")
        topic, partition, epoch, pepoch, isr = (raw.get(k) for k in ("topic", "partition", "leader_epoch",
                                                                     "partition_epoch", "isr"))
        ints = (partition, epoch, pepoch)
        if not isinstance(topic, str) or not all(isinstance(v, int) and not isinstance(v, bool) for v in ints) \
                or not isinstance(isr, list) or not all(isinstance(b, int) and not isinstance(b, bool) for b in isr):
            raise ValueError("a part needs topic (str), partition, leader_epoch, partition_epoch (int) and isr (list of int)")
        return cls(topic, partition, epoch, pepoch, sorted(set(isr)))

    def to_wire(self) -> dict:
        return {"topic": self.topic, "partition": self.partition, "leader_epoch": self.leader_epoch,
                "partition_epoch": self.partition_epoch, "isr": list(self.isr)}


def judge(change: IsrChange, broker_id: int, topics: dict[str, TopicState], alive: set[int]) -> tuple[int, str]:
    """Apply ``change`` to ``topics`` if it may be applied. Returns (error code, message); code 0
    means applied (or already in place). The caller commits once for the whole request."""
    topic = topics.get(change.topic)
    if topic is None or not 0 <= change.partition < len(topic.partitions):
        return P.UNKNOWN_TOPIC_OR_PARTITION, f"no partition {change.topic}-{change.partition}"
    ps = topic.partitions[change.partition]
    if broker_id != ps.leader:
        return P.FENCED_LEADER_EPOCH, f"leader is {ps.leader} at epoch {ps.leader_epoch}"
    isr = [b for b in change.isr if b in ps.replicas]
    if isr == sorted(ps.isr):
        return 0, ""  # a retry of a change already applied, or no change
    if change.leader_epoch != ps.leader_epoch or change.partition_epoch != ps.partition_epoch:
        # computed from an ISR we have changed since (e.g. a dead broker dropped): it could
        # re-admit a broker that is behind; the leader refreshes and recomputes
        return P.STALE_ISR, (f"proposal from leader epoch {change.leader_epoch} partition epoch "
                             f"{change.partition_epoch}; it is {ps.leader_epoch}/{ps.partition_epoch}, isr {ps.isr}")
    grown = set(isr) - set(ps.isr)
    if ps.leader not in isr or any(b not in alive for b in grown):
        return P.INVALID_ISR, "the ISR must contain the leader and only live brokers"
    log.info("%s-%d isr %s -> %s", change.topic, change.partition, ps.isr, isr)
    ps.isr = isr
    return 0, ""


def result(change: IsrChange, code: int, message: str, ps: PartitionState | None) -> dict:
    """One part of the reply: the committed state of the partition (after the commit)."""
    out: dict[str, Any] = {"topic": change.topic, "partition": change.partition, "error": code, "message": message}
    if ps is not None:
        out.update(leader=ps.leader, leader_epoch=ps.leader_epoch, partition_epoch=ps.partition_epoch,
                   isr=list(ps.isr))
    return out
