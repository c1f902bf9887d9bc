"""How many Python calls a node's reactor thread makes per request: cProfile, switched by signals.

Off unless the environment names a directory in ``LOOM_CALLCOUNT`` when the node starts
(``install``, called by ``nodes.base.Node.run``): then SIGUSR1 starts a ``cProfile.Profile`` on
the reactor's thread (the main thread, where Python runs signal handlers) and SIGUSR2 stops it
and writes its statistics (``pstats`` form) to ``<directory>/<pid>.calls``; ``<pid>.started``
says that it started. ``loom bench rtt
--loom --calls`` (``bench.rtt``) signals every broker around its measured requests and divides
the calls by the requests: a count that a noisy machine does not change, unlike a time.

The profiler sees the thread that enabled it only: the interval flusher and libzmq's threads
are not counted. Its own overhead (about 4x slower Python) makes the times it records worthless;
only the counts are read. Off, nothing is installed and nothing costs.

Not thread-safe: the handlers run on the main thread, between two of its bytecodes.
"""

from __future__ import annotations

import cProfile
import os
import signal
from pathlib import Path
from typing import Any

ENV = "LOOM_CALLCOUNT"
SUFFIX = ".calls"
STARTED_SUFFIX = ".started"
START_SIGNAL = signal.SIGUSR1
STOP_SIGNAL = signal.SIGUSR2

_profile: cProfile.Profile | None = None


def install() -> bool:
    """Install the signal handlers when ``LOOM_CALLCOUNT`` names a directory; False if not."""
    directory = os.environ.get(ENV)
    if not directory:
        return False

    def _start(signum: int, frame: Any) -> None:
        global _profile
        if _profile is None:
            _profile = cProfile.Profile()
            _profile.enable()
            (Path(directory) / f"{os.getpid()}{STARTED_SUFFIX}").touch()  # the caller waits for it

    def _stop(signum: int, frame: Any) -> None:
        global _profile
        if _profile is None:
            return
        profile, _profile = _profile, None
        profile.disable()
        path = Path(directory) / f"{os.getpid()}{SUFFIX}"
        tmp = path.with_suffix(".tmp")
        profile.dump_stats(tmp)
        tmp.rename(path)  # whole or absent: the reader waits for the name

    signal.signal(START_SIGNAL, _start)
    signal.signal(STOP_SIGNAL, _stop)
    return True
