"""A zombie member's commit whose append timed out is retried without a new generation check;
this shows it cannot land after the partition's new owner started or committed: while it is
in flight the new owner's OFFSET_FETCH is unstable (retriable), and the new owner's commit
queues behind the retry, so the log and the table end with the new owner's offset.
Driven through the real OffsetStore with the fake reactor and broker client of the group tests."""

from __future__ import annotations

import msgpack
from pathlib import Path

from fabric import protocol as P
from fabric.errors import RemoteError, RequestTimeout
from tests.unit.test_groups_followups import _loaded, _records


def test_a_retried_zombie_commit_lands_before_the_new_owners_commit(tmp_path: Path) -> None:
    gc, coord, client = _loaded(tmp_path)
    zombie: list[RemoteError | None] = []
    owner: list[RemoteError | None] = []
    gc.offsets.commit("g", [("t", 0, 7, "")], allow_backward=False, check_log_end=False,
                      done=zombie.append, recheck=lambda: None)
    (first,) = client.of(P.PRODUCE)
    first[3](None, [], RequestTimeout("no reply"))  # may have landed
    # a rebalance hands t-0 on; the new owner may not start from the committed offsets yet
    assert gc.offsets.unstable("g", [("t", 0)]) == [("t", 0)]
    gc.offsets.commit("g", [("t", 0, 9, "")], allow_backward=False, check_log_end=False,
                      done=owner.append, recheck=lambda: None)
    for fn in list(coord.reactor.later):
        fn()
    retry = client.of(P.PRODUCE)[1]
    offsets = [msgpack.unpackb(r.value)[0] for r in _records(retry[2][0])]
    assert offsets == [7, 9], "the zombie's retry goes first, the new owner's commit after it"
    retry[3]({"results": [[0, 0, "", 0]]}, [], None)
    assert zombie == [None] and owner == [None]
    assert gc.offsets.offsets_for("g")[("t", 0)].offset == 9
    assert gc.offsets.unstable("g", [("t", 0)]) == []
