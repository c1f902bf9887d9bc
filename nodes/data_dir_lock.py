"""One process per node data directory, as Kafka's ``.lock`` in every log directory.

Two processes writing one directory -- a second config naming the same ``data_dir``, a node
started by hand beside ``loom up``'s -- would append to the same segment files and replace
each other's checkpoints: recovery cannot undo that. A node takes ``<its data dir>/.lock``
before it opens anything there and holds it until it exits; a second process is refused with
``DataDirInUse`` (``nodes.run`` exits with ``EXIT_DATA_DIR_IN_USE``, which the supervisor
restarts with backoff, as a taken port). The holder's pid is written into the file for the
message.

The lock is a POSIX record lock (``lockf``): the kernel drops it when the process ends, however
it ends (a kill -9 included), so a restarted node never finds its own predecessor's lock. It is
per process, not per descriptor: nodes built twice inside one process (unit tests of a restart)
share it, and closing any descriptor of the file drops it -- only ``unlock_data_dir`` closes one.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from engines.errors import LoomError

LOCK_FILE_NAME = ".lock"


class DataDirInUse(LoomError):
    """Another process holds the data directory's lock. ``pid`` is its pid, when it wrote one."""

    def __init__(self, path: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"data directory {path} is in use by another process ({holder}); is that node "
                         "already running?")
        self.path, self.pid = path, pid


def lock_data_dir(path: Path) -> int:
    """Create ``path`` if needed and take its lock; returns the lock's descriptor (keep it open
    for the process's life). Raises DataDirInUse when another process holds it, OSError when
    the lock file cannot be opened or written."""
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EACCES, errno.EAGAIN):
            raise DataDirInUse(path, _holder_pid(path / LOCK_FILE_NAME)) from None
        raise
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        os.close(fd)
        raise
    return fd


def unlock_data_dir(fd: int) -> None:
    """Let another process use the directory (a node's clean close)."""
    os.close(fd)


def _holder_pid(lock_file: Path) -> int | None:
    try:
        text = lock_file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
