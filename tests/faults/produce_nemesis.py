"""A randomized nemesis for the replicated produce path (exploratory, seedable).

    python -m tests.faults.produce_nemesis --seed 7 [--duration-s 60] [--dir DIR]

Per seed (``produce_nemesis_checks.make_plan``: the same seed, the same plan): a 3-broker
cluster and its coordinator on 127.0.0.1 (free ports) on the segment or the lmdb engine, fsync
``always`` or ``interval`` (a SIGKILL keeps the page cache: nothing acknowledged may be lost
under either), every segment write direct or the default, segments of 8 or 64 KiB (rolled
often) or the default, a page-cache tail of 64 KiB (reads from disk) or the default; a topic of 1 to 6 partitions RF 3
with min.insync.replicas 1, 2 or 3; the fault suite's idempotent acks=all producer writing
unique values (``workload_checker.Workload``) with a linger of 0 to 20 ms and batches of 1 to
1,000 records, in blocks of 40 keyed or (a quarter to three quarters of them) keyless records,
some with a header, some without a callback, timestamps now or held for ten records
(``workload_checker.RecordMix``: the producer's runs of values and its short path); one or two readers -- plain consumers, no group -- reading every partition from
offset 0 throughout; and a nemesis, one fault at a time (seeds divisible by 3) or in three or
four concurrent lanes (one or two of brokers -- two brokers' faults may overlap, never on one
node --, the coordinator, topic administration), that:

- SIGKILLs a partition's leader, a follower, or every broker at once, and restarts them;
- SIGSTOPs a leader (a zombie leader) or a follower past its session, then SIGCONTs it;
- cuts a leader from the coordinator past its session, a follower from its leader or a leader
  from its followers past the replica lag time (the harness's ``faults`` control);
- SIGKILLs a broker, restarts it and kills it again while it catches up;
- restarts every broker in quick succession (each killed once the one before answers), kills
  a partition's leader three to five times in a row (each time the new one, down a moment);
- SIGSTOPs every broker past the session, then SIGCONTs them;
- SIGKILLs a leader while the coordinator is SIGSTOPped, restarting it before the coordinator
  runs again;
- SIGKILLs and SIGSTOPs the coordinator;
- changes the topic's min.insync.replicas under load, and adds partitions to it.

After healing (every node running, every link whole, every replica at the HW) the producer
stops, the readers read up to the HW, the brokers stop and the checker reads every replica
from disk. Violations:

- everything ``workload_checker.check`` asserts: every acknowledged value exactly once at its
  acknowledged offset, the producer's order per partition, replicas byte-identical up to the
  HW, one leader per (partition, epoch), no value that was never sent;
- a reader given a record that is not in the final log at that offset with that value (a
  dirty read above the HW later truncated), a reader's offsets of a partition going back or
  skipping, a reader refused a position it had reached (out of range), a reader that did not
  reach the HW;
- a node that logged a Traceback or exited by itself.

Every process is stopped by its pid at the end; the seed is printed for reproduction. Exit
status 0: no violation; 1: violations (printed); 2: the run itself could not complete.
"""

from __future__ import annotations

import random
import signal
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python tests/faults/produce_nemesis.py): the repository's packages
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fabric.client import Admin  # noqa: E402
from fabric.client.consumer import Consumer  # noqa: E402
from tests.faults import workload_checker as J  # noqa: E402
from tests.faults.nemesis_common import (  # noqa: E402
    LaneNemesis, cut, heal_nodes, kill_and_restart, pause, print_outcome, run_failed, set_blocked,
    tracebacks)
from tests.faults.nemesis_common import main as nemesis_main  # noqa: E402
from tests.faults.produce_nemesis_checks import Fault, Plan, Read, check_reads, make_plan, read_ends  # noqa: E402
from tests.harness import Cluster, make_config, wait_until  # noqa: E402

TOPIC = J.TOPIC


