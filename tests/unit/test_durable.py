"""engines.durable.replace_file: all or nothing, and a full disk is StorageFull."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from engines.api import EngineError, StorageFull
from engines.durable import TEMP_SUFFIX, replace_file


def test_replaces_the_content_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    replace_file(target, b"one")
    replace_file(target, b"two" * 100_000)
    assert target.read_bytes() == b"two" * 100_000
    assert os.listdir(tmp_path) == ["state.json"]


def test_mode_is_applied_to_a_new_file(tmp_path: Path) -> None:
    target = tmp_path / "admin.key"
    replace_file(target, b"secret", mode=0o600)
    assert target.stat().st_mode & 0o777 == 0o600


def test_a_failed_write_keeps_the_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "cp"
    replace_file(target, b"old")

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StorageFull):
        replace_file(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"


def test_other_os_errors_are_engine_errors(tmp_path: Path) -> None:
    with pytest.raises(EngineError):
        replace_file(tmp_path / "missing-dir" / "f", b"x")
    assert not (tmp_path / ("f" + TEMP_SUFFIX)).exists()
