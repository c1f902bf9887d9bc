"""The broker's flusher thread: runs the storage engines' interval flush jobs off the reactor.

Under fsync ``interval`` the reactor used to fdatasync every partition appended to lately once
per ``fsync_interval_ms``, stalling every request and replication message for milliseconds.
Engines that offer ``flush_job``/``flush_done`` (``engines.api.AsyncFlush``; the segment engine,
``engines/segment_flush.py``) now hand the reactor a job; ``BrokerCore.flush_due``
(``nodes/broker/core_timers.py``) submits it here, one thread per broker runs the jobs in order
(``os.fdatasync``/``os.fsync`` release the GIL), and the reactor collects completions in a
per-pass hook (``BrokerCore.collect_flushes``; a deque, cheap when empty) and applies each with
``engine.flush_done`` on its own thread.

Bounds: at most FLUSH_JOBS_MAX jobs outstanding (queued, running, or completed and not yet
collected); ``submit`` refuses more (the partition is flushed at a later tick). ``stop`` discards
the queued jobs (closing their descriptors) and waits at most FLUSHER_STOP_TIMEOUT_S for the
running one; the thread is a daemon, so an fsync stuck in the kernel cannot keep the process
from exiting. The thread starts at the first job (a broker whose engine has no asynchronous
flush, or fsync ``always``/``never``, never starts it).

Thread-safety: ``submit``, ``completed`` and ``stop`` are called by the reactor thread only;
the flusher thread touches only the queue (under the condition) and the completion deque.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Protocol

from engines.errors import LoomError

log = logging.getLogger(__name__)

FLUSH_JOBS_MAX = 1024  # jobs outstanding at once (each holds a few dup'd descriptors)
FLUSHER_STOP_TIMEOUT_S = 5.0  # how long stop() waits for the job the thread is running


class Job(Protocol):
    def run(self) -> None:
        """Run on the flusher thread; never raises (errors are kept for the owner)."""

    def discard(self) -> Any:
        """Release the job's resources without running it (idempotent; never raises)."""


class Flusher:
    """One thread running flush jobs in submission order; completions come back as (tag, job)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._queue: deque[tuple[Any, Job]] = deque()  # guarded by _cond
        self._done: deque[tuple[Any, Job]] = deque()  # appended by the thread, popped by the reactor
        self._outstanding = 0  # reactor-side count: submitted and not yet collected
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None  # a job's programmer error, for the reactor

    @property
    def outstanding(self) -> int:
        return self._outstanding

    def has_room(self) -> bool:
        return self._outstanding < FLUSH_JOBS_MAX and not self._stopping

    def submit(self, tag: Any, job: Job) -> bool:
        """Queue ``job``; False (the job untouched, the caller discards it) when FLUSH_JOBS_MAX
        are outstanding or the flusher is stopping."""
        if not self.has_room():
            return False
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"{self.name}-flusher", daemon=True)
            self._thread.start()
        with self._cond:
            self._queue.append((tag, job))
            self._cond.notify()
        self._outstanding += 1
        return True

    def completed(self) -> list[tuple[Any, Job]]:
        """The jobs run since the last call, in the order they ran (empty list when none).
        Raises the programmer error a job raised on the thread (not an ``OSError`` or
        ``LoomError``, which the job's owner hears of through ``flush_done``): on the reactor's
        thread it stops the node, which restarts from disk, as every bug does."""
        if self.failure is not None:
            raise self.failure
        if not self._done:
            return []
        out = []
        while self._done:
            out.append(self._done.popleft())
        self._outstanding -= len(out)
        return out

    def stop(self, timeout_s: float = FLUSHER_STOP_TIMEOUT_S) -> bool:
        """Discard queued jobs and wait up to ``timeout_s`` for the running one. Returns whether
        the thread ended (or never started). Idempotent."""
        with self._cond:
            self._stopping = True
            queued = list(self._queue)
            self._queue.clear()
            self._cond.notify()
        for _, job in queued:
            job.discard()
        self._outstanding -= len(queued)
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("flusher thread still in a flush after %.1f s at shutdown; not waiting longer", timeout_s)
            return False
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                tag, job = self._queue.popleft()
            try:
                job.run()
            except BaseException as e:  # a job that broke its promise: still handed back, thread kept
                log.exception("flush job %r raised on the flusher thread", tag)
                if not isinstance(e, (OSError, LoomError)) and self.failure is None:
                    self.failure = e  # a bug: raised on the reactor by ``completed``, which stops the node
            self._done.append((tag, job))