class WatchedCluster(Cluster):
    """A ``Cluster`` that notes a node found exited that nobody killed (``exited``)."""

    def __init__(self, config_path: Path) -> None:
        super().__init__(config_path)
        self.exited: list[str] = []
        self._killed: set[str] = set()

    def _check_exit(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is not None and name not in self._killed:
            self.exited.append(f"{name} had exited by itself (code {proc.returncode})")
            self._killed.add(name)  # noted once

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self._check_exit(name)
        if sig == signal.SIGKILL:
            self._killed.add(name)
        super().kill(name, sig)

    def start_node(self, name: str, wait: bool = True) -> None:
        self._check_exit(name)
        self._killed.discard(name)
        super().start_node(name, wait)


class Reader(threading.Thread):
    """A plain consumer (no group) reading every partition of the topic from offset 0 -- new
    partitions too -- and keeping every record it is given, in order, and every error."""

    def __init__(self, name: str, bootstrap: str) -> None:
        super().__init__(name=name, daemon=True)
        self.bootstrap = bootstrap
        self.reads: list[Read] = []
        self.errors: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        consumer = Consumer(self.bootstrap, auto_offset_reset="none", request_timeout_ms=3000, fetch_wait_ms=200)
        admin = Admin(self.bootstrap, timeout_ms=1000)
        assigned: list[int] = []
        next_look = 0.0
        try:
            while not self._halt.is_set():
                if time.monotonic() >= next_look:  # new partitions (add-partitions) are read from 0
                    next_look = time.monotonic() + 1
                    try:
                        count = len(admin.metadata().topics[TOPIC].partitions)
                    except Exception:
                        count = len(assigned)
                    if count > len(assigned):
                        new = list(range(len(assigned), count))
                        assigned += new
                        consumer.assign([(TOPIC, p) for p in assigned])
                        for p in new:
                            consumer.seek((TOPIC, p), 0)
                try:
                    self.reads += [(r.partition, r.offset, r.value) for r in consumer.poll(200)]
                except Exception as e:  # out of range at a position it was given, a corrupt batch...
                    self.errors.append(f"{time.strftime('%H:%M:%S')} {e!r}")
                    self._halt.wait(0.2)  # pacing the retries, not synchronisation
        finally:
            consumer.close()
            admin.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


class Nemesis(LaneNemesis):
    """Runs the plan's lanes, each fault after the one before, until the duration is over."""

    def __init__(self, cluster: WatchedCluster, plan: Plan, rng: random.Random, duration_s: float) -> None:
        self.c, self.plan, self.duration_s = cluster, plan, duration_s
        self.admin_errors: list[str] = []
        self.busy: set[str] = set()  # the nodes a lane's fault is on (two broker lanes: not the same)
        self._busy_lock = threading.Lock()
        super().__init__([self._lane_of(faults) for faults in plan.lanes], rng)

    def _lane_of(self, faults: tuple[Fault, ...]):  # noqa: ANN202
        def lane(_rng: random.Random) -> None:
            end = time.monotonic() + self.duration_s
            for f in faults:
                if time.monotonic() >= end or self.halted(f.wait_s):
                    return
                self.one_fault(f)
        return lane

    def targets(self, pick: float) -> tuple[int, str, list[str]]:
        """(partition, its leader, its followers) for ``pick``, from the metadata; a broker by
        ``pick`` (and the others as followers) when there is no answer or no leader."""
        brokers = self.c.broker_names()
        try:
            with Admin(self.c.bootstrap, timeout_ms=1000) as admin:
                parts = admin.metadata().topics[TOPIC].partitions
            p = parts[int(pick * len(parts))]
            if p.leader >= 0:
                return p.partition, f"broker-{p.leader}", [f"broker-{r}" for r in p.replicas if r != p.leader]
        except Exception:
            pass
        leader = brokers[int(pick * len(brokers))]
        return -1, leader, [b for b in brokers if b != leader]

    def one_fault(self, f: Fault) -> None:
        if f.kind in ("set-min-isr", "add-partitions"):
            self.alter(f)
            return
        p, leader, followers = self.targets(f.pick)
        follower = followers[int(f.pick * 1000) % len(followers)]
        nodes = {"kill-leader": [leader], "pause-leader": [leader], "cut-leader-from-coordinator": [leader],
                 "kill-follower": [follower], "pause-follower": [follower], "kill-catching-up": [follower],
                 "cut-follower-from-leader": [leader, follower], "isolate-leader": [leader, *followers],
                 "kill-coordinator": ["coordinator"], "pause-coordinator": ["coordinator"],
                 "kill-leader-coordinator-paused": [leader, "coordinator"]}.get(f.kind, self.c.broker_names())
        with self._busy_lock:
            if self.busy & set(nodes):
                self.note(f"{f.kind} on {nodes} skipped: {sorted(self.busy & set(nodes))} under another fault")
                return
            self.busy |= set(nodes)
        try:
            self._fault_on(f, p, leader, followers, follower)
        finally:
            with self._busy_lock:
                self.busy -= set(nodes)

    def _fault_on(self, f: Fault, p: int, leader: str, followers: list[str], follower: str) -> None:
        c, kind = self.c, f.kind
        on = f"(partition {p})"
        if kind == "kill-leader":
            self.note(f"SIGKILL {leader}, the leader {on}, for {f.hold_s:.1f}s")
            kill_and_restart(c, [leader], f.hold_s)
        elif kind == "kill-follower":
            self.note(f"SIGKILL {follower}, a follower {on}, for {f.hold_s:.1f}s")
            kill_and_restart(c, [follower], f.hold_s)
        elif kind == "kill-all-brokers":
            self.note(f"SIGKILL every broker for {f.hold_s:.1f}s")
            kill_and_restart(c, c.broker_names(), f.hold_s)
        elif kind in ("pause-leader", "pause-follower"):
            node = leader if kind == "pause-leader" else follower
            self.note(f"SIGSTOP {node}, the {kind[6:]} {on}, for {f.hold_s:.1f}s")
            pause(c, node, f.hold_s)
        elif kind == "cut-leader-from-coordinator":
            self.note(f"cut {leader}, the leader {on}, from the coordinator for {f.hold_s:.1f}s")
            cut(c, [leader], ["coordinator"], f.hold_s)
        elif kind == "cut-follower-from-leader":
            self.note(f"cut {follower} from {leader}, its leader {on}, for {f.hold_s:.1f}s")
            cut(c, [leader], [follower], f.hold_s)
        elif kind == "isolate-leader":
            self.note(f"cut {leader}, the leader {on}, from {followers} for {f.hold_s:.1f}s")
            cut(c, [leader], followers, f.hold_s)
        elif kind == "kill-catching-up":
            self.note(f"SIGKILL {follower} {on} for {f.hold_s:.1f}s, again {f.again_s:.2f}s after its restart")
            kill_and_restart(c, [follower], f.hold_s)
            time.sleep(f.again_s)
            kill_and_restart(c, [follower], f.hold_s / 2)
        elif kind == "rolling-restart":
            brokers = c.broker_names()
            first = int(f.pick * len(brokers))
            order = brokers[first:] + brokers[:first]
            self.note(f"restart {order} in quick succession ({f.hold_s:.1f}s down each)")
            for b in order:
                kill_and_restart(c, [b], f.hold_s)
                time.sleep(f.again_s)
        elif kind == "bounce-leader":
            self.note(f"SIGKILL the leader {on} {f.value} times in a row, {f.hold_s:.2f}s down each")
            for _ in range(f.value):
                leader = self.targets(f.pick)[1]  # the one elected after the kill before
                kill_and_restart(c, [leader], f.hold_s)
        elif kind == "pause-all-brokers":
            self.note(f"SIGSTOP every broker for {f.hold_s:.1f}s")
            brokers = c.broker_names()
            for b in brokers:
                c.kill(b, signal.SIGSTOP)
            time.sleep(f.hold_s)
            for b in brokers[int(f.pick * 3):] + brokers[:int(f.pick * 3)]:
                c.kill(b, signal.SIGCONT)
        elif kind == "kill-leader-coordinator-paused":
            self.note(f"SIGSTOP coordinator, SIGKILL {leader}, the leader {on}, for {f.hold_s:.1f}s, "
                      f"SIGCONT coordinator {f.again_s:.1f}s after its restart")
            c.kill("coordinator", signal.SIGSTOP)
            try:
                kill_and_restart(c, [leader], f.hold_s)
                time.sleep(f.again_s)
            finally:
                c.kill("coordinator", signal.SIGCONT)
        elif kind == "kill-coordinator":
            self.note(f"SIGKILL coordinator for {f.hold_s:.1f}s")
            kill_and_restart(c, ["coordinator"], f.hold_s)
        elif kind == "pause-coordinator":
            self.note(f"SIGSTOP coordinator for {f.hold_s:.1f}s")
            pause(c, "coordinator", f.hold_s)
        else:
            raise ValueError(f"unknown fault {kind!r}")

    def alter(self, f: Fault) -> None:
        """A topic change under load, asked again for up to 20 s (the coordinator may be down or
        paused); refused all that time (a broker short for new partitions) is noted, not a
        violation. A growth asks for one partition count, so a retry of a growth that took
        effect is refused and the change is not made twice."""
        with Admin(self.c.bootstrap, timeout_ms=3000) as admin:
            try:
                if f.kind == "set-min-isr":
                    self.note(f"set min.insync.replicas to {f.value}")
                    change = {"configs": {"min.insync.replicas": f.value}}
                else:
                    count = len(admin.metadata().topics[TOPIC].partitions) + f.value
                    self.note(f"grow the topic to {count} partitions")
                    change = {"partitions": count}

                def done() -> bool:
                    try:
                        admin.alter_topic(TOPIC, **change)
                        return True
                    except Exception:
                        if "partitions" in change and len(admin.metadata().topics[TOPIC].partitions) >= count:
                            return True
                        raise
                wait_until(done, 20, interval_s=0.5, what=f"the topic change {change}")
            except Exception as e:
                self.note(f"  not done: {e!r}")
                self.admin_errors.append(f"{f.kind}: {e!r}")


def heal_state(cluster: Cluster, admin: Admin) -> str:
    """What the metadata and each broker say of the topic's partitions (a heal that timed out)."""
    out = []
    try:
        for p in admin.metadata().topics[TOPIC].partitions:
            out.append(f"p{p.partition}: leader {p.leader} epoch {p.leader_epoch} isr {p.isr}")
    except Exception as e:
        out.append(f"metadata: {e!r}")
    for b in cluster.broker_names():
        try:
            rows = [r for r in cluster.stats(b)["partitions"] if r["topic"] == TOPIC]
            out.append(f"{b}: " + ", ".join(f"p{r['partition']} {r['role']} leo {r['log_end_offset']} "
                                            f"hw {r['high_watermark']}" for r in rows))
        except Exception as e:
            out.append(f"{b}: {e!r}")
    return "; ".join(out)


def final_logs(cluster: Cluster, hws: dict[int, int]) -> dict[int, dict[int, bytes]]:
    """partition -> offset -> value below the HW, from the first broker's replicas on disk
    (the brokers are stopped; ``workload_checker.check`` compared the replicas)."""
    broker = cluster.broker_names()[0]
    out = {}
    for p, hw in hws.items():
        _, records = J.read_replica(cluster, broker, p)
        out[p] = {r.offset: r.value for r in records if r.offset < hw}
    return out


def run(seed: int, duration_s: float, directory: Path) -> int:
    plan = make_plan(seed, duration_s)
    rng = random.Random(seed)
    print(f"produce nemesis: seed {seed}, {duration_s:.0f}s of faults, in {directory}", flush=True)
    print(f"  {plan.describe()}", flush=True)
    overrides: dict = {"faults": {"enabled": True}}
    storage = {"direct_write_min_bytes": plan.direct_write_min_bytes, "segment_bytes_max": plan.segment_bytes_max,
               "page_cache_tail_bytes": plan.page_cache_tail_bytes}
    overrides["storage"] = {k: v for k, v in storage.items() if v is not None}
    cluster = WatchedCluster(make_config(directory, 3, engine=plan.engine, fsync=plan.fsync, overrides=overrides))
    violations: list[str] = []
    observer = nemesis = None
    readers: list[Reader] = []
    report: dict = {"seed": seed}
    try:
        cluster.start()
        admin, workload, observer = J.setup(
            cluster, configs={"min.insync.replicas": plan.min_insync_replicas}, partitions=plan.partitions,
            rate_per_s=400, keys=40, mix=J.RecordMix(plan.seed, plan.keyless_share),
            producer_options={"linger_ms": plan.linger_ms, "batch_records_max": plan.batch_records_max})
        readers = [Reader(f"reader-{i}", cluster.bootstrap) for i in range(plan.readers)]
        for r in readers:
            r.start()
        nemesis = Nemesis(cluster, plan, rng, duration_s)
        nemesis.start()
        nemesis.join(timeout=duration_s + 180)
        if nemesis.is_alive() or nemesis.error is not None:
            raise RuntimeError(f"the nemesis failed: {nemesis.error!r}")
        heal_nodes(cluster, violations)
        for n in cluster.node_names:
            set_blocked(cluster, n, [])
        try:
            J.wait_healed(cluster, admin, 90, while_writing=True)
        except AssertionError:
            print(f"  not healed: {heal_state(cluster, admin)}", flush=True)
            raise
        workload.wait_acks(200, 60)
        workload.stop()
        hws = J.wait_healed(cluster, admin, 60)
        for r in readers:
            try:
                wait_until(lambda r=r: all(read_ends(r.reads).get(p, 0) >= hw for p, hw in hws.items()), 60,
                           interval_s=0.2, what=f"{r.name} to read up to the HW {hws}")
            except AssertionError as e:
                violations.append(f"{e}: it read up to {read_ends(r.reads)}")
        for r in readers:
            r.stop()
        observer.stop()
        print(f"  healed: HW {hws}, acknowledged {len(workload.acked)}, failed {len(workload.failed)}", flush=True)
        try:
            report.update(J.check(cluster, workload, observer, hws))
        except AssertionError as e:
            violations.append(f"workload check: {e}")
        report.update(check_reads({r.name: r.reads for r in readers}, final_logs(cluster, hws), violations))
        report["faults"] = sum(1 for _, w in nemesis.history if not w.startswith(" ") and "skipped" not in w)
        report["topic_changes_refused"] = len(nemesis.admin_errors)
        admin.close()
    except Exception as e:
        code = run_failed(seed, e, violations)
    else:
        code = 0
    finally:
        for r in readers:
            r.stop()
        if nemesis is not None:
            nemesis.stop()
        cluster.stop_all()
    violations += cluster.exited
    violations += [f"reader error: {r.name}: {err}" for r in readers for err in r.errors]
    violations += [f"node log with a Traceback: {t}" for t in tracebacks(cluster)]
    if code == 0 and violations:
        code = 1
    print(f"  report {report}", flush=True)
    return print_outcome(seed, code, violations, nemesis)


def main() -> int:
    return nemesis_main(run, __doc__.splitlines()[0], "produce-nemesis")


if __name__ == "__main__":
    sys.exit(main())
