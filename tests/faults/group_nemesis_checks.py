"""The group nemesis's checks of what its members journaled and what its observer saw
(``tests/faults/group_nemesis.py``). Pure functions: each appends what it finds to
``violations`` and returns its counts for the run's report.

The final log (``check_delivered_in_log``) is read by ``group_nemesis`` once every replica is healed.
Journal events (``group_nemesis_member``): ``assign`` (inc, seq, gen, positions), ``recs`` (inc,
seq, recs: [partition, offset, value]), ``commit-sent`` and ``commit`` (offsets, ok), with the
time ``t`` each was written. Observer samples: (time, {partition: committed}, {partition: end}).
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Iterator

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


def check_sessions(events: list[dict], violations: list[str]) -> dict:
    """Within one assignment of one member process, each partition's offsets go up by one."""
    last: dict[tuple[str, int, int], tuple[int, dict]] = {}
    redelivered = 0
    seen_by: dict[tuple[int, int], int] = defaultdict(int)
    for e in events:
        if e["ev"] != "recs":
            continue
        for p, off, _ in e["recs"]:
            seen_by[(p, off)] += 1
            key = (e["inc"], e["seq"], p)
            if key in last:
                prev, prev_e = last[key]
                if off != prev + 1:
                    violations.append(f"{e['inc']} assignment {e['seq']} (gen {e['gen']}) partition {p}: offset {off} "
                                      f"after {prev} ({'going back' if off <= prev else 'a gap'})")
            last[key] = (off, e)
    redelivered = sum(1 for n in seen_by.values() if n > 1)
    return {"redelivered_positions": redelivered}


def check_commits(samples: list, final_ends: dict[int, int], violations: list[str]) -> dict:
    best: dict[int, tuple[int, float]] = {}
    above_end = 0
    for t, committed, ends in samples:
        for p, off in committed.items():
            if p in best and off < best[p][0]:
                violations.append(f"committed offset of partition {p} went back from {best[p][0]} "
                                  f"(seen {time.strftime('%H:%M:%S', time.localtime(best[p][1]))}) to {off} "
                                  f"(seen {time.strftime('%H:%M:%S', time.localtime(t))})")
            if p not in best or off > best[p][0]:
                best[p] = (off, t)
            if off > final_ends.get(p, 0):
                violations.append(f"committed offset {off} of partition {p} beyond its final log end {final_ends.get(p)}")
            elif p in ends and off > ends[p]:
                above_end += 1  # a log end read from a leader whose HW lags: noted, not a violation
    return {"commit_samples": len(samples), "committed_above_observed_end": above_end}


def _assignment_starts(events: list[dict]) -> Iterator[tuple[dict, int, int]]:
    """(assign event, partition, position) of every partition an assignment started at a known position."""
    for e in events:
        if e["ev"] == "assign":
            for tp, pos in e["positions"].items():
                if pos is not None:
                    yield e, int(tp.rpartition(":")[2]), pos


def check_acked_commits(events: list[dict], violations: list[str], margin_s: float = 1.0) -> dict:
    """An assignment made well after a commit was acknowledged starts at or above it: an
    acknowledged commit is never lost (nor moved back), whoever takes the partition next."""
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
        if pos < off:
            violations.append(f"{e['inc']} assignment {e['seq']} (gen {e['gen']}) started partition {p} at {pos}, "
                              f"below the commit of {off} acknowledged to {who} "
                              f"{e['t'] - t:.1f}s before")
    return {"assignments_checked_against_commits": checked}


def check_assignment_starts(events: list[dict], samples: list, violations: list[str], margin_s: float = 1.0) -> dict:
    """An assignment starts a partition at the committed offset: never above every offset the
    group may have committed by then (sent by a member, or seen by OFFSET_FETCH), and its
    first record delivered is the one at that position (a zombie member delivering the same
    records would otherwise hide a skip from the delivery check)."""
    known: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for e in events:
        if e["ev"] == "commit-sent" or (e["ev"] == "commit" and e["ok"]):
            for tp, off in e["offsets"].items():
                known[int(tp.rpartition(":")[2])].append((e["t"], off))
    for t, committed, _ in samples:
        for p, off in committed.items():
            known[p].append((t, off))
    first: dict[tuple[str, int, int], int] = {}
    for e in events:
        if e["ev"] == "recs":
            for p, off, _ in e["recs"]:
                first.setdefault((e["inc"], e["seq"], p), off)
    checked = 0
    for e, p, pos in _assignment_starts(events):
        checked += 1
        got = first.get((e["inc"], e["seq"], p))
        if got is not None and got != pos:
            violations.append(f"{e['inc']} assignment {e['seq']} (gen {e['gen']}) started partition {p} at {pos} "
                              f"but its first record delivered was {got}")
        best = max((off for t, off in known[p] if t <= e["t"] + margin_s), default=None)
        if best is None or pos > best:
            violations.append(f"{e['inc']} assignment {e['seq']} (gen {e['gen']}) started partition {p} at {pos}, "
                              f"above every offset committed by then ({best})")
    return {"assignment_starts_checked": checked}
