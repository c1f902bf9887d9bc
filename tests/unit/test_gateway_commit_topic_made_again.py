"""A commit the coordinator refuses because the topic its positions were read in was deleted
and made again since (``unknown_topic_id``): REST answers it as the topic not found (404,
40401); /ws/consume answers an explicit commit so and goes on, and forgets the marks of the
records it sent from the old topic -- kept, every later commit of the stream named an offset of
the topic that is gone and was refused, until the new topic's records passed it.

``_consume`` runs for real, with the agent of tests/unit/test_gateway_ws_consume_commits.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fabric import protocol as P
from fabric.errors import RemoteError
from fabric.records import Record
from nodes.gateway.translate import translated
from tests.unit.builders_group_consumer import RestInstance
from tests.unit.test_gateway_ws_consume_commits import ClientSocket
from tests.unit.test_gateway_ws_consume_through import ReadingClient, _run
from webui import ws_consume as consumemod
from webui.errors import ClusterError

NEW_ID = "id-t2"
MADE_AGAIN_AT_FETCH = 3  # fetches 1 and 2 bring records 0..19 of the old topic, then 0.. of the new


def test_a_rest_commit_of_a_topic_made_again_is_the_topic_not_found() -> None:
    with pytest.raises(ClusterError) as e:
        with translated("the consumer service"):
            raise RemoteError(P.UNKNOWN_TOPIC_ID, "topic 't' of id x was deleted")
    api = e.value.to_api()
    assert (api.status, api.error_code) == (404, 40401), (api.status, api.error_code)


class MadeAgainClient(ReadingClient):
    """t is deleted and made again before fetch MADE_AGAIN_AT_FETCH: the instance reads the new
    topic from offset 0, and (as the coordinator, through the instance's consumer) refuses a
    commit past the position it read the new topic to."""

    def fetch(self, **kw: object) -> list[Record]:
        if self.fetches + 1 == MADE_AGAIN_AT_FETCH:
            self.position = 0
        return super().fetch(**kw)

    def call_instance(self, group: str, name: str, op):  # noqa: ANN001, ANN201
        with translated("the consumer service"):
            return op(self)

    def commit(self, offsets: dict | None = None) -> None:
        if self.fetches >= MADE_AGAIN_AT_FETCH and offsets and any(o > self.position for o in offsets.values()):
            raise RemoteError(P.UNKNOWN_TOPIC_ID, "topic 't' of id id-t was deleted: nothing was committed")
        super().commit(offsets)


def test_an_explicit_commit_refused_for_a_topic_made_again_is_answered_and_the_stream_goes_on() -> None:
    ws = ClientSocket()
    agent = MadeAgainClient(ws, ['{"commit": [{"topic": "t", "partition": 0, "offset": 25}]}'],
                            after=MADE_AGAIN_AT_FETCH, leave_at_fetch=5)
    out = _run(agent, ws, {"topic": "t", "group": "billing", "auto_commit": "false"})
    answers = [m for m in ws.received if "committed" in m]
    assert [(m["committed"], m["error"]) for m in answers] == [(False, "topic_not_found")], answers
    assert out._closing == (1000, "done"), out._closing
    assert len([m for m in ws.received if "records" in m]) == 4, "the stream did not go on"


class _SentMarks:
    """The stream's Outbox as Delivered reads it: the marks of the messages that went out."""

    def __init__(self) -> None:
        self.marks: list = []

    def take_sent_marks(self) -> list:
        marks, self.marks = self.marks, []
        return marks


class _Instance:
    """The stream's instance owning t-0: after ``made_again`` it has read the new topic up to
    ``position``, and (as the coordinator, through its consumer) refuses a commit past it."""

    def __init__(self) -> None:
        self.made_again = False
        self.position = 0
        self.commits: list[dict] = []

    def call_instance(self, group: str, name: str, op):  # noqa: ANN001, ANN201
        with translated("the consumer service"):
            return op(self)

    def owned(self) -> list[tuple[str, int]]:
        return [("t", 0)]

    def committed(self, partitions: list) -> dict:
        return {tp: -1 for tp in partitions}

    def commit(self, offsets: dict) -> None:
        if self.made_again and any(o > self.position for o in offsets.values()):
            raise RemoteError(P.UNKNOWN_TOPIC_ID, "topic 't' of id id-t was deleted: nothing was committed")
        self.commits.append(dict(offsets))


def test_the_stream_forgets_the_old_topics_marks_once_a_commit_of_them_is_refused() -> None:
    out, instance = _SentMarks(), _Instance()
    delivered = consumemod.Delivered(out, SimpleNamespace(agent=instance), "billing", "i-1", True)  # type: ignore[arg-type]
    out.marks = [(1, {("t", 0): 10})]
    delivered.commit(auto=True)
    out.marks = [(2, {("t", 0): 20})]  # records 10..19 of the old topic went out, not committed yet
    instance.made_again, instance.position = True, 10
    out.marks = [(2, {("t", 0): 20}), (3, {("t", 0): 10})]  # then 0..9 of the new one
    with pytest.raises(ClusterError) as refused:
        delivered.commit(auto=True)
    assert refused.value.kind == "topic_not_found"
    instance.position = 15
    out.marks = [(4, {("t", 0): 15})]  # 10..14 of the new topic
    delivered.commit(auto=True)
    assert instance.commits == [{("t", 0): 10}, {("t", 0): 15}], \
        f"the new topic's records that went out were not committed until it passed the old marks: {instance.commits}"


def _records(offsets: range) -> list[Record]:
    return [Record("t", 0, o, 0, None, b"v", None) for o in offsets]


def test_marks_of_the_old_topic_still_on_their_way_are_not_committed_for_the_new_one() -> None:
    """The stream learns from its fetches which topic its instance's positions are of: a mark
    of an old-topic message that reaches the client after the instance moved to the new topic
    -- the outbox was behind -- must not be committed as an offset of the new topic, whose
    records below it did not all go out (the instance's position is past them: nothing refuses
    it), and were skipped if the connection broke then."""
    out, instance = _SentMarks(), _Instance()
    delivered = consumemod.Delivered(out, SimpleNamespace(agent=instance), "billing", "i-1", True)  # type: ignore[arg-type]
    delivered.note_topic_ids({"t": "id-t"})
    out.marks = [delivered.number(_records(range(10)))]
    delivered.commit(auto=True)
    on_its_way = delivered.number(_records(range(10, 20)))  # old records, still in the outbox
    instance.made_again, instance.position = True, 30  # the instance read the new topic to 30
    delivered.note_topic_ids({"t": NEW_ID})
    out.marks = [on_its_way, delivered.number(_records(range(10)))]  # both went out: new 0..9 last
    delivered.commit(auto=True)
    assert instance.commits == [{("t", 0): 10}, {("t", 0): 10}], \
        f"an old topic's mark was committed for the new topic past what went out of it: {instance.commits}"


def test_a_rest_instance_fetch_says_which_topic_its_positions_are_of() -> None:
    rest = RestInstance(auto_offset_reset="earliest")
    try:
        fetched = rest.request("fetch", timeout_ms=1000, max_records=10, positions=True)
        assert [r.offset for r in fetched["records"]] == list(range(10)) and fetched["topic_ids"] == {"t": "id-t"}
        rest.broker.make_topic_again(NEW_ID)
        rest.coordinator.topic_ids["t"] = NEW_ID
        for _ in range(40):  # the old topic's records fetched before go out first
            fetched = rest.request("fetch", timeout_ms=1000, max_records=10, positions=True)
            if fetched["records"] and fetched["records"][0].offset == 0:
                break
            assert fetched["topic_ids"] == {"t": "id-t"}, "positions of the old topic said to be the new topic's"
        assert fetched["topic_ids"] == {"t": NEW_ID}
    finally:
        rest.instance._close()


def test_marks_numbered_before_the_stream_first_learns_its_topics_id_are_not_committed_for_a_new_topic() -> None:
    """The stream's first fetch brings records of the old topic, and the instance learns inside
    that poll (its reactor pass after the records were taken) that the topic was made again: the
    partition waits for a position, so the answer names no id for t. The next fetch names the new
    topic -- the first id the stream hears of, so no change it could see -- and its records stay
    in the outbox. The old message's mark must not be committed for the new topic: the
    instance's position there is past it (nothing refuses it), and the new topic's records below
    it had not gone out (skipped, had the connection broken then)."""
    out, instance = _SentMarks(), _Instance()
    delivered = consumemod.Delivered(out, SimpleNamespace(agent=instance), "billing", "i-1", True)  # type: ignore[arg-type]
    delivered.note_topic_ids({})  # the first fetch: t's position was reset inside it
    old = delivered.number(_records(range(20)))
    instance.made_again, instance.position = True, 30
    delivered.note_topic_ids({"t": NEW_ID})
    delivered.number(_records(range(30)))  # the new topic's 0..29: still in the outbox
    out.marks = [old]
    delivered.commit(auto=True)
    assert instance.commits == [], \
        f"a mark of the old topic was committed for the new one past records that had not gone out: {instance.commits}"


class _Socket:
    """The stream's WebSocket as consume_commands reads it: ``texts`` from the client, once."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = list(texts)

    def receive(self, timeout: float = 0) -> str | None:
        return self.texts.pop(0) if self.texts else None


class _Out(_SentMarks):
    """The stream's Outbox: the marks of what went out, and the messages put for the client."""

    def __init__(self) -> None:
        super().__init__()
        self.put_messages: list[dict] = []

    def put(self, msg: dict, mark: object = None) -> None:
        self.put_messages.append(msg)


def test_an_explicit_commit_of_an_old_topics_offset_is_not_taken_for_new_records_still_on_their_way() -> None:
    """The client got the old topic's records up to 149 and commits offset 149 explicitly; the
    topic was made again meanwhile and the instance read the new topic to 200, whose records sit
    in the outbox (none went out yet). The instance's position is past 150: nothing refuses it
    there, and the new topic's records 0..149 -- never delivered if the connection breaks now --
    were skipped by the group. What the client commits of the new topic can only be of records
    that went out of it."""
    out, instance = _Out(), _Instance()
    delivered = consumemod.Delivered(out, SimpleNamespace(agent=instance), "billing", "i-1", True)  # type: ignore[arg-type]
    delivered.note_topic_ids({"t": "id-t"})
    out.marks = [delivered.number(_records(range(150)))]
    delivered.collect()
    instance.made_again, instance.position = True, 200
    delivered.note_topic_ids({"t": NEW_ID})
    delivered.number(_records(range(200)))  # the new topic's 0..199: in the outbox
    ws = _Socket(['{"commit": [{"topic": "t", "partition": 0, "offset": 149}]}'])
    consumemod.consume_commands(ws, out, SimpleNamespace(agent=instance), delivered, lambda: None)  # type: ignore[arg-type]
    assert instance.commits == [], f"an old topic's offset was committed for the new topic: {instance.commits}"
    assert [m.get("committed") for m in out.put_messages] == [False], out.put_messages
