"""``--peer jetstream``: the peer scripts' figure measured in the same invocation as Loom's.

The scripts (``quick_jetstream.sh``: records/s of NATS JetStream R3 with 100-byte acknowledged
publishes; ``quick_jetstream_latency.sh``: its publish-ack p50/p99/p99.9 in ms at 2,000
messages/s offered) live in the shared peer directory. Both start by running ``setup.sh``, which
installs packages when a peer is missing; so a peer counts as installed only when everything
``setup.sh`` checks is already present, and otherwise it is skipped with a message saying what
is missing — a benchmark never installs software.

Not thread-safe (runs the script on the caller's thread).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from bench.options import BenchOptions
from nodes.local_cluster import SOURCE_ROOT

PEER_RUN_S_MAX = 900          # one peer script, including its own 3 runs
PEER_VENV = Path("/tmp/peervenv")  # where the peers' setup.sh puts their clients
SCRIPTS = {"jetstream": ("quick_jetstream.sh", "quick_jetstream_latency.sh")}
PEER_RATE_PER_S = 2000        # the latency script's fixed offered rate


def peer_dir(o: BenchOptions) -> Path | None:
    """The directory holding the scripts: --peer-dir, $LOOM_PEERS_DIR, or shared/bench/peers
    beside the source tree (or its parent's, for a worktree)."""
    candidates = [o.peer_dir, os.environ.get("LOOM_PEERS_DIR"),
                  SOURCE_ROOT.parent / "shared" / "bench" / "peers",
                  SOURCE_ROOT.parent.parent / "shared" / "bench" / "peers"]
    for c in candidates:
        if c and (Path(c) / SCRIPTS["jetstream"][0]).is_file():
            return Path(c)
    return None


def missing() -> list[str]:
    """What ``setup.sh`` would have to install before the script can run (empty: ready)."""
    gaps = []
    if not (PEER_VENV / "bin" / "python").exists():
        gaps.append(f"{PEER_VENV}/bin/python")
    if not (PEER_VENV / "bin" / "nats-server").exists() and shutil.which("nats-server") is None:
        gaps.append("nats-server")
    gaps += [tool for tool in ("redis-server", "rabbitmq-server") if shutil.which(tool) is None]
    return gaps


def run(o: BenchOptions, out: Callable[[str], None] = print) -> dict:
    """The peer's figure: ``{"name", "records_per_s"}`` or ``{"name", "latency_ms"}`` (with
    ``--rate``), or ``{"name", "skipped": why}``."""
    name = o.peer or "jetstream"
    latency = o.rate is not None
    here = peer_dir(o)
    if here is None:
        return _skip(name, "its scripts were not found: give --peer-dir or $LOOM_PEERS_DIR", out)
    gaps = missing()
    if gaps:
        return _skip(name, f"not installed (missing {', '.join(gaps)}); run {here / 'setup.sh'} first", out)
    script = here / SCRIPTS[name][1 if latency else 0]
    out(f"peer {name}: running {script} (this takes a minute or two)")
    try:
        p = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=PEER_RUN_S_MAX)
    except subprocess.TimeoutExpired:
        return _skip(name, f"{script.name} took over {PEER_RUN_S_MAX} s", out)
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        return _skip(name, f"{script.name} failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-300:]}", out)
    return parse_output(name, lines[-1], latency, o.rate)


def parse_output(name: str, last_line: str, latency: bool, rate: int | None) -> dict:
    """The scripts' last line: one number (records/s) or ``p50 p99 p99.9`` (ms)."""
    fields = last_line.split()
    if latency:
        p50, p99, p999 = (float(x) for x in fields[:3])
        doc = {"name": name, "script": SCRIPTS[name][1], "offered_per_s": PEER_RATE_PER_S,
               "latency_ms": {"p50": p50, "p99": p99, "p999": p999}}
        if rate != PEER_RATE_PER_S:
            doc["note"] = f"the peer script offers {PEER_RATE_PER_S}/s; Loom was offered {rate}/s"
        return doc
    return {"name": name, "script": SCRIPTS[name][0], "records_per_s": round(float(fields[0]))}


def _skip(name: str, why: str, out: Callable[[str], None]) -> dict:
    out(f"peer {name}: skipped: {why}")
    return {"name": name, "skipped": why}
