"""OFFSET_COMMIT naming the topic ids its offsets were read in (``topic_ids``): a commit of a
topic deleted and made again under its name since is refused whole (``unknown_topic_id``),
when it comes and just before its append; one naming the current ids, or none (older
clients, the CLI by name), is taken as before. The real GroupCoordinator and OffsetStore, the
brokers a RecordingClient.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric import protocol as P
from fabric.errors import RemoteError
from fabric.rpc import DEFER
from nodes.coordinator.store import PartitionState, TopicState
from tests.unit.fakes import ack_last_produce, ack_readings, loaded_group_coordinator, request


def _recreate(context, gc, topic: str = "t") -> str:  # noqa: ANN001
    """``topic`` deleted (as Coordinator._on_delete_topic does) and made again under its name:
    the old id."""
    old = context.state.topics.pop(topic)
    context.state.topic_deleted(old.topic_id)
    gc.topic_deleted(topic)
    context.state.topics[topic] = TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3]) for _ in range(2)])
    return old.topic_id


def _member(gc, context, client) -> dict:  # noqa: ANN001
    """A member of group g owning t-0 and t-1 (and u-0 where there is a topic u)."""
    topics = sorted(t for t in context.state.topics if not t.startswith("__"))
    req = request(P.JOIN_GROUP, group="g", member_id="", generation=-1, client_id="a", topics=topics,
                  session_timeout_ms=10_000, rebalance_timeout_ms=10_000)
    assert gc._on_join(req) is DEFER
    joined = context.server.answer(req)
    ack_readings(client)  # the group's reading of its topics, stored
    sync = request(P.SYNC_GROUP, group="g", member_id=joined["member_id"], generation=joined["generation"])
    gc._on_sync(sync)
    return joined


def _send(gc, client, member: dict | None, offsets: list, **header) -> tuple:  # noqa: ANN001, ANN003
    """OFFSET_COMMIT as ``member`` (None: an administrative one): the request and the log-end
    lookups it sent (answered by the caller); raises what the coordinator refuses at once."""
    who = {"member_id": member["member_id"], "generation": member["generation"]} if member else {"generation": -1}
    req = request(P.OFFSET_COMMIT, group="g", offsets=offsets, **who, **header)
    before = len(client.sent)
    assert gc._on_offset_commit(req) is DEFER
    return req, [(h, cb) for cmd, h, _p, cb in client.sent[before:] if cmd == P.LIST_OFFSETS]


def _answer_log_ends(lookups: list) -> None:
    for h, cb in lookups:
        cb({"parts": [[t, p, 0, 1000] for t, p, _ in h["parts"]]}, [], None)


def _commit(gc, context, client, member: dict | None, offsets: list, **header) -> dict:  # noqa: ANN001, ANN003
    """The commit answered through: the reply (or the error it was refused with at once)."""
    try:
        req, lookups = _send(gc, client, member, offsets, **header)
    except RemoteError as e:
        return {"error": e.code, "message": e.message}
    _answer_log_ends(lookups)
    if client.sent and client.sent[-1][0] == P.PRODUCE:
        ack_last_produce(client, 0)
    return context.server.answer(req)


@pytest.mark.parametrize("as_member", [True, False])
def test_a_commit_naming_the_id_of_a_topic_made_again_since_is_refused_and_stores_nothing(
        tmp_path: Path, as_member: bool) -> None:
    gc, context, client = loaded_group_coordinator(tmp_path)
    member = _member(gc, context, client) if as_member else None
    read_in = context.state.topics["t"].topic_id
    assert _commit(gc, context, client, member, [["t", 0, 5]], topic_ids={"t": read_in})["committed"] == 1
    _recreate(context, gc)  # the member keeps t-0: the new topic has as many partitions
    got = _commit(gc, context, client, member, [["t", 0, 500], ["t", 1, 7]], topic_ids={"t": read_in})
    assert got.get("error") == P.UNKNOWN_TOPIC_ID, f"a commit of the deleted topic's offsets was taken: {got}"
    assert "made again" in got["message"] or "deleted" in got["message"]
    assert gc.offsets.offsets_for("g") == {}, "part of a refused commit was stored for the new topic"
    assert not gc.offsets.has_in_flight("g")


def test_a_commit_naming_the_current_id_or_none_is_taken(tmp_path: Path) -> None:
    gc, context, client = loaded_group_coordinator(tmp_path)
    member = _member(gc, context, client)
    _recreate(context, gc)
    now = context.state.topics["t"].topic_id
    assert _commit(gc, context, client, member, [["t", 0, 5]], topic_ids={"t": now}) == {"group": "g", "committed": 1}
    assert _commit(gc, context, client, member, [["t", 0, 6]]) == {"group": "g", "committed": 1}  # an older client
    assert _commit(gc, context, client, member, [["t", 0, 7]], topic_ids={"t": ""}) == {"group": "g", "committed": 1}
    committed = gc.offsets.offsets_for("g")[("t", 0)]
    assert (committed.offset, committed.topic_id) == (7, now)


def test_a_multi_topic_commit_with_one_replaced_id_is_refused_whole(tmp_path: Path) -> None:
    gc, context, client = loaded_group_coordinator(tmp_path)
    context.state.topics["u"] = TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3])])
    member = _member(gc, context, client)
    ids = {"t": context.state.topics["t"].topic_id, "u": context.state.topics["u"].topic_id}
    _recreate(context, gc, "u")
    got = _commit(gc, context, client, member, [["t", 0, 5], ["u", 0, 9]], topic_ids=ids)
    assert got.get("error") == P.UNKNOWN_TOPIC_ID, got
    assert gc.offsets.offsets_for("g") == {}, "the commit's other topic was stored"


def test_a_commit_naming_a_deleted_topic_is_refused_for_good(tmp_path: Path) -> None:
    gc, context, client = loaded_group_coordinator(tmp_path)
    read_in = context.state.topics["t"].topic_id
    context.state.topic_deleted(context.state.topics.pop("t").topic_id)
    got = _commit(gc, context, client, None, [["t", 0, 5]], topic_ids={"t": read_in})
    assert got.get("error") == P.UNKNOWN_TOPIC_ID and P.UNKNOWN_TOPIC_ID not in P.RETRIABLE, got


@pytest.mark.parametrize("ids", [["t"], {"t": 5}, {5: "x"}, "t"])
def test_malformed_topic_ids_are_refused_clearly(tmp_path: Path, ids: object) -> None:
    gc, context, client = loaded_group_coordinator(tmp_path)
    got = _commit(gc, context, client, None, [["t", 0, 5]], topic_ids=ids)
    assert got.get("error") == P.MALFORMED_REQUEST and "topic_ids" in got["message"], got
    assert gc.offsets.offsets_for("g") == {}


@pytest.mark.parametrize("when", ["log end lookup", "append queue"])
def test_a_topic_made_again_after_the_commit_was_taken_refuses_it_before_the_append(tmp_path: Path, when: str) -> None:
    """The check made when the commit came is made again just before its append: the topic may
    be made again while its log-end lookup is out, or while it waits behind another append."""
    gc, context, client = loaded_group_coordinator(tmp_path)
    member = _member(gc, context, client)
    read_in = context.state.topics["t"].topic_id
    ahead = None
    if when == "append queue":  # a commit of the same group, appended and not yet acknowledged
        ahead, lookups = _send(gc, client, member, [["t", 1, 3]], topic_ids={"t": read_in})
        _answer_log_ends(lookups)
        assert client.sent[-1][0] == P.PRODUCE
    req, lookups = _send(gc, client, member, [["t", 0, 500]], topic_ids={"t": read_in})
    if when == "append queue":
        _answer_log_ends(lookups)  # validated: it waits for the append ahead of it
        _recreate(context, gc)
        client.answer_last(P.PRODUCE, {"results": [[0, 0, "", 0]]})  # the append ahead: the next one goes
        assert context.server.answer(ahead) == {"group": "g", "committed": 1}
    else:
        _recreate(context, gc)
        _answer_log_ends(lookups)
    if client.sent[-1][0] == P.PRODUCE:
        ack_last_produce(client, 0)
    got = context.server.answer(req)
    assert got.get("error") == P.UNKNOWN_TOPIC_ID, f"the commit landed on the new topic: {got}"
    assert ("t", 0) not in gc.offsets.offsets_for("g")
    assert ("t", 0) not in gc.offsets.table.get("g", {}), "the deleted topic's offset was appended"


def test_an_append_already_sent_when_the_topic_is_made_again_stays_the_old_topics(tmp_path: Path) -> None:
    """Once its append went out a commit is not judged again (the log may hold it): acknowledged
    after the topic was made again, it is stored under the old topic's id -- as a restarted
    coordinator reading the log would -- and counts for no offset of the new topic."""
    gc, context, client = loaded_group_coordinator(tmp_path)
    member = _member(gc, context, client)
    read_in = context.state.topics["t"].topic_id
    req, lookups = _send(gc, client, member, [["t", 0, 500]], topic_ids={"t": read_in})
    _answer_log_ends(lookups)
    assert client.sent[-1][0] == P.PRODUCE
    _recreate(context, gc)
    ack_last_produce(client, 0)
    assert context.server.answer(req) == {"group": "g", "committed": 1}  # it is in the log
    assert gc.offsets.table["g"][("t", 0)].topic_id == read_in
    assert gc.offsets.offsets_for("g") == {}, "the new topic starts at the old topic's offset"
    now = context.state.topics["t"].topic_id
    assert _commit(gc, context, client, member, [["t", 0, 5]], topic_ids={"t": now})["committed"] == 1
    assert gc.offsets.offsets_for("g")[("t", 0)].offset == 5


def test_offset_fetch_names_the_topic_each_committed_offset_is_of(tmp_path: Path) -> None:
    """A member that takes a committed offset must know which topic it is of: the topic may be
    made again before the member reads from it, and the old topic's offset is no offset of
    the new one."""
    gc, context, client = loaded_group_coordinator(tmp_path)
    member = _member(gc, context, client)
    read_in = context.state.topics["t"].topic_id
    _commit(gc, context, client, member, [["t", 0, 5]], topic_ids={"t": read_in})
    fetched = gc._on_offset_fetch(request(P.OFFSET_FETCH, group="g", partitions=[["t", 0], ["t", 1]]))
    assert fetched["offsets"] == [["t", 0, 5, "", -1], ["t", 1, -1, "", -1]] and fetched["topic_ids"] == {"t": read_in}
    _recreate(context, gc)
    fetched = gc._on_offset_fetch(request(P.OFFSET_FETCH, group="g", partitions=None))
    assert fetched == {"group": "g", "offsets": [], "topic_ids": {}, "newer_than_reading": {}}
