"""The group assignors: every partition to exactly one subscribed member, balanced; sticky
keeps what it can."""

from __future__ import annotations

import pytest

from nodes.coordinator.assignors import assign


def _check(result: dict, subs: dict, counts: dict) -> None:
    owned = sorted(tp for tps in result.values() for tp in tps)
    wanted = sorted((t, p) for t in counts for p in range(counts[t]) if any(t in s for s in subs.values()))
    assert owned == wanted
    for m, tps in result.items():
        assert all(t in subs[m] for t, _ in tps)


@pytest.mark.parametrize("strategy", ["range", "round-robin", "sticky"])
def test_every_partition_once_and_balanced(strategy: str) -> None:
    subs = {"a": ["t", "u"], "b": ["t", "u"], "c": ["t", "u"]}
    counts = {"t": 4, "u": 3}
    result = assign(strategy, subs, counts)
    _check(result, subs, counts)
    sizes = sorted(len(v) for v in result.values())
    assert sizes[-1] - sizes[0] <= (2 if strategy == "range" else 1)


def test_range_gives_contiguous_ranges() -> None:
    assert assign("range", {"a": ["t"], "b": ["t"]}, {"t": 3}) == {"a": [("t", 0), ("t", 1)], "b": [("t", 2)]}


def test_sticky_keeps_partitions_across_rebalances() -> None:
    counts = {"t": 6}
    before = assign("sticky", {"a": ["t"], "b": ["t"]}, counts)
    after = assign("sticky", {"a": ["t"], "b": ["t"], "c": ["t"]}, counts, before)
    _check(after, {"a": ["t"], "b": ["t"], "c": ["t"]}, counts)
    assert all(len(v) == 2 for v in after.values())
    assert set(after["a"]) <= set(before["a"]) and set(after["b"]) <= set(before["b"])
    gone = assign("sticky", {"a": ["t"], "c": ["t"]}, counts, after)  # b leaves: only its partitions move
    assert set(after["a"]) <= set(gone["a"]) and set(after["c"]) <= set(gone["c"])


def test_members_only_get_topics_they_subscribe_to() -> None:
    subs = {"a": ["t"], "b": ["u"]}
    for strategy in ("range", "round-robin", "sticky"):
        result = assign(strategy, subs, {"t": 2, "u": 2})
        _check(result, subs, {"t": 2, "u": 2})
