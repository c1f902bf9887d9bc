"""What ``PartitionDirs`` remembers of a partition directory goes with the directory.

The number each directory made here gets (for ``make_durable``: has the data directory been
synced since?) was kept after the directory was deleted or set aside, so a broker's table grew
by one entry for every partition it ever held -- topics created and deleted under new names
grew it without end. A delete that leaves the directory behind still keeps its number."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.broker import partition_dirs
from nodes.broker.partition_dirs import PartitionDirs

TOPIC_ID = "11111111-1111-4111-8111-111111111111"


def test_deleted_and_set_aside_directories_are_forgotten(tmp_path: Path) -> None:
    dirs = PartitionDirs(tmp_path, "memory")
    for i in range(50):
        deleted, aside = (f"d{i}", 0), (f"s{i}", 0)
        for key in (deleted, aside):
            dirs.engine_dir(key, TOPIC_ID)
            dirs.make_durable(key)
        dirs.delete(deleted)
        dirs.set_aside(aside)
    assert dirs._made_at == {}, f"{len(dirs._made_at)} directories gone and still numbered"


def test_a_directory_a_delete_left_behind_keeps_its_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dirs = PartitionDirs(tmp_path, "memory")
    dirs.engine_dir(("t", 0), TOPIC_ID)
    made = dirs._made_at[("t", 0)]
    monkeypatch.setattr(partition_dirs.shutil, "rmtree", lambda *a, **kw: None)  # the rmtree failed
    dirs.delete(("t", 0))
    assert dirs._made_at[("t", 0)] == made
