"""A power loss as the segment engine's directory sees it: the removal of a file survives only
once its directory was fsynced since, so a segment whose unlink no directory fsync followed is
back after the power loss, with the content it had when it was last durable.

Used by the tests of what must survive a power loss (a truncation's cut, a retention delete that
a producer table relied on)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest


class UnlinkRecorder:
    """Made when every .log file of ``directory`` is durable (just flushed): keeps their content
    as it is now; an unlink of one is pending until a directory fsync makes it durable.
    ``power_loss_copy`` copies the directory with the pending unlinks undone (the file back with
    its durable content: a cut of it before the unlink was not fsynced either)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
        self.directory = directory
        durable = {p.name: p.read_bytes() for p in directory.glob("*.log")}
        self.pending: dict[str, bytes] = {}
        real_unlink, real_fsync = os.unlink, os.fsync
        dir_ino = os.stat(directory).st_ino

        def unlink(path, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
            name = os.path.basename(path)
            if name in durable:
                self.pending[name] = durable[name]
            real_unlink(path, *args, **kw)

        def fsync(fd: int) -> None:
            st = os.fstat(fd)
            real_fsync(fd)
            if stat.S_ISDIR(st.st_mode) and st.st_ino == dir_ino:
                self.pending.clear()
        monkeypatch.setattr(os, "unlink", unlink)
        monkeypatch.setattr(os, "fsync", fsync)

    def power_loss_copy(self, tree: Path, copy: Path) -> Path:
        """``tree`` (the recorded directory, or one holding it) copied to ``copy`` as a power
        loss now would leave it: every file whose unlink is pending back."""
        shutil.copytree(tree, copy)
        into = copy / self.directory.relative_to(tree)
        for name, content in self.pending.items():
            (into / name).write_bytes(content)
        return copy
