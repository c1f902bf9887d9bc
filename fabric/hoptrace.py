"""Where a request's time goes across processes: timestamps at named points of the hot path.

Off unless the environment names a directory in ``LOOM_HOPTRACE`` when the process starts (or
``enable(directory)`` is called): then every ``mark(point)`` records (CLOCK_MONOTONIC ns, point)
in memory, and the records go to ``<directory>/<pid>.hops`` when the process exits (and every
``FLUSH_MARKS`` marks). CLOCK_MONOTONIC is one clock for every process of a machine, so the
points of one request line up across the client, the leader and the followers -- exactly when
one request is in flight at a time, as in ``loom bench rtt --loom --hops`` (``bench.rtt``),
which reads the files back (``read``) and prints the time between consecutive points.

Off, ``mark`` costs one call and one test (about 50 ns; a produce passes ~15 points). The
points are named ``<where>.<what>``: ``producer.*`` and ``sender.*`` in the client,
``port.*``/``produce.*``/``ack.*`` on the leader, ``replica.*`` on a follower. A point that
hands a message on is marked *before* the send: the receiving thread may run, and mark its own
point, before the sending one runs again.

Thread-safety: ``mark`` appends to a list (atomic under the GIL) from any thread; ``flush``
holds a lock.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from pathlib import Path

ENV = "LOOM_HOPTRACE"
FLUSH_MARKS = 50_000            # written out (appended) when this many are held
SUFFIX = ".hops"

_directory: str | None = os.environ.get(ENV) or None
_marks: list[tuple[int, str]] = []
_flush_lock = threading.Lock()
_now_ns = time.monotonic_ns


def mark(point: str) -> None:
    if _directory is not None:
        _marks.append((_now_ns(), point))
        if len(_marks) >= FLUSH_MARKS:
            flush()


def enable(directory: str | Path) -> None:
    """Trace this process into ``directory`` (child processes: set ``ENV`` in theirs)."""
    global _directory
    _directory = str(directory)


def disable() -> None:
    """Write out what is held and stop tracing this process."""
    global _directory
    flush()
    _directory = None


def flush() -> None:
    """Write out the marks held. A trace that cannot be written (its directory gone, a full
    disk) stops tracing this process: it never stops the process."""
    global _directory
    with _flush_lock:  # two threads flushing at once would write marks twice
        if _directory is None or not _marks:
            return
        held = _marks[:]
        del _marks[:len(held)]  # appends by other threads go after these
        try:
            with open(os.path.join(_directory, f"{os.getpid()}{SUFFIX}"), "a") as f:
                f.write("".join(f"{t} {p}\n" for t, p in held))
        except OSError:
            _directory = None
            _marks.clear()


def read(directory: str | Path) -> dict[int, list[tuple[int, str]]]:
    """Every process's marks in ``directory``: pid -> [(ns, point)] in the order recorded."""
    out: dict[int, list[tuple[int, str]]] = {}
    for path in Path(directory).glob(f"*{SUFFIX}"):
        marks = out.setdefault(int(path.name[:-len(SUFFIX)]), [])
        for line in path.read_text().splitlines():
            t, _, point = line.partition(" ")
            marks.append((int(t), point))
    return out


atexit.register(flush)
