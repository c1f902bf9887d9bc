"""Durable small files: the one way Loom replaces a checkpoint or a state file.

``replace_file`` writes the new content to a temp file beside the target, fsyncs it, renames
it over the target and fsyncs the directory, so after a crash the file holds either the old
content or the new, never a mix, and the rename itself survives. Used for every file Loom
replaces: the segment engine's recovery checkpoint, the leader-epoch and high-watermark
checkpoints, a partition's ``partition.metadata``, the broker's ``meta.properties``, the
coordinator's cluster state, the monitor's alert history, the config ``loom keys add`` edits
and the supervisor's pid file (the last without fsync). Errors are translated at this boundary: StorageFull for a
full disk, EngineError otherwise (both LoomErrors); a failed call removes its temp file, so
the directory holds the target (old content) and nothing else.

Thread-safe in the sense that matters: one call per target at a time (callers own their files).
"""

from __future__ import annotations

import os
from typing import Callable

from engines.checks import translate_os_error

TEMP_SUFFIX = ".tmp"


def replace_file(path: str | os.PathLike, data: bytes, *, mode: int = 0o644, dir_fd: int | None = None,
                 sync: bool = True, temp_suffix: str = TEMP_SUFFIX,
                 guard: Callable[[Callable[[], object]], bool] | None = None) -> bool:
    """Atomically replace ``path`` with ``data`` (write temp, fsync, rename, fsync directory).
    ``dir_fd``: an open descriptor of the directory, if the caller keeps one. ``sync=False``
    skips both fsyncs, for a file whose loss after a power failure costs only a little redone
    work (the high-watermark checkpoint); the rename still makes the replacement atomic for
    readers and for a process crash. ``temp_suffix`` (ending in TEMP_SUFFIX): a second writer's
    own temp file. ``guard``: given each step that adds a name to the directory -- creating the
    temp file, then the rename -- runs it (e.g. under its lock, only while still wanted) and
    returns whether it did; when it declines, nothing is replaced and no temp file stays (the
    fsyncs run outside it). Returns whether ``path`` was replaced. Raises StorageFull /
    EngineError."""
    path = os.fspath(path)
    tmp = path + temp_suffix
    step = guard or _run_step
    fds: list[int] = []
    try:
        if not step(lambda: fds.append(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode))):
            return False
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fds[0], view):]
            if sync:
                os.fsync(fds[0])
        finally:
            os.close(fds[0])
        if not step(lambda: os.replace(tmp, path)):
            _remove_quietly(tmp)
            return False
        if not sync:
            return True
        if dir_fd is not None:
            os.fsync(dir_fd)
        else:
            fsync_directory(os.path.dirname(path) or ".")
        return True
    except OSError as e:
        _remove_quietly(tmp)
        raise translate_os_error(e, f"write {path}") from e


def _run_step(step: Callable[[], object]) -> bool:
    step()
    return True


def _remove_quietly(path: str) -> None:
    """Remove a temp file a failed replace left behind (it may not exist, or the disk may be
    gone: the error being raised already says what went wrong)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def sync_file(path: str | os.PathLike) -> None:
    """Make a file written without fsync durable, with its name: fsync it, then its directory
    (``replace_file(..., sync=False)`` earlier, durable now). Raises StorageFull / EngineError."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise translate_os_error(e, f"sync {path}") from e
    sync_directory(os.path.dirname(path) or ".")


def sync_directory(directory: str | os.PathLike) -> None:
    """``fsync_directory`` with its error translated. Raises StorageFull / EngineError."""
    try:
        fsync_directory(directory)
    except OSError as e:
        raise translate_os_error(e, f"sync {directory}") from e


def fsync_directory(directory: str | os.PathLike) -> None:
    """Make renames and creations in ``directory`` durable. Raises OSError."""
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
