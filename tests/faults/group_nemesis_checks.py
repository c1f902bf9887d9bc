"""The group nemesis's checks of what its members journaled and what its observer saw
(``tests/faults/group_nemesis.py``). Pure functions: each appends what it finds to
``violations`` and returns its counts for the run's report.

The final log (``check_delivered_in_log``) is read by ``group_nemesis`` once every replica is healed.
Journal events (``group_nemesis_member``): ``assign`` (inc, seq, gen, positions), ``recs`` (inc,
seq, recs: [partition, offset, value]), ``commit-sent`` and ``commit`` (offsets, ok), with the
time ``t`` each was written. Observer samples: (time, {partition: committed}, {partition: end}).

Unclean mode (``unclean_at``: partition -> wall times of its unclean elections, read from the
coordinator's log by ``unclean_elections``; None in the normal mode, whose checks it leaves as
they were): an unclean election loses acknowledged records and writes other records at their
offsets, so what must still hold is judged against the final log -- ``check_final_log_delivered``
in place of ``check_deliveries`` and ``check_delivered_in_log`` -- and what the election moves
back is excused only where one happened (see each check). ``check_commits`` also takes the
truncations of the partitions' replicas (``cuts``: partition -> (wall time, log end, offset cut
to), read from the brokers' logs by ``truncations``): a committed offset past the final log end
is excused only where a replica that held it was cut under it after such an election.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from typing import Iterator

UNCLEAN_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \S+ \S+: (\S+)-(\d+): UNCLEAN election of broker",
                          re.MULTILINE)
# nodes/broker/partition_follower.py's warning as a replica cuts its log to the leader's
TRUNCATION_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \S+ \S+: (\S+)-(\d+): truncating from (\d+) "
                             r"to (\d+)$", re.MULTILINE)
MARGIN_S = 1.0  # the journal's, the observer's and the log's clocks are one, but each writes a little late
# unclean mode: how long after an election a commit may still be of a position read before it (a
# member that was stopped, stalled or not fetching): one going back is excused this far back
STALE_POSITION_S = 30.0


def _wall_s(m: re.Match) -> float:
    """The wall time (seconds since the epoch) of a log line ``m`` matched (groups 1 and 2)."""
    return time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000


def unclean_elections(coordinator_log: str, topic: str) -> dict[int, list[float]]:
    """partition -> wall times (seconds since the epoch) of the unclean elections of ``topic``'s
    partitions that ``coordinator_log`` (nodes.coordinator.election's warnings) tells of."""
    out: dict[int, list[float]] = defaultdict(list)
    for m in UNCLEAN_LINE.finditer(coordinator_log):
        if m.group(3) == topic:
            out[int(m.group(4))].append(_wall_s(m))
    return dict(out)


def truncations(broker_log: str, topic: str) -> dict[int, list[tuple[float, int, int]]]:
    """partition -> (wall time, log end before, offset cut to) of every truncation of a replica of
    ``topic``'s partitions that ``broker_log`` (nodes.broker.partition_follower's warnings) tells of."""
    out: dict[int, list[tuple[float, int, int]]] = defaultdict(list)
    for m in TRUNCATION_LINE.finditer(broker_log):
        if m.group(3) == topic:
            out[int(m.group(4))].append((_wall_s(m), int(m.group(5)), int(m.group(6))))
    return dict(out)


def _unclean_between(unclean_at: dict[int, list[float]] | None, p: int, after: float, until: float) -> bool:
    """An unclean election of ``p`` later than ``after`` and not later than ``until`` (MARGIN_S either side)."""
    return unclean_at is not None and any(after - MARGIN_S < u <= until + MARGIN_S for u in unclean_at.get(p, ()))


def members_behind(events: list[dict], want: set[tuple[int, int, str]], at_offset: bool) -> dict[int, tuple[int, int]]:
    """partition -> (how many of ``want``, records as (partition, offset, value), no member has
    delivered yet, the lowest offset among them): by value (the normal mode: an acknowledged
    record is unique by its value) or, ``at_offset``, that value at that offset (unclean mode:
    the log's records up to its HWs). Empty once the members read everything wanted."""
    if at_offset:
        got: set = {(p, off, v) for e in events if e["ev"] == "recs" for p, off, v in e["recs"]}
        missing = [(p, off) for p, off, v in want if (p, off, v) not in got]
    else:
        got = {v for e in events if e["ev"] == "recs" for _, _, v in e["recs"]}
        missing = [(p, off) for p, off, v in want if v not in got]
    behind: dict[int, tuple[int, int]] = {}
    for p, off in missing:
        count, lowest = behind.get(p, (0, off))
        behind[p] = (count + 1, min(lowest, off))
    return behind


def check_deliveries(events: list[dict], acked: dict[bytes, tuple[int, int]], violations: list[str]) -> dict:
    delivered: dict[tuple[int, int], str] = {}
    for e in events:
        if e["ev"] == "recs":
            for p, off, value in e["recs"]:
                prev = delivered.setdefault((p, off), value)
                if prev != value:
                    violations.append(f"two values delivered at {p}@{off}: {prev} and {value}")
    values = {v: pos for pos, v in delivered.items()}
    skipped = []
    for value, (p, off) in acked.items():
        got = values.get(value.decode())
        if got is None:
            skipped.append((p, off, value.decode()))
        elif off >= 0 and got != (p, off):
            violations.append(f"{value!r} acknowledged at {p}@{off} but delivered at {got}")
    if skipped:
        skipped.sort()
        violations.append(f"{len(skipped)} acknowledged records never delivered, e.g. {skipped[:10]}")
    return {"delivered_positions": len(delivered), "skipped": len(skipped)}


def check_delivered_in_log(events: list[dict], final_log: dict[tuple[int, int], str], violations: list[str]) -> dict:
    """Every record delivered is the one the final log (``final_log``: (partition, offset) ->
    value, read once every replica is healed) holds at its offset: no member read past the high
    watermark a record a failover then truncated (a dirty read). ``check_deliveries`` starts from
    the acknowledged records, so it saw one only where the offset later held an acknowledged
    record that was delivered too (two values) or never (a skip) -- not one whose offset was
    written again by a write the producer never learnt the outcome of, nor one past the final
    log end."""
    wrong: dict[tuple[int, int], tuple[str, str | None]] = {}
    checked = 0
    for e in events:
        if e["ev"] != "recs":
            continue
        for p, off, value in e["recs"]:
            checked += 1
            held = final_log.get((p, off))
            if held != value:
                wrong.setdefault((p, off), (value, held))
    if wrong:
        shown = [f"{p}@{off}: delivered {v!r}, the log holds {h!r}" for (p, off), (v, h) in sorted(wrong.items())[:10]]
        violations.append(f"{len(wrong)} records delivered that the final log does not hold there (dirty reads), "
                          f"e.g. {'; '.join(shown)}")
    return {"deliveries_checked_against_the_log": checked}


def check_sessions(events: list[dict], violations: list[str], unclean_at: dict[int, list[float]] | None = None) -> dict:
    """Within one assignment of one member process, each partition's offsets go up by one.
    Unclean mode: an offset at or below the one before is a move back to where the member's log
    and the new leader's part (KIP-320), excused where an unclean election of the partition
    happened between the two reads (counted: ``moved_back``); a gap is never excused."""
    last: dict[tuple[str, int, int], tuple[int, dict]] = {}
    redelivered = moved_back = 0
    seen_by: dict[tuple[int, int], int] = defaultdict(int)
    for e in events:
        if e["ev"] != "recs":
            continue
        for p, off, _ in e["recs"]:
            seen_by[(p, off)] += 1
            key = (e["inc"], e["seq"], p)
            if key in last:
                prev, prev_e = last[key]
                if off <= prev and _unclean_between(unclean_at, p, prev_e["t"], e["t"]):
                    moved_back += 1
                elif off != prev + 1:
                    violations.append(f"{e['inc']} assignment {e['seq']} (gen {e['gen']}) partition {p}: offset {off} "
                                      f"after {prev} ({'going back' if off <= prev else 'a gap'})")
            last[key] = (off, e)
    redelivered = sum(1 for n in seen_by.values() if n > 1)
    report = {"redelivered_positions": redelivered}
    if unclean_at is not None:
        report["moved_back"] = moved_back
    return report


def _cut_under(unclean_at: dict[int, list[float]] | None, cuts: dict[int, list[tuple[float, int, int]]] | None,
               p: int, offset: int, seen: float) -> bool:
    """An unclean election of ``p`` after ``seen`` (less STALE_POSITION_S: a commit seen then may be
    of a position read before it, or its append may have been in flight across it), and after that
    election a replica of ``p`` whose log held ``offset`` (its log end at or past it) cut under it."""
    if unclean_at is None or cuts is None:
        return False
    return any(u > seen - STALE_POSITION_S - MARGIN_S and t > u - MARGIN_S and end >= offset > to
               for u in unclean_at.get(p, ()) for t, end, to in cuts.get(p, ()))


def check_commits(samples: list, final_ends: dict[int, int], violations: list[str],
                  unclean_at: dict[int, list[float]] | None = None,
                  cuts: dict[int, list[tuple[float, int, int]]] | None = None) -> dict:
    """Committed offsets never go back nor past the final log end. Unclean mode: going back is
    excused where an unclean election of the partition happened between the two samples, or up
    to STALE_POSITION_S before the higher one -- a member moved back at the divergence commits
    below what it (or the group) committed on the log before, and that commit may be of a
    position read before the election (counted: ``commits_back_at_an_unclean_election``). Past
    the final log end is excused where the offset was committed on records the election then
    lost: an unclean election of the partition came after the offset was first seen (less
    STALE_POSITION_S), and after it a replica whose log held the offset was cut under it
    (``cuts``: partition -> (wall time, log end, offset cut to), from ``truncations``; counted
    once per offset: ``commits_cut_by_an_unclean_election``) -- the log may grow back less than
    it lost before the run ends. A commit past every replica's log end, or cut under with no
    unclean election after it (a clean election loses no committed record), is still a
    violation."""
    best: dict[int, tuple[int, float]] = {}
    since: dict[int, tuple[int, float]] = {}  # partition -> (committed offset, when first seen so)
    above_end = back = 0
    cut: set[tuple[int, int]] = set()
    for t, committed, ends in samples:
        for p, off in committed.items():
            if p not in since or since[p][0] != off:
                since[p] = (off, t)
            if p in best and off < best[p][0] and _unclean_between(unclean_at, p, best[p][1] - STALE_POSITION_S, t):
                back += 1
                best[p] = (off, t)
            elif p in best and off < best[p][0]:
                violations.append(f"committed offset of partition {p} went back from {best[p][0]} "
                                  f"(seen {time.strftime('%H:%M:%S', time.localtime(best[p][1]))}) to {off} "
                                  f"(seen {time.strftime('%H:%M:%S', time.localtime(t))})")
            if p not in best or off > best[p][0]:
                best[p] = (off, t)
            if off > final_ends.get(p, 0):
                if _cut_under(unclean_at, cuts, p, off, since[p][1]):
                    cut.add((p, off))
                else:
                    violations.append(f"committed offset {off} of partition {p} beyond its final log end {final_ends.get(p)}")
            elif p in ends and off > ends[p]:
                above_end += 1  # a log end read from a leader whose HW lags: noted, not a violation
    report = {"commit_samples": len(samples), "committed_above_observed_end": above_end}
    if unclean_at is not None:
        report["commits_back_at_an_unclean_election"] = back
        report["commits_cut_by_an_unclean_election"] = len(cut)
    return report


def _assignment_starts(events: list[dict]) -> Iterator[tuple[dict, int, int]]:
    """(assign event, partition, position) of every partition an assignment started at a known position."""
    for e in events:
        if e["ev"] == "assign":
            for tp, pos in e["positions"].items():
                if pos is not None:
                    yield e, int(tp.rpartition(":")[2]), pos


def check_acked_commits(events: list[dict], violations: list[str], margin_s: float = 1.0,
                        unclean_at: dict[int, list[float]] | None = None) -> dict:
    """An assignment made well after a commit was acknowledged starts at or above it: an
    acknowledged commit is never lost (nor moved back), whoever takes the partition next.
    Unclean mode: below it is excused where an unclean election of the partition happened
    between the commit (less STALE_POSITION_S) and the assignment (as in ``check_commits``)."""
    acked: dict[int, list[tuple[float, int, str]]] = defaultdict(list)
    for e in events:
        if e["ev"] == "commit" and e["ok"]:
            for tp, off in e["offsets"].items():
                acked[int(tp.rpartition(":")[2])].append((e["t"], off, e["inc"]))
    checked = 0
    for e, p, pos in _assignment_starts(events):
        before = [(t, off, who) for t, off, who in acked[p] if t + margin_s < e["t"]]
        if not before:
            continue
        checked += 1
        t, off, who = max(before, key=lambda x: x[1])
        if pos < off and not _unclean_between(unclean_at, p, t - STALE_POSITION_S, e["t"]):
            violations.append(f"{e['inc']} assignment {e['seq']} (gen {e['gen']}) started partition {p} at {pos}, "
                              f"below the commit of {off} acknowledged to {who} "
                              f"{e['t'] - t:.1f}s before")
    return {"assignments_checked_against_commits": checked}


def check_assignment_starts(events: list[dict], samples: list, violations: list[str], margin_s: float = 1.0,
                            unclean_at: dict[int, list[float]] | None = None) -> dict:
    """An assignment starts a partition at the committed offset: never above every offset the
    group may have committed by then (sent by a member, or seen by OFFSET_FETCH), and its
    first record delivered is the one at that position (a zombie member delivering the same
    records would otherwise hide a skip from the delivery check). Unclean mode: a first record
    below the position is excused where an unclean election of the partition happened before it
    (the first fetch named the committed epoch and the leader answered where the logs part)."""
    known: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for e in events:
        if e["ev"] == "commit-sent" or (e["ev"] == "commit" and e["ok"]):
            for tp, off in e["offsets"].items():
                known[int(tp.rpartition(":")[2])].append((e["t"], off))
    for t, committed, _ in samples:
        for p, off in committed.items():
            known[p].append((t, off))
    first: dict[tuple[str, int, int], tuple[int, float]] = {}
    for e in events:
        if e["ev"] == "recs":
            for p, off, _ in e["recs"]:
                first.setdefault((e["inc"], e["seq"], p), (off, e["t"]))
    checked = 0
    for e, p, pos in _assignment_starts(events):
        checked += 1
        got, got_t = first.get((e["inc"], e["seq"], p), (None, 0.0))
        if got is not None and got < pos and _unclean_between(unclean_at, p, 0.0, got_t):
            pass  # moved back at the divergence
        elif got is not None and got != pos:
            violations.append(f"{e['inc']} assignment {e['seq']} (gen {e['gen']}) started partition {p} at {pos} "
                              f"but its first record delivered was {got}")
        best = max((off for t, off in known[p] if t <= e["t"] + margin_s), default=None)
        if best is None or pos > best:
            violations.append(f"{e['inc']} assignment {e['seq']} (gen {e['gen']}) started partition {p} at {pos}, "
                              f"above every offset committed by then ({best})")
    return {"assignment_starts_checked": checked}


def check_final_log_delivered(events: list[dict], final_log: dict[tuple[int, int], str], starts: dict[int, int],
                              acked: dict[bytes, tuple[int, int]], violations: list[str]) -> dict:
    """Unclean mode's delivery check: every record of the final log (``final_log``: (partition,
    offset) -> value, read once every replica is healed) at or above the offset the group's
    reading of its partition started at (``starts``) was delivered, that value at that offset, to
    some member or the fresh one -- an unclean election loses records, but the group skips none
    of what is left. Acknowledged records the final log lacks (``acked_lost``: lost by an
    election, as unclean election allows) and deliveries of records it does not hold there
    (``delivered_not_in_final_log``: read from a leader whose log an election then cut; with an
    ISR of the leader alone, its HW is its log end, so this is not told apart from a dirty read)
    are counted, not violations."""
    by_partition: dict[int, list[int]] = defaultdict(list)
    for p, off in final_log:
        by_partition[p].append(off)
    for p, offsets in sorted(by_partition.items()):  # its reader skipped none (else those would go unchecked)
        if len(offsets) != max(offsets) - min(offsets) + 1:
            violations.append(f"the final log of partition {p} as read has holes: {len(offsets)} records "
                              f"from {min(offsets)} to {max(offsets)}")
    delivered: set[tuple[int, int, str]] = set()
    for e in events:
        if e["ev"] == "recs":
            delivered.update((p, off, v) for p, off, v in e["recs"])
    checked = 0
    skipped = []
    for (p, off), value in final_log.items():
        if off < starts.get(p, 0):
            continue
        checked += 1
        if (p, off, value) not in delivered:
            skipped.append((p, off, value))
    if skipped:
        skipped.sort()
        violations.append(f"{len(skipped)} records of the final log at or above the group's start never delivered, "
                          f"e.g. {skipped[:10]}")
    held = set(final_log.values())
    return {"final_log_records_checked": checked, "skipped": len(skipped),
            "acked_lost": sum(1 for v in acked if v.decode() not in held),
            "delivered_not_in_final_log": len({(p, off, v) for p, off, v in delivered if final_log.get((p, off)) != v})}
