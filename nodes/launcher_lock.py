"""The supervisor's hold on its data dir: ``<data_dir>/loom.lock`` and ``<data_dir>/loom.pid``.

One supervisor per data dir: ``loom.lock`` is held (``flock``) for the supervisor's life, so two
``loom up`` started together cannot both pass the pid-file check; the kernel drops the lock when
the supervisor dies, even by SIGKILL. The pid file (JSON: the supervisor's pid, its config and
its children's pids; read by ``loom down``, nodes/running_cluster.py) is written whenever a
child starts or stops, atomically and without fsync, and removed at the end of ``stop_all`` if
it is still this supervisor's. ``SupervisorLock`` is that part of
``nodes.launcher.Supervisor``, which mixes it in: its state is the supervisor's own (set by
``Supervisor.__init__``). A module of its own because the lock, the pid file and the checks of
an earlier run that is still alive are read and changed together, apart from starting,
restarting and stopping the children.

Not thread-safe: part of Supervisor, owned by the thread that calls ``Supervisor.run``.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from engines.durable import replace_file
from fabric.config import LoomConfig
from fabric.errors import FabricError
from nodes.processes import is_loom_process, pid_alive
from nodes.running_cluster import pid_file_path, read_pid_file

if TYPE_CHECKING:
    from nodes.launcher import Child

LOCK_FILE_NAME = "loom.lock"


class SupervisorLock:
    """``Supervisor``'s data-dir lock and pid file (see the module doc). Not usable alone: the
    attributes below are the supervisor's, set by ``Supervisor.__init__``."""

    # the supervisor's state this part uses
    config: LoomConfig
    config_path: str
    data_dir: Path
    children: dict[str, Child]
    _lock_fd: int | None  # the open descriptor of loom.lock while the lock is held

    def check_not_running(self) -> None:
        """Take the data dir's lock; raises FabricError when another supervisor of this data
        dir is alive or nodes of an earlier run still are."""
        self._take_lock()
        info = read_pid_file(self.config)
        if info and isinstance(info.get("pid"), int) and info["pid"] != os.getpid() \
                and pid_alive(info["pid"]) and is_loom_process(info["pid"]):
            self.release_lock()  # a supervisor of an older build, which held no lock
            raise FabricError(f"a cluster is already running from {self.data_dir} (supervisor pid {info['pid']}); "
                              + self._down_hint())
        orphans = [p for p in ((info or {}).get("children") or {}).values()
                   if isinstance(p, int) and pid_alive(p) and is_loom_process(p)]
        if orphans:
            self.release_lock()
            raise FabricError(f"nodes of an earlier run are still alive (pids {', '.join(map(str, orphans))}); "
                              + self._down_hint())

    def _down_hint(self) -> str:
        # a bare `loom down` reads $LOOM_CONFIG or config/cluster.yaml: another cluster's, perhaps
        return f"run `loom down -c {self.config_path}` first"

    def _take_lock(self) -> None:
        if self._lock_fd is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data_dir / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            info = read_pid_file(self.config) or {}
            raise FabricError(f"a cluster is already running from {self.data_dir} (supervisor pid "
                              f"{info.get('pid', '?')}); {self._down_hint()}") from None
        self._lock_fd = fd

    def release_lock(self) -> None:
        """Let another supervisor use the data dir (at the end of ``stop_all``)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the only descriptor drops the flock
            self._lock_fd = None

    def _write_pid_file(self) -> None:
        info = {"pid": os.getpid(), "config": self.config_path,
                "children": {n: c.pid for n, c in self.children.items() if c.pid is not None}}
        # atomic (`loom down` never reads half a file); not fsynced: a pid file is worthless
        # after a power failure. Raises StorageFull / EngineError.
        replace_file(pid_file_path(self.config), json.dumps(info).encode(), sync=False)

    def _remove_pid_file(self) -> None:
        """Remove the pid file if it is this supervisor's (at the end of ``stop_all``)."""
        pid_file = pid_file_path(self.config)
        info = read_pid_file(self.config)
        if info and info.get("pid") == os.getpid():
            pid_file.unlink(missing_ok=True)
