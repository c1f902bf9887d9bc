"""What the randomized nemeses share (``group_nemesis``, ``produce_nemesis``): the thread that
runs faults one at a time or in concurrent lanes, the node faults themselves (SIGKILL and
restart, SIGSTOP and SIGCONT, links cut through the ``faults`` control), healing a cluster
after the faults, the Traceback scan of the node logs and the command line (one seed a run,
a hard bound on its time).
"""

from __future__ import annotations

import argparse
import random
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from fabric import protocol as P
from tests.harness import Cluster, wait_until


class LaneNemesis(threading.Thread):
    """Runs ``lanes`` -- each a function of its own ``random.Random`` -- in threads of their
    own and waits for them; the first exception of a lane is kept in ``error`` (the runner
    reports it). ``note`` prints and keeps the history of what was done."""

    def __init__(self, lanes: list[Callable[[random.Random], None]], rng: random.Random) -> None:
        super().__init__(name="nemesis", daemon=True)
        self.lanes = lanes
        self.seeds = [rng.random() for _ in lanes]
        self.history: list[tuple[float, str]] = []
        self.error: Exception | None = None
        self._halt = threading.Event()

    def note(self, what: str) -> None:
        self.history.append((time.time(), what))
        print(f"  nemesis {time.strftime('%H:%M:%S')} {what}", flush=True)

    def run(self) -> None:
        threads = [threading.Thread(target=self._lane, args=(lane, random.Random(seed)), daemon=True)
                   for lane, seed in zip(self.lanes, self.seeds)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _lane(self, lane: Callable[[random.Random], None], rng: random.Random) -> None:
        try:
            lane(rng)
        except Exception as e:  # reported by the runner
            self.error = e

    def halted(self, wait_s: float = 0.0) -> bool:
        """Waits ``wait_s`` (the pause between two faults); True once ``stop`` was called."""
        return self._halt.wait(wait_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=60)


def kill_and_restart(cluster: Cluster, nodes: list[str], down_s: float, ready_s: float = 30) -> None:
    """SIGKILL ``nodes`` together, ``down_s`` later start them again and wait until they answer."""
    for n in nodes:
        cluster.kill(n)
    time.sleep(down_s)
    for n in nodes:
        cluster.start_node(n, wait=False)
    for n in nodes:
        cluster.wait_ready(n, ready_s)


def pause(cluster: Cluster, node: str, pause_s: float) -> None:
    """SIGSTOP ``node`` for ``pause_s``, then SIGCONT."""
    cluster.kill(node, signal.SIGSTOP)
    try:
        time.sleep(pause_s)
    finally:
        cluster.kill(node, signal.SIGCONT)


def set_blocked(cluster: Cluster, node: str, names: list[str], timeout_s: float = 30) -> None:
    """Tell ``node`` (``faults.enabled``) to drop what it receives from ``names``; retried until
    it answers (it may be paused or restarting under another lane's fault)."""
    wait_until(lambda: cluster.call(node, P.FAULTS, {"block": names}, timeout_ms=1000) is not None, timeout_s,
               interval_s=0.2, what=f"{node} to take the fault rules {names}")


def cut(cluster: Cluster, side_a: list[str], side_b: list[str], cut_s: float) -> None:
    """Cut every link between ``side_a`` and ``side_b`` for ``cut_s``, then heal it."""
    try:
        for a in side_a:
            set_blocked(cluster, a, side_b)
        for b in side_b:
            set_blocked(cluster, b, side_a)
        time.sleep(cut_s)
    finally:
        for n in [*side_a, *side_b]:
            set_blocked(cluster, n, [])


def heal_nodes(cluster: Cluster, violations: list[str]) -> None:
    """Every node running again: SIGCONT to the running ones, a start for any that is not
    (the nemeses restart what they kill, so such a node exited by itself: a violation)."""
    for name in cluster.node_names:
        if name in cluster.procs and cluster.procs[name].poll() is not None:
            violations.append(f"{name} had exited by itself (code {cluster.procs[name].returncode})")
            cluster.start_node(name)
        elif name in cluster.procs:
            cluster.kill(name, signal.SIGCONT)


def tracebacks(cluster: Cluster) -> list[str]:
    """The first Traceback of each node log that has one (any is a violation)."""
    out = []
    for log in sorted(cluster.log_dir.glob("*.log")):
        text = log.read_text(errors="replace")
        if "Traceback" in text:
            i = text.index("Traceback")
            out.append(f"{log.name}: {text[i:i + 1500]}")
    return out


def run_failed(seed: int, error: Exception, violations: list[str]) -> int:
    """The run itself could not complete: said, kept with the violations; returns exit status 2."""
    print(f"RUN FAILED seed {seed}: {error!r}", flush=True)
    violations.append(f"run error: {error!r}")
    return 2


def print_outcome(seed: int, code: int, violations: list[str], nemesis: LaneNemesis | None) -> int:
    """Print the violations, the faults done and the outcome of the run; returns ``code``."""
    for v in violations:
        print(f"VIOLATION seed {seed}: {v}", flush=True)
    if nemesis is not None:
        print(f"  fault history: {[w for _, w in nemesis.history]}", flush=True)
    print(f"seed {seed}: {'OK' if code == 0 else 'FAIL' if code == 1 else 'ERROR'}", flush=True)
    return code


def main(run: Callable[..., int], description: str, prefix: str, bound_s: int = 420,
         flags: dict[str, str] | None = None) -> int:
    """The command line of a nemesis: ``--seed N [--duration-s S] [--dir DIR]`` and the nemesis's
    own boolean ``flags`` (name -> help; each passed to ``run`` as a keyword argument); the run
    is ended (exit status 2) ``bound_s`` past its duration."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    ap.add_argument("--duration-s", type=float, default=60)
    ap.add_argument("--dir", type=Path, default=None, help="where the cluster lives (default: a temporary directory)")
    for name, text in (flags or {}).items():
        ap.add_argument(f"--{name.replace('_', '-')}", dest=name, action="store_true", help=text)
    args = ap.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix=f"{prefix}-{args.seed}-"))
    directory.mkdir(parents=True, exist_ok=True)
    # a hard bound on the run: the nemesis, healing, the checks
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("the run took too long")))
    signal.alarm(int(args.duration_s) + bound_s)
    return run(args.seed, args.duration_s, directory, **{name: getattr(args, name) for name in flags or {}})
