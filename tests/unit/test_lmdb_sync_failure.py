"""The LMDB engine after a failed sync (fsyncgate, as the segment engine's): under fsync
``interval`` transactions commit without a sync, so when ``env.sync`` fails the pages of some
may have been dropped, and a later sync that succeeds would make a meta page pointing at them
durable. The engine refuses every write and flush from then on (``StorageFailed``: the broker
stops and recovers), reads go on, and ``close`` does not sync."""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest

from engines.api import EngineConfig, StorageFailed
from engines.conformance import make_batch, read_all
from engines.lmdb_engine import LmdbEngine


class _FailingSync:
    """The engine's env, with ``sync`` failing (and counted); everything else passed through."""

    def __init__(self, env: lmdb.Environment) -> None:
        self.env, self.syncs = env, 0

    def sync(self, force: bool = False) -> None:
        self.syncs += 1
        raise lmdb.Error("mdb_env_sync: Input/output error")

    def __getattr__(self, name: str) -> object:
        return getattr(self.env, name)


def test_a_failed_sync_fences_the_engine(tmp_path: Path) -> None:
    e = LmdbEngine(str(tmp_path), EngineConfig(fsync="interval"))
    for i in range(5):
        e.append(make_batch(i))
    before = read_all(e)
    env = e._env
    e._env = failing = _FailingSync(env)  # type: ignore[assignment]
    with pytest.raises(StorageFailed, match="Input/output error"):
        e.flush()
    for refused in (lambda: e.append(make_batch(9)), lambda: e.append_many([make_batch(9)]), e.flush,
                    lambda: e.truncate_to(2), lambda: e.reset_to(0), lambda: e.delete_before(2),
                    # and the calls that would write nothing, as the segment engine refuses them
                    lambda: e.append_many([]), lambda: e.truncate_to(e.log_end_offset),
                    lambda: e.apply_retention(0), lambda: e.delete_before(0)):
        with pytest.raises(StorageFailed):
            refused()
    assert read_all(e) == before  # reads go on, and nothing changed
    e.close()
    assert failing.syncs == 1  # close did not sync again


def test_lmdb_giving_the_env_up_fences_the_engine(tmp_path: Path) -> None:
    """MDB_PANIC (LMDB's own fatal error after a failed write) is StorageFailed, not an error
    the broker answers and serves on after."""
    e = LmdbEngine(str(tmp_path), EngineConfig(fsync="always"))
    e.append(make_batch(0))

    class _Panicking:
        def __init__(self, env: lmdb.Environment) -> None:
            self.env = env

        def begin(self, **kw: object) -> object:
            if kw.get("write"):
                raise lmdb.PanicError("MDB_PANIC: Update of meta page failed or environment had fatal error")
            return self.env.begin(**kw)

        def __getattr__(self, name: str) -> object:
            return getattr(self.env, name)
    real = e._env
    e._env = _Panicking(real)  # type: ignore[assignment]
    with pytest.raises(StorageFailed, match="MDB_PANIC"):
        e.append(make_batch(1))
    e._env = real
    with pytest.raises(StorageFailed):
        e.append(make_batch(1))
    e.close()
