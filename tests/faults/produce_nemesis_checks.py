"""The produce nemesis's pure parts: its plan for a seed (the cluster's settings and the faults
of each lane, the same for the same seed) and the check of what its concurrent readers were
given against the final log.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

SESSION_S = 3.0          # make_config's liveness.session_timeout_ms
REPLICA_LAG_S = 2.0      # make_config's replication.replica_lag_time_max_ms
PARTITIONS_MAX = 8       # the topic never grows past this (add-partitions)

BROKER_KINDS = ("kill-leader", "kill-follower", "kill-all-brokers", "pause-leader", "pause-follower",
                "cut-leader-from-coordinator", "cut-follower-from-leader", "isolate-leader", "kill-catching-up",
                "rolling-restart", "bounce-leader", "pause-all-brokers", "kill-leader-coordinator-paused")
COORDINATOR_KINDS = ("kill-coordinator", "pause-coordinator")
ADMIN_KINDS = ("set-min-isr", "add-partitions")
KINDS = BROKER_KINDS + COORDINATOR_KINDS + ADMIN_KINDS


@dataclass(frozen=True)
class Fault:
    kind: str
    wait_s: float        # before it
    hold_s: float        # down, paused or cut this long (0: not a timed fault)
    pick: float          # in [0, 1): which partition (its leader or a follower) at run time
    value: int = 0       # set-min-isr: the new min.insync.replicas; add-partitions: how many
    again_s: float = 0   # kill-catching-up: the second kill this long after the restart;
    #                      rolling-restart: between one broker ready and the next killed;
    #                      kill-leader-coordinator-paused: the coordinator's SIGCONT this long
    #                      after the leader's restart


@dataclass(frozen=True)
class Plan:
    seed: int
    engine: str                        # segment, lmdb (memory loses everything on restart by design)
    fsync: str                         # always, interval (SIGKILL keeps the page cache: no loss either)
    direct_write_min_bytes: int | None  # None: the default; 0: every segment write direct
    partitions: int
    min_insync_replicas: int
    linger_ms: int
    batch_records_max: int
    readers: int
    concurrent: bool                   # lanes (brokers, coordinator, topic admin) at once, or one lane
    broker_lanes: int                  # concurrent: 1, or 2 (two brokers' faults may overlap)
    segment_bytes_max: int | None      # segment engine: None (the default) or small (rolls often)
    page_cache_tail_bytes: int | None  # segment engine: None (the default) or small (reads from disk)
    lanes: tuple[tuple[Fault, ...], ...]
    keyless_share: float               # of the workload's blocks of records (workload_checker.RecordMix)

    def describe(self) -> str:
        return (f"engine {self.engine}, fsync {self.fsync}, direct writes "
                f"{'every write' if self.direct_write_min_bytes == 0 else 'default'}, {self.partitions} partitions, "
                f"min.insync.replicas {self.min_insync_replicas}, linger {self.linger_ms} ms, batches of at most "
                f"{self.batch_records_max} records, {self.readers} reader(s), "
                f"{f'concurrent lanes ({self.broker_lanes} of brokers)' if self.concurrent else 'one fault at a time'}, "
                f"segments of {self.segment_bytes_max or 'the default'} bytes, page-cache tail "
                f"{self.page_cache_tail_bytes or 'the default'}, keyless records in {self.keyless_share:.0%} of the "
                f"blocks")


def _fault(kind: str, rng: random.Random, waits: tuple[float, float]) -> Fault:
    wait_s = rng.uniform(*waits)
    pick = rng.random()
    if kind in ("pause-leader", "pause-follower", "pause-coordinator", "pause-all-brokers"):
        return Fault(kind, wait_s, SESSION_S + rng.uniform(0.5, 3), pick)
    if kind == "cut-leader-from-coordinator":
        return Fault(kind, wait_s, SESSION_S + rng.uniform(1, 4), pick)
    if kind in ("cut-follower-from-leader", "isolate-leader"):
        return Fault(kind, wait_s, REPLICA_LAG_S + rng.uniform(1, 5), pick)
    if kind == "kill-all-brokers":
        return Fault(kind, wait_s, rng.uniform(0.2, 3), pick)
    if kind == "kill-catching-up":
        return Fault(kind, wait_s, rng.uniform(0.5, 4), pick, again_s=rng.uniform(0.05, 1.5))
    if kind == "bounce-leader":  # value: how many leaders in a row, each down hold_s
        return Fault(kind, wait_s, rng.uniform(0.05, 0.6), pick, value=rng.randint(3, 5))
    if kind == "kill-leader-coordinator-paused":  # the leader back before the coordinator
        return Fault(kind, wait_s, rng.uniform(0.2, 2), pick, again_s=rng.uniform(0, SESSION_S + 2))
    if kind == "rolling-restart":
        return Fault(kind, wait_s, rng.uniform(0.1, 1), pick, again_s=rng.uniform(0, 0.5))
    if kind == "set-min-isr":
        return Fault(kind, wait_s, 0, pick, value=rng.choice((1, 2, 2, 3)))
    if kind == "add-partitions":
        return Fault(kind, wait_s, 0, pick, value=rng.choice((1, 2)))
    return Fault(kind, wait_s, rng.uniform(0.3, 5), pick)  # kill-leader, kill-follower, kill-coordinator


def _nominal_s(f: Fault) -> float:
    """About how long a fault takes (a restart's wait for readiness counted as 1 s)."""
    times = max(1, f.value) if f.kind == "bounce-leader" else 1
    return f.wait_s + (f.hold_s + 1) * times + f.again_s if f.kind.startswith(("kill", "rolling", "bounce")) \
        else f.wait_s + f.hold_s


def _lane(kinds: tuple[str, ...], rng: random.Random, duration_s: float, partitions: int,
          waits: tuple[float, float]) -> tuple[Fault, ...]:
    """Faults of ``kinds`` until about ``duration_s`` is filled, each ``waits`` (a range of
    seconds) after the one before."""
    faults: list[Fault] = []
    total = 0.0
    while total < duration_s:
        kind = rng.choice(kinds)
        if kind == "add-partitions" and partitions >= PARTITIONS_MAX:
            kind = "set-min-isr"
        f = _fault(kind, rng, waits)
        if kind == "add-partitions":
            f = Fault(kind, f.wait_s, 0, f.pick, value=min(f.value, PARTITIONS_MAX - partitions))
            partitions += f.value
        faults.append(f)
        total += _nominal_s(f)
    return tuple(faults)


def make_plan(seed: int, duration_s: float) -> Plan:
    """The settings and faults of a run: a function of the seed and the duration only."""
    rng = random.Random(seed)
    engine = rng.choice(("segment", "lmdb"))
    fsync = rng.choice(("always", "interval"))
    direct = rng.choice((None, 0)) if engine == "segment" else None
    partitions = rng.randint(1, 6)
    min_isr = rng.choice((1, 2, 2, 2, 3))
    linger_ms = rng.choice((0, 1, 5, 20))
    batch_records_max = rng.choice((1, 8, 64, 1000))
    readers = rng.choice((1, 2))
    concurrent = seed % 3 != 0
    broker_lanes = rng.choice((1, 2)) if concurrent else 1
    if concurrent:
        lanes = (*(_lane(BROKER_KINDS, rng, duration_s, partitions, (0.5, 3)) for _ in range(broker_lanes)),
                 _lane(COORDINATOR_KINDS, rng, duration_s, partitions, (2, 8)),
                 _lane(ADMIN_KINDS, rng, duration_s, partitions, (3, 10)))
    else:
        lanes = (_lane(KINDS, rng, duration_s, partitions, (0.5, 3)),)
    # drawn last, so that the settings and faults above stay what they were for a seed
    segment_bytes_max = rng.choice((None, None, 8192, 65536)) if engine == "segment" else None
    page_cache_tail_bytes = rng.choice((None, 65536)) if engine == "segment" else None
    keyless_share = rng.choice((0.25, 0.5, 0.75))
    return Plan(seed, engine, fsync, direct, partitions, min_isr, linger_ms, batch_records_max, readers, concurrent,
                broker_lanes, segment_bytes_max, page_cache_tail_bytes, lanes, keyless_share)


Read = tuple[int, int, bytes]  # (partition, offset, value) as a reader was given it


def check_reads(reads: dict[str, list[Read]], final: dict[int, dict[int, bytes]], violations: list[str],
                shown_max: int = 10) -> dict:
    """Each reader read every partition from offset 0: within one reader, a partition's offsets
    go up by one (none twice, none skipped, never back), and each record it was given is in the
    final log (``final``: partition -> offset -> value, up to the HW) at that offset with that
    value -- nothing read above the HW and later truncated. At most ``shown_max`` violations of
    a reader are listed, then their count."""
    counts = {"read": 0, "dirty_reads": 0, "read_order_breaks": 0}
    for name, records in sorted(reads.items()):
        found: list[str] = []
        expected: dict[int, int] = defaultdict(int)
        for p, offset, value in records:
            counts["read"] += 1
            want = expected[p]
            if offset != want:
                counts["read_order_breaks"] += 1
                found.append(f"{name}: partition {p}: offset {offset} after {want - 1} "
                             f"({'back' if offset < want else 'skipped ' + str(offset - want)})")
            expected[p] = offset + 1
            in_log = final.get(p, {}).get(offset)
            if in_log != value:
                counts["dirty_reads"] += 1
                found.append(f"{name}: partition {p} offset {offset}: read {value!r}, the final log has {in_log!r}")
        violations += found[:shown_max]
        if len(found) > shown_max:
            violations.append(f"{name}: {len(found) - shown_max} more read violations")
    return counts


def read_ends(records: list[Read]) -> dict[int, int]:
    """Partition -> the offset after the last record a reader was given."""
    ends: dict[int, int] = {}
    for p, offset, _ in records:
        ends[p] = max(ends.get(p, 0), offset + 1)
    return ends
