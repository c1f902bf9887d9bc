"""Topic rules: name and config validation, and the placement of new partitions.

Pure functions; thread-safe.
"""

from __future__ import annotations

import re
from typing import AbstractSet, Any

from fabric import protocol as P
from fabric.errors import RemoteError
from nodes.coordinator.store import PartitionState, new_partitions

TOPIC_NAME_RE = re.compile(rf"^[A-Za-z0-9._-]{{1,{P.TOPIC_NAME_LEN_MAX}}}$")

UNCLEAN_LEADER_ELECTION = "unclean.leader.election.enable"


def _boolean(value: Any) -> bool:
    """True or False, or their words in any case (``--config k=true`` arrives as a string)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(value)


# topic config key -> (parser, check, description)
_CONFIGS: dict[str, tuple[Any, Any, str]] = {
    "retention.ms": (int, lambda v: v >= -1, "an integer >= -1 (milliseconds, -1 = forever)"),
    "retention.bytes": (int, lambda v: v >= -1, "an integer >= -1 (bytes, -1 = unlimited)"),
    "min.insync.replicas": (int, lambda v: v >= 1, "an integer >= 1"),
    "max.message.bytes": (int, lambda v: v >= 1024, "an integer >= 1024"),
    "cleanup.policy": (str, lambda v: v == "delete", "'delete'"),
    # over the cluster's replication.unclean_leader_election for this topic (Kafka's topic config)
    UNCLEAN_LEADER_ELECTION: (_boolean, lambda v: True, "true or false"),
}


def validate_topic_name(name: Any, allow_internal: bool = False) -> str:
    if not isinstance(name, str) or not TOPIC_NAME_RE.match(name):
        shown = repr(name[:P.TOPIC_NAME_LEN_MAX + 1]) + ("..." if len(name) > P.TOPIC_NAME_LEN_MAX + 1 else "") \
            if isinstance(name, str) else repr(name)[:P.TOPIC_NAME_LEN_MAX]
        raise RemoteError(P.INVALID_TOPIC, f"invalid topic name {shown}: use 1-{P.TOPIC_NAME_LEN_MAX} characters of [A-Za-z0-9._-]")
    if name in (".", ".."):
        raise RemoteError(P.INVALID_TOPIC, f"invalid topic name {name!r}")
    if name.startswith(P.INTERNAL_TOPIC_PREFIX) and not allow_internal:
        raise RemoteError(P.INVALID_TOPIC, f"topic names starting with {P.INTERNAL_TOPIC_PREFIX!r} are reserved for internal topics")
    return name


def validate_configs(configs: Any, replication_factor: int) -> dict:
    if configs is None:
        return {}
    if not isinstance(configs, dict):
        raise RemoteError(P.INVALID_CONFIG, "configs must be a map of name to value")
    out = {}
    for key, value in configs.items():
        spec = _CONFIGS.get(key)
        if spec is None:
            raise RemoteError(P.INVALID_CONFIG, f"unknown topic config {key!r} (known: {', '.join(sorted(_CONFIGS))})")
        parse, check, desc = spec
        try:
            parsed = parse(value)
        except (TypeError, ValueError):
            raise RemoteError(P.INVALID_CONFIG, f"{key} must be {desc}, not {value!r}") from None
        if not check(parsed):
            raise RemoteError(P.INVALID_CONFIG, f"{key} must be {desc}, not {value!r}")
        out[key] = parsed
    if out.get("min.insync.replicas", 1) > replication_factor:
        raise RemoteError(P.INVALID_CONFIG, f"min.insync.replicas {out['min.insync.replicas']} is larger than the replication factor {replication_factor}")
    return out


def place_replicas(broker_ids: list[int], partitions: int, replication_factor: int, start: int,
                   first_partition: int = 0) -> list[list[int]]:
    """Leaders round-robin over the brokers from ``start``; each partition's followers are the
    next brokers in the ring, so no broker holds two replicas of one partition."""
    ids = sorted(broker_ids)
    n = len(ids)
    assert 1 <= replication_factor <= n
    return [[ids[(start + p + j) % n] for j in range(replication_factor)]
            for p in range(first_partition, first_partition + partitions)]


def place_partitions(alive: AbstractSet[int], electable: AbstractSet[int], partitions: int, replication_factor: int,
                     start: int, version: int, wall_ms: int, first_partition: int = 0) -> list[PartitionState]:
    """New partitions on the ``alive`` brokers (``place_replicas``: their preferred leaders, the
    first replicas, spread over all of them), made by the change that becomes metadata
    ``version`` at wall time ``wall_ms``, each led by its first replica that is ``electable``.
    A restarted coordinator's grace (a fresh cluster's first start too) takes every broker for
    alive, but one not heard yet may be dead, and would lead nothing until its session ran
    out; one heard leads for now, and the periodic preferred-leader check hands leadership to
    the first replica once that one is in the ISR (placed on the heard brokers alone, the first
    heard led the topic for good). The ISR is the ``electable`` replicas alone (the leader
    among them): a broker not heard yet has fetched nothing, and in the ISR it could be made
    leader with an empty log, the leader truncating what it acknowledged; it joins through the
    leader's ISR expansion once it has caught up. A partition none of whose replicas is
    electable goes to the brokers after an electable one (leaders round-robin over them) rather
    than wait, offline, for a broker that may be dead; with none electable they are made
    offline (leader -1, every replica in the ISR: none holds a record), and elected as an
    offline partition is when the first of their replicas is heard, the ISR then becoming its
    electable replicas (nodes/coordinator/election.py ``on_broker_up``)."""
    ids = sorted(alive)
    lead = sorted(electable & alive)
    made = new_partitions(place_replicas(ids, partitions, replication_factor, start, first_partition), version, wall_ms)
    for p, ps in enumerate(made, first_partition):
        ps.leader = next((b for b in ps.replicas if b in electable), -1)
        if ps.leader < 0 and lead:
            i = ids.index(lead[(start + p) % len(lead)])
            ps.replicas = [ids[(i + j) % len(ids)] for j in range(replication_factor)]
            ps.leader = ps.replicas[0]
        if ps.leader >= 0:
            ps.isr = [b for b in ps.replicas if b in electable]
    return made
