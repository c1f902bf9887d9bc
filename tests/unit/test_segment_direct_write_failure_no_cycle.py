"""A direct write the disk cuts short (a full disk) leaves no reference cycle behind.

``direct_write._write_all`` raised its ENOSPC error from a local, ``err``: the error's
traceback holds that frame, error -> traceback -> frame -> error, a reference cycle -- and the
frames of the traceback hold their callers' (``f_back``), so the cycle kept every frame of the
append, with the call's batches (a produce request's payload) and the staging buffer's view,
until a cyclic collection, which a broker's tuned collector (``nodes/run.py``) runs rarely; a
broker on a full disk keeps running and refuses every produce so (tests/faults/
test_faults_disk_full.py). The short write is faked on the direct descriptor only; the
collector is off while this runs.
"""

from __future__ import annotations

import errno
import os
import weakref
from pathlib import Path

import pytest

from engines import segment_file
from engines.api import EngineConfig, StorageFull
from engines.conformance import make_batch
from engines.direct_write import BLOCK_BYTES, open_direct
from engines.segment import SegmentEngine
from tests.unit.builders_segment import error_dropped

MIN_BYTES = 64 * 1024  # runs of at least this go direct
BIG_PAYLOAD = 70 * 1024


class Payload(bytearray):
    """A batch's bytes (a subclass: a bytearray takes no weak references)."""


@pytest.fixture
def direct_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SegmentEngine:
    """A segment engine writing runs of MIN_BYTES directly, whose direct writes the disk cuts
    short after their first block (a full disk); closed at the end."""
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    fd = open_direct(str(probe))
    if fd < 0:
        pytest.skip("the file system of the test directory has no direct I/O")
    os.close(fd)
    direct_fds: set[int] = set()
    real_open_direct, real_pwritev = segment_file.open_direct, os.pwritev

    def opened(path: str) -> int:
        fd = real_open_direct(path)
        direct_fds.add(fd)
        return fd

    def pwritev(fd: int, buffers: list, at: int) -> int:
        if fd not in direct_fds:
            return real_pwritev(fd, buffers, at)
        return real_pwritev(fd, [memoryview(buffers[0])[:BLOCK_BYTES]], at)  # the rest did not fit
    monkeypatch.setattr(segment_file, "open_direct", opened)
    monkeypatch.setattr(os, "pwritev", pwritev)
    engine = SegmentEngine(str(tmp_path / "log"), EngineConfig(fsync="interval", direct_write_min_bytes=MIN_BYTES))
    yield engine
    monkeypatch.undo()
    engine.close()


def test_an_append_a_full_disk_cut_short_is_freed_without_a_collection(direct_engine: SegmentEngine,
                                                                       no_collector: None) -> None:
    payload = Payload(make_batch(0, payload_bytes=BIG_PAYLOAD))
    refs = [weakref.ref(payload)]
    refused = error_dropped(direct_engine.append_many, ([payload],), StorageFull, refs)
    del payload
    short = "No space left on device (short direct write)"
    assert refused == (StorageFull, f"append to {direct_engine._active.log_path}: {short}", errno.ENOSPC, short,
                       BLOCK_BYTES)
    assert direct_engine.log_end_offset == 0
    assert [r() is None for r in refs] == [True, True], "the refused append's batch and its error are kept by a reference cycle"

