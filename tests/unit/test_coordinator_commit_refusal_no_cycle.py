"""An OFFSET_COMMIT or DELETE_GROUP the group coordinator refuses leaves no reference cycle.

``_on_offset_commit`` raised a refusal it had been handed (``ids_refusal``, ``_commit_refusal``)
from a local, ``err``; ``_on_delete_group`` kept a part's refused append (``offsets.commit``
raising buffer_full) in ``next_part``'s ``err`` to answer with. The error's traceback holds the
frame, whose locals hold the error: error -> traceback -> frame -> error, a reference cycle
that kept the error, the handler's frame and what it refers to (the request) until a cyclic
collection, which a node's tuned collector (``nodes/run.py``) runs rarely -- and refusals
(a member committing to a group it is not in, a rebalance) are routine. The real
GroupCoordinator on a FakeGroupContext; the collector is off while these run: what is not
freed by reference counting stays.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import pytest

from fabric import protocol as P
from fabric import wire
from fabric.errors import RemoteError
from fabric.rpc import DEFER
from nodes.coordinator.groups import GroupCoordinator
from tests.unit.fakes import FakeGroupContext, admin_commit, group_coordinator, loaded_group_coordinator, request, \
    two_partition_state


class Header(dict):
    """A request's header (a subclass: a dict takes no weak references)."""


def _loaded() -> tuple[GroupCoordinator, FakeGroupContext]:
    context = FakeGroupContext(two_partition_state())
    gc, _ = group_coordinator(context)
    gc.offsets.start_loading()  # no offsets topic yet: loaded at once
    assert gc.offsets.loaded
    return gc, context


def _refused_commit(gc: GroupCoordinator, refs: list[weakref.ref], **header: Any) -> tuple[int, str]:
    """The refusal's code and message; the request and the error only weakly in ``refs``,
    dropped once answered (as the RpcServer does)."""
    h = Header(header)
    refs.append(weakref.ref(h))
    try:
        gc._on_offset_commit(wire.Request([b"client"], P.OFFSET_COMMIT, h, []))
    except RemoteError as e:
        refs.append(weakref.ref(e))
        return e.code, e.message
    raise AssertionError("the commit was not refused")


def test_a_commit_to_a_group_with_members_refused_is_freed_without_a_collection(no_collector: None) -> None:
    gc, context = _loaded()
    join = request(P.JOIN_GROUP, group="g", member_id="", client_id="a", topics=["t"], session_timeout_ms=10_000,
                   rebalance_timeout_ms=10_000)
    assert gc._on_join(join) is DEFER and context.server.answer(join)["generation"] == 1
    refs: list[weakref.ref] = []
    code, message = _refused_commit(gc, refs, group="g", generation=-1, offsets=[["t", 0, 5]])  # _commit_refusal's
    assert code == P.NON_EMPTY_GROUP and "active members" in message
    assert [r() for r in refs] == [None, None], "the refused commit and its error are kept by a reference cycle"


def test_a_commit_of_offsets_read_in_a_deleted_topic_refused_is_freed_without_a_collection(no_collector: None) -> None:
    gc, _ = _loaded()
    refs: list[weakref.ref] = []
    code, message = _refused_commit(gc, refs, group="g", generation=-1, offsets=[["t", 0, 5]],
                                    topic_ids={"t": "id-of-a-topic-deleted-since"})  # ids_refusal's
    assert code == P.UNKNOWN_TOPIC_ID and "nothing was committed" in message
    assert [r() for r in refs] == [None, None], "the refused commit and its error are kept by a reference cycle"


def test_a_delete_group_whose_append_is_refused_is_freed_without_a_collection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_collector: None) -> None:
    gc, context, client = loaded_group_coordinator(tmp_path)
    admin_commit(gc, client, "a", 1)  # a group with offsets and no members
    refs: list[weakref.ref] = []

    def full(*args: Any, **kwargs: Any) -> None:
        raise _remembered(RemoteError(P.BUFFER_FULL, "the offsets topic's producer is full"), refs)
    monkeypatch.setattr(gc.offsets, "commit", full)
    deleted = request(P.DELETE_GROUP, group="a")
    assert gc._on_delete_group(deleted) is DEFER
    answer = context.server.answer(deleted)
    assert (answer["error"], answer["message"]) == (P.BUFFER_FULL, "the offsets topic's producer is full")
    assert [r() for r in refs] == [None], "the refused append's error is kept by a reference cycle"


def _remembered(error: RemoteError, refs: list[weakref.ref]) -> RemoteError:
    refs.append(weakref.ref(error))
    return error  # raised by the caller, which keeps no local of it
