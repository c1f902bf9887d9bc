"""The broker's small state files -- a partition's ``partition.metadata`` (its topic id) and the
broker's ``meta.properties`` (its cluster) -- are replaced through ``engines.durable.replace_file``
like every checkpoint: all or nothing, and a failure is an EngineError (a LoomError the reactor
logs) naming the file, not a bare OSError. Each wrote its own temp file and rename before."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.api import EngineError
from engines.durable import TEMP_SUFFIX
from nodes.broker.identity import write_properties
from nodes.broker.partition_dirs import PARTITION_METADATA, PartitionDirs


def _block_temp_files(directory: Path, name: str) -> None:
    """Make every temp name a writer of ``name`` could use a directory: opening it fails."""
    for temp in (name + TEMP_SUFFIX, Path(name).stem + ".tmp"):
        (directory / temp).mkdir(parents=True, exist_ok=True)


def test_a_topic_id_that_cannot_be_written_is_an_engine_error_and_keeps_the_old_one(tmp_path: Path) -> None:
    dirs = PartitionDirs(tmp_path, "memory")
    dirs.set_topic_id(("t", 0), "id-1")
    directory = dirs.path(("t", 0))
    _block_temp_files(directory, PARTITION_METADATA)
    with pytest.raises(EngineError, match=PARTITION_METADATA):
        dirs.set_topic_id(("t", 0), "id-2")
    assert PartitionDirs(tmp_path, "memory").topic_id(("t", 0)) == "id-1"


def test_meta_properties_that_cannot_be_written_is_an_engine_error_and_keeps_the_old_ones(tmp_path: Path) -> None:
    path = tmp_path / "meta.properties"
    write_properties(path, {"cluster.id": "a"})
    _block_temp_files(tmp_path, path.name)
    with pytest.raises(EngineError, match="meta.properties"):
        write_properties(path, {"cluster.id": "b"})
    assert path.read_text() == "cluster.id=a\n"
