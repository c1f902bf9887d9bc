"""Partition assignment strategies for consumer groups: range, round-robin and sticky.

Each assignor takes the members' subscriptions and the partition counts of the subscribed
topics and returns ``member_id -> sorted [(topic, partition), ...]``. Every partition of a
subscribed topic goes to exactly one member subscribed to that topic. The coordinator runs
them (coordinator-side assignment), so the sticky assignor sees the previous assignment.

Pure functions; thread-safe.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Collection, Mapping

TopicPartition = tuple[str, int]
Assignment = dict[str, list[TopicPartition]]
Subscriptions = Mapping[str, Collection[str]]   # member -> its topics (the coordinator hands in sets)


def range_assign(subscriptions: Subscriptions, partitions: dict[str, int],
                 previous: Assignment | None = None) -> Assignment:
    """Per topic, members (sorted by id) get contiguous ranges; the first ones one more."""
    out: Assignment = {m: [] for m in subscriptions}
    for topic in sorted(partitions):
        members = sorted(m for m, topics in subscriptions.items() if topic in topics)
        if not members:
            continue
        n = partitions[topic]
        per, extra = divmod(n, len(members))
        start = 0
        for i, m in enumerate(members):
            count = per + (1 if i < extra else 0)
            out[m].extend((topic, p) for p in range(start, start + count))
            start += count
    return {m: sorted(tps) for m, tps in out.items()}


def round_robin_assign(subscriptions: Subscriptions, partitions: dict[str, int],
                       previous: Assignment | None = None) -> Assignment:
    """Every partition of every topic, in order, dealt to the members in turn (skipping
    members not subscribed to that partition's topic)."""
    out: Assignment = {m: [] for m in subscriptions}
    members = sorted(subscriptions)
    if not members:
        return out
    i = 0
    for topic in sorted(partitions):
        for p in range(partitions[topic]):
            for _ in range(len(members)):
                m = members[i % len(members)]
                i += 1
                if topic in subscriptions[m]:
                    out[m].append((topic, p))
                    break
    return out


def sticky_assign(subscriptions: Subscriptions, partitions: dict[str, int],
                  previous: Assignment | None = None) -> Assignment:
    """Balanced like round-robin, but a member keeps the partitions it had where possible:
    only the excess of over-full members and the orphans of departed members move."""
    all_tps = [(t, p) for t in sorted(partitions) for p in range(partitions[t])]
    members = sorted(subscriptions)
    out: Assignment = {m: [] for m in members}
    if not members:
        return out
    owner: dict[TopicPartition, str] = {}
    for m, tps in sorted((previous or {}).items()):
        if m not in out:
            continue
        for tp in tps:
            if tp[0] in subscriptions[m] and tp[0] in partitions and tp[1] < partitions[tp[0]] and tp not in owner:
                owner[tp] = m
                out[m].append(tp)
    # quota: as even as the subscriptions allow (exact when everyone subscribes to the same)
    quota_max = -(-len(all_tps) // len(members))
    for m in members:
        out[m].sort()
        while len(out[m]) > quota_max:
            owner.pop(out[m].pop())
    unassigned = [tp for tp in all_tps if tp not in owner]
    for tp in unassigned:
        candidates = [m for m in members if tp[0] in subscriptions[m]]
        if not candidates:
            continue
        m = min(candidates, key=lambda c: (len(out[c]), c))
        out[m].append(tp)
        owner[tp] = m
    _rebalance_sticky(out, subscriptions)
    return {m: sorted(tps) for m, tps in out.items()}


def _rebalance_sticky(out: Assignment, subscriptions: Subscriptions) -> None:
    """Move single partitions from the fullest to the emptiest member while that narrows
    the spread to more than one (bounded: each move strictly reduces the imbalance)."""
    for _ in range(sum(len(v) for v in out.values()) + 1):
        members = sorted(out, key=lambda m: (len(out[m]), m))
        lo, hi = members[0], members[-1]
        if len(out[hi]) - len(out[lo]) <= 1:
            return
        movable = [tp for tp in sorted(out[hi], reverse=True) if tp[0] in subscriptions[lo]]
        if not movable:
            return
        out[hi].remove(movable[0])
        out[lo].append(movable[0])


ASSIGNORS: dict[str, Callable[..., Assignment]] = {
    "range": range_assign,
    "round-robin": round_robin_assign,
    "roundrobin": round_robin_assign,
    "sticky": sticky_assign,
}
DEFAULT_ASSIGNOR = "range"


def assign(strategy: str, subscriptions: Subscriptions, partitions: dict[str, int],
           previous: Assignment | None = None) -> Assignment:
    """Run the named assignor. Raises KeyError for an unknown name (validated at join)."""
    result = ASSIGNORS[strategy](subscriptions, partitions, previous)
    seen: set[TopicPartition] = set()
    for tps in result.values():
        for tp in tps:
            assert tp not in seen, f"{tp} assigned twice by {strategy}"
            seen.add(tp)
    return result


def by_member_counts(assignment: Assignment) -> dict[str, int]:
    """How many partitions each member holds (for logs and describe)."""
    counts: dict[str, int] = defaultdict(int)
    for m, tps in assignment.items():
        counts[m] = len(tps)
    return dict(counts)
