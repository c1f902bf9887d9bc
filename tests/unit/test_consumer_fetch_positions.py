"""The consumer's two positions -- ``position`` (the next offset ``poll`` returns) and the fetch
position ahead of it (prefetch: records fetched, buffered, not yet returned) -- under answers
that land late or say the log moved.

- An OFFSET_OUT_OF_RANGE answer to a prefetch (retention moved the log start past the fetch
  position while records before it sat in the buffer) reset the partition at once, dropping
  the buffered records: records the consumer held, below the log end and never returned, were
  skipped -- and committed past by the next auto-commit. Kafka's consumer never has a fetch of
  a partition in flight past records it buffers of it, so its out-of-range is always at the
  position. Now the records buffered are returned first, and the reset (or, for
  ``auto_offset_reset="none"``, the error) happens once the position reaches the offset found
  out of range.
- A fetch sent before a ``seek`` (or before the partition was given up and assigned again) is
  not read after it: its records are not returned and do not move the position, whether the
  seek went back, forward, or to the offset the fetch was sent at.
- A poll's reactor pass (its callbacks) runs before it takes records: a poll cut short there
  (a Ctrl-C, a callback raising) leaves the positions as that pass set them (a reset of a topic
  made again, a seek, an assignment).
- Records given back (``give_back``) after their poll took them go out again -- but not over a
  position something else set since (a seek, a reset, an assignment leaving the partition out);
  an out-of-range answer at the position the poll itself set does not stop it (the records are
  read again, the range is checked again when the position gets there).

A real Consumer on a ManualClock with one RecordingClient per endpoint (tests/unit/fakes.py);
broker 1 leads t-0."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from fabric import protocol as P
from fabric.client.consumer import FETCH_RETRY_BACKOFF_MS, Consumer
from fabric.clock import ManualClock
from fabric.errors import RemoteError
from fabric.metadata import BrokerInfo, ClusterMetadata, PartitionInfo, TopicInfo
from tests.unit.fakes import FakeReactor, RecordingClient, as_leader_wrote, make_batch

T0 = ("t", 0)
LEADER = "tcp://b1:1"


class _Broker:
    """The consumer's clients: broker 1 (leader of t-0 at epoch 1) answered by the test."""

    def __init__(self) -> None:
        self.clients: dict[str, RecordingClient] = {}

    def client(self, endpoint: str) -> RecordingClient:
        return self.clients.setdefault(endpoint, RecordingClient())

    def _open(self, command: bytes) -> list[tuple[RecordingClient, int]]:
        return [(c, i) for c in self.clients.values() for i in c.unanswered if c.sent[i][0] == command]

    def answer_metadata(self) -> None:
        md = ClusterMetadata(1, "c", {1: BrokerInfo(1, "b1", 1, 2)},
                             {"t": TopicInfo("t", (PartitionInfo("t", 0, 1, 1, (1,), (1,)),), {}, "id-t")})
        for c, i in self._open(P.METADATA):
            c.unanswered.remove(i)
            c.sent[i][3]({"metadata": md.to_wire()}, [], None)

    def fetch_offset(self) -> int | None:
        """The offset of t-0 in the one FETCH in flight (None: none)."""
        open_ = self._open(P.FETCH)
        assert len(open_) <= 1
        if not open_:
            return None
        c, i = open_[0]
        [[_, _, offset, *_]] = c.sent[i][1]["parts"]
        return offset

    def answer_fetch(self, records: int = 0, *, error: int = 0, hw: int = 1000, log_start: int = 0,
                     at: int | None = None) -> None:
        """Answer the FETCH in flight: ``records`` records from its offset (or ``at``), or
        ``error``."""
        [(c, i)] = self._open(P.FETCH)
        [[_, _, offset, *_]] = c.sent[i][1]["parts"]
        base = offset if at is None else at
        data = as_leader_wrote(make_batch(records, tag="r"), base, 1) if records and not error else b""
        c.unanswered.remove(i)
        c.sent[i][3]({"parts": [["t", 0, error, hw, hw, log_start, None]]}, [data], None)

    def answer_list_offsets(self, offset: int) -> list[int]:
        """Answer every LIST_OFFSETS in flight with ``offset``; the specs they asked for."""
        specs = []
        for c, i in self._open(P.LIST_OFFSETS):
            [[_, _, spec]] = c.sent[i][1]["parts"]
            specs.append(spec)
            c.unanswered.remove(i)
            c.sent[i][3]({"parts": [["t", 0, 0, offset]]}, [], None)
        return specs


@pytest.fixture
def make() -> Any:
    made: list[Consumer] = []

    def build(policy: str = "earliest") -> tuple[Consumer, _Broker, FakeReactor]:
        broker, reactor = _Broker(), FakeReactor(ManualClock(1_000))
        c = Consumer("tcp://127.0.0.1:1", clock=reactor.clock, reactor=reactor, client_factory=broker.client,
                     auto_offset_reset=policy)
        made.append(c)
        c.assign([T0])
        c.seek(T0, 0)
        c.poll(0)
        broker.answer_metadata()
        c.poll(0)
        assert broker.fetch_offset() == 0
        return c, broker, reactor
    yield build
    for c in made:
        c.close()


def _offsets(records: list) -> list[int]:
    return [r.offset for r in records]


# -- an out-of-range prefetch ----------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["earliest", "latest"])
def test_records_buffered_before_a_prefetch_found_out_of_range_are_returned_before_the_reset(make: Any,
                                                                                            policy: str) -> None:
    c, broker, reactor = make(policy)
    broker.answer_fetch(50)  # 0..49 buffered; the prefetch at 50 goes out at once
    assert broker.fetch_offset() == 50
    assert _offsets(c.poll(0, max_records=10)) == list(range(10))
    # retention moved the log start to 60 meanwhile: the prefetch at 50 is out of range
    broker.answer_fetch(error=P.OFFSET_OUT_OF_RANGE, log_start=60)
    got: list = []
    for _ in range(10):
        got += c.poll(0, max_records=10)
        reactor.advance(FETCH_RETRY_BACKOFF_MS)
        if (broker.fetch_offset() or 60) < 60:
            broker.answer_fetch(error=P.OFFSET_OUT_OF_RANGE, log_start=60)
        broker.answer_list_offsets(60 if policy == "earliest" else 1000)
    assert _offsets(got) == list(range(10, 50))  # what the consumer held is not skipped
    assert c.position(T0) == (60 if policy == "earliest" else 1000)


def test_with_no_reset_policy_the_records_buffered_before_an_out_of_range_prefetch_come_first(make: Any) -> None:
    c, broker, reactor = make("none")
    broker.answer_fetch(50)
    assert _offsets(c.poll(0, max_records=10)) == list(range(10))
    broker.answer_fetch(error=P.OFFSET_OUT_OF_RANGE, log_start=60)
    assert _offsets(c.poll(0, max_records=100)) == list(range(10, 50))
    fetches = sum(1 for cl in broker.clients.values() for s in cl.sent if s[0] == P.FETCH)
    with pytest.raises(RemoteError) as raised:
        for _ in range(5):
            reactor.advance(FETCH_RETRY_BACKOFF_MS)
            if broker.fetch_offset() is not None:
                broker.answer_fetch(error=P.OFFSET_OUT_OF_RANGE, log_start=60)
            c.poll(0)
    assert raised.value.code == P.OFFSET_OUT_OF_RANGE and c.position(T0) == 50
    assert sum(1 for cl in broker.clients.values() for s in cl.sent if s[0] == P.FETCH) - fetches <= 5


def test_a_prefetch_found_out_of_range_is_not_asked_again_in_a_loop_while_records_wait(make: Any) -> None:
    c, broker, reactor = make("earliest")
    broker.answer_fetch(50)
    assert _offsets(c.poll(0, max_records=10)) == list(range(10))
    broker.answer_fetch(error=P.OFFSET_OUT_OF_RANGE, log_start=60)
    for _ in range(20):  # the application works on its records; its polls find the answers in
        c.poll(0, max_records=1)
        if broker.fetch_offset() is not None:
            broker.answer_fetch(error=P.OFFSET_OUT_OF_RANGE, log_start=60)
    assert sum(1 for cl in broker.clients.values() for s in cl.sent if s[0] == P.FETCH) <= 4


# -- answers sent before a seek or a reassignment --------------------------------------------------
@pytest.mark.parametrize("to", [20, 50, 80, 0])
def test_a_prefetch_sent_before_a_seek_is_not_read_after_it(make: Any, to: int) -> None:
    c, broker, reactor = make("earliest")
    broker.answer_fetch(50)
    assert _offsets(c.poll(0, max_records=10)) == list(range(10))
    assert broker.fetch_offset() == 50
    c.seek(T0, to)
    broker.answer_fetch(50, hw=1000)  # the prefetch's answer: 50..99
    got = c.poll(0)
    assert got == [] and c.position(T0) == to
    assert broker.fetch_offset() == to
    broker.answer_fetch(5)
    assert _offsets(c.poll(0)) == list(range(to, to + 5))


def test_an_out_of_range_answer_sent_before_a_seek_does_not_reset_after_it(make: Any) -> None:
    c, broker, reactor = make("latest")
    broker.answer_fetch(50)
    c.poll(0, max_records=50)
    assert broker.fetch_offset() == 50
    c.seek(T0, 10)
    broker.answer_fetch(error=P.OFFSET_OUT_OF_RANGE, log_start=60)  # about offset 50, not 10
    c.poll(0)
    assert c.position(T0) == 10 and broker.fetch_offset() == 10
    assert broker.answer_list_offsets(1000) == []


def test_a_fetch_sent_before_the_partition_was_given_up_is_not_read_once_it_is_assigned_again(make: Any) -> None:
    c, broker, reactor = make("earliest")
    broker.answer_fetch(50)
    c.poll(0, max_records=10)
    c.assign([])        # a rebalance: revoked...
    c.assign([T0])      # ...and assigned again, at the committed offset 5
    c.seek(T0, 5)
    broker.answer_fetch(50)  # the old prefetch's answer: 50..99
    assert c.poll(0) == [] and c.position(T0) == 5
    broker.answer_fetch(3)
    assert _offsets(c.poll(0)) == [5, 6, 7]


# -- a topic deleted and made again under the consumer -----------------------------------------------
def _metadata(version: int, topic_id: str | None) -> dict:
    """Metadata naming topic t with ``topic_id`` (None: no topic t -- deleted)."""
    topics = {} if topic_id is None else {
        "t": TopicInfo("t", (PartitionInfo("t", 0, 1, 1, (1,), (1,)),), {}, topic_id)}
    return {"metadata": ClusterMetadata(version, "c", {1: BrokerInfo(1, "b1", 1, 2)}, topics).to_wire()}


def _fetch_topic_ids(broker: _Broker) -> dict:
    [(c, i)] = broker._open(P.FETCH)
    return c.sent[i][1]["topic_ids"]


def _answer_metadata(broker: _Broker, reply: dict) -> None:
    for c in broker.clients.values():
        for i in [i for i in c.unanswered if c.sent[i][0] == P.METADATA]:
            c.unanswered.remove(i)
            c.sent[i][3](reply, [], None)


def _fetched_at(broker: _Broker, topic_id: str) -> list[int]:
    """The offsets of t-0 of every FETCH sent naming t by ``topic_id``."""
    return [h["parts"][0][2] for cl in broker.clients.values() for cmd, h, _, _ in cl.sent
            if cmd == P.FETCH and h["topic_ids"] == {"t": topic_id}]


@pytest.mark.parametrize("deleted_first", [False, True])
def test_a_position_in_a_topic_deleted_and_made_again_is_not_taken_into_the_new_topic(make: Any,
                                                                                    deleted_first: bool) -> None:
    """Topic t (id-t) read to offset 50, then deleted and made again with the same name (id-t2)
    and 80 records written to it: position 50 belongs to the old topic. Kept, the consumer
    fetched the new topic from 50 and skipped its records 0..49 (and a group member committed
    50 for them). The new topic is read as one never read: from ``auto_offset_reset``."""
    c, broker, reactor = make("earliest")
    broker.answer_fetch(50, hw=50)
    assert _offsets(c.poll(0, max_records=100)) == list(range(50))
    # the old leader no longer holds the topic under id-t: the fetch is refused, metadata asked for
    broker.answer_fetch(error=P.UNKNOWN_TOPIC_OR_PARTITION)
    if deleted_first:
        reactor.advance(FETCH_RETRY_BACKOFF_MS)
        c.poll(0)
        _answer_metadata(broker, _metadata(2, None))
        reactor.advance(1000)
        c.poll(0)
    reactor.advance(1000)
    c.poll(0)
    _answer_metadata(broker, _metadata(3, "id-t2"))
    if broker.fetch_offset() is not None:  # a fetch of the old topic sent meanwhile: refused as such
        broker.answer_fetch(error=P.UNKNOWN_TOPIC_OR_PARTITION)
    for _ in range(5):
        reactor.advance(FETCH_RETRY_BACKOFF_MS)
        c.poll(0)
        broker.answer_list_offsets(0)
    new_topic_fetched_at = _fetched_at(broker, "id-t2")
    assert new_topic_fetched_at == [0], "the new topic was fetched at the old topic's position"
    assert c.position(T0) == 0
    broker.answer_fetch(80, hw=80)
    assert _offsets(c.poll(0, max_records=100)) == list(range(80))


def test_a_negative_seek_is_refused_and_the_position_kept(make: Any) -> None:
    """Kafka's ``seek`` refuses a negative offset. Taken, -1 reset the partition by its policy
    (``latest``: past records never read) and an auto-commit meanwhile was refused whole."""
    c, broker, _ = make()
    with pytest.raises(ValueError, match="negative"):
        c.seek(T0, -1)
    assert c.position(T0) == 0


@pytest.mark.parametrize("policy", ["latest", "earliest"])
def test_a_position_never_read_in_the_old_topic_is_kept_when_metadata_names_the_new_one(make: Any,
                                                                                      policy: str) -> None:
    """The consumer's metadata (id-t) is older than the topic: t was deleted and made again
    (id-t2) before anything of it was read here, and the position 0 was set by the application
    (a seek; a group member's committed offset is set so too). Its first fetch, naming id-t, is
    refused; newer metadata names id-t2. The position belongs to no old topic: it is kept, and
    the new topic is read from 0. Taken for a topic made again, it was reset -- ``latest``
    skipped the new topic's records 0..999, ``earliest`` read from the log start, not 0."""
    c, broker, reactor = make(policy)
    broker.answer_fetch(error=P.UNKNOWN_TOPIC_OR_PARTITION)  # the broker holds t as id-t2
    _answer_metadata(broker, _metadata(2, "id-t2"))
    for _ in range(5):
        reactor.advance(1000)
        c.poll(0)
        _answer_metadata(broker, _metadata(2, "id-t2"))
        broker.answer_list_offsets(1000 if policy == "latest" else 500)
        if broker.fetch_offset() is not None and _fetch_topic_ids(broker) == {"t": "id-t"}:
            broker.answer_fetch(error=P.UNKNOWN_TOPIC_OR_PARTITION)
    assert c.position(T0) == 0
    assert broker.fetch_offset() == 0 and _fetch_topic_ids(broker) == {"t": "id-t2"}
    broker.answer_fetch(3)
    assert _offsets(c.poll(0)) == [0, 1, 2]


def test_records_of_a_fetch_naming_the_old_topic_id_answered_after_the_new_metadata_are_not_read(make: Any) -> None:
    """A fetch sent naming id-t is answered (the broker still held the old topic) only after
    metadata naming id-t2 was taken: its records are the deleted topic's. Read, they reached the
    application and moved the position to 50 -- in the new topic, whose records 0..49 were
    then skipped. They are dropped, and the new topic fetched from the position."""
    c, broker, reactor = make("earliest")
    reactor.advance(5_000)  # the fetch at 0 stalls: metadata is asked for
    c.poll(0)
    _answer_metadata(broker, _metadata(2, "id-t2"))
    assert _fetch_topic_ids(broker) == {"t": "id-t"}, "still in flight: same leader, same epoch"
    broker.answer_fetch(50, hw=50)  # the old topic's records
    assert c.poll(0) == [] and c.position(T0) == 0
    assert broker.fetch_offset() == 0 and _fetch_topic_ids(broker) == {"t": "id-t2"}


# -- a poll cut short in its reactor pass, and records given back ------------------------------------------
def _cut_in_the_polls_pass(monkeypatch: pytest.MonkeyPatch, reactor: FakeReactor,
                           callbacks: Callable[[], None]) -> None:
    """The next pass a poll runs with records buffered (``run_once(0)``, before it takes them):
    the ``callbacks`` land in it, then a KeyboardInterrupt (a Ctrl-C there, or a callback
    raising)."""
    real = reactor.run_once

    def run_once(timeout_ms_max: int = 1000) -> None:
        if timeout_ms_max != 0:
            return real(timeout_ms_max)
        monkeypatch.setattr(reactor, "run_once", real)
        callbacks()
        raise KeyboardInterrupt
    monkeypatch.setattr(reactor, "run_once", run_once)


def _returned_then_out_of_range(c: Consumer, broker: _Broker, offsets: range, **answer: int) -> None:
    """A poll returns ``offsets``, the records buffered; then, outside any poll (as in a consumer
    service's pass between its client's fetches), the prefetch at the position that poll set is
    answered out of range (``answer``: the log's new bounds), which resets the partition -- or,
    with ``latest``, a log end (``hw``) below the position read up to moves it to that HW
    (tests/unit/test_consumer_log_truncated_under_position.py)."""
    assert _offsets(c.poll(0, max_records=len(offsets))) == list(offsets)
    assert broker.fetch_offset() == offsets[-1] + 1
    broker.answer_fetch(error=P.OFFSET_OUT_OF_RANGE, **answer)
    assert c.position(T0) == (answer.get("hw") if c.auto_offset_reset == "latest" else None)


def test_a_poll_cut_after_a_reset_of_a_topic_made_again_in_its_pass_does_not_give_the_old_position_back(
        make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records 10..49 of topic t (id-t) buffered; in the poll's reactor pass, metadata naming t
    by a new id (deleted and made again) resets the partition, then a Ctrl-C cuts the poll. The
    reset stands: put back, the old topic's position 10 had the new topic read from 10 and its
    records 0..9 skipped."""
    c, broker, reactor = make("earliest")
    broker.answer_fetch(50, hw=50)
    assert _offsets(c.poll(0, max_records=10)) == list(range(10))
    broker.answer_fetch(error=P.UNKNOWN_TOPIC_OR_PARTITION)  # the prefetch refused: metadata is asked for
    reactor.advance(FETCH_RETRY_BACKOFF_MS)
    _cut_in_the_polls_pass(monkeypatch, reactor, lambda: _answer_metadata(broker, _metadata(2, "id-t2")))
    with pytest.raises(KeyboardInterrupt):
        c.poll(0, max_records=10)
    assert c.position(T0) is None, "the give-back put the old topic's position back over the reset"
    assert _fetch_topic_ids(broker) == {"t": "id-t"}  # sent by the cut poll before its pass: refused
    broker.answer_fetch(error=P.UNKNOWN_TOPIC_OR_PARTITION)
    for _ in range(3):
        reactor.advance(FETCH_RETRY_BACKOFF_MS)
        c.poll(0)
        broker.answer_list_offsets(0)
    assert c.position(T0) == 0 and broker.fetch_offset() == 0 and _fetch_topic_ids(broker) == {"t": "id-t2"}


@pytest.mark.parametrize("moved", ["seek forward", "seek to where the poll moved it", "assigned again"])
def test_a_poll_cut_after_a_callback_in_its_pass_moved_the_position_leaves_it_there(
        make: Any, monkeypatch: pytest.MonkeyPatch, moved: str) -> None:
    """Position 10, records buffered; a callback in the poll's pass seeks the partition (or it is
    revoked and assigned again: no position, to be found by ``auto_offset_reset``), then raises.
    The position stays where the callback put it."""
    c, broker, reactor = make("earliest")
    broker.answer_fetch(50)
    assert _offsets(c.poll(0, max_records=10)) == list(range(10))

    def callback() -> None:
        if moved == "assigned again":
            c.assign([])
            c.assign([T0])
        else:
            c.seek(T0, 40 if moved == "seek forward" else 20)
    _cut_in_the_polls_pass(monkeypatch, reactor, callback)
    with pytest.raises(KeyboardInterrupt):
        c.poll(0, max_records=10)
    assert c.position(T0) == {"seek forward": 40, "seek to where the poll moved it": 20, "assigned again": None}[moved]


def test_records_given_back_after_an_out_of_range_answer_at_the_position_their_poll_set_go_out_again(
        make: Any) -> None:
    """The poll returned 0..49 (position 50); then the prefetch at 50 is answered out of range --
    the log end fell to 40 (records 40..49 lost with a leader) -- which moves the partition to
    40, and the records are given back (a consumer service's client never got them). The move
    is about the position the poll set, which the give-back takes back: the records go out
    again from 0 (0..39 are in the log), and the range is checked again when the position gets
    there. Left at 40, 0..39 -- never processed -- were skipped."""
    c, broker, reactor = make("latest")
    broker.answer_fetch(50)
    _returned_then_out_of_range(c, broker, range(50), hw=40)
    c.give_back([(T0, 0)])
    assert c.position(T0) == 0
    c.poll(0)
    assert broker.fetch_offset() == 0
    broker.answer_fetch(40, hw=40)
    assert _offsets(c.poll(0, max_records=100)) == list(range(40))


def test_records_given_back_after_an_assign_that_keeps_their_partition_go_out_again(make: Any) -> None:
    """The poll returned 10..19 (position 20); ``assign`` names the partitions already held (t-0
    kept: it keeps its position, as ``assign`` says); then the records are given back (a consumer
    service's client never got them). The assignment took t-0 out of what the give-back may move
    back, so 10..19 -- never processed -- were skipped, and committed past by the next commit."""
    c, broker, reactor = make("earliest")
    broker.answer_fetch(50)
    assert _offsets(c.poll(0, max_records=10)) == list(range(10))
    assert _offsets(c.poll(0, max_records=10)) == list(range(10, 20))
    c.assign([T0])
    c.give_back([(T0, 10)])
    assert c.position(T0) == 10, "the records given back were skipped"


def test_records_given_back_over_an_out_of_range_reset_stay_the_old_topics(make: Any) -> None:
    """The poll returned 10..49 of topic t (id-t; position 50); then the prefetch at 50 is
    answered out of range, which resets the partition, and the give-back takes position 10
    back. Position 10 is the old topic's, as before the reset. Then t is deleted and made again
    (id-t2): the position starts again as never read. The reset forgot which topic the position
    was read in, and the given-back 10 counted as set from outside: the new topic was read from
    10, its records 0..9 skipped."""
    c, broker, reactor = make("earliest")
    broker.answer_fetch(50)
    assert _offsets(c.poll(0, max_records=10)) == list(range(10))
    _returned_then_out_of_range(c, broker, range(10, 50), hw=40)
    c.give_back([(T0, 10)])
    assert c.position(T0) == 10
    c.poll(0)
    assert broker.fetch_offset() == 10
    broker.answer_fetch(error=P.UNKNOWN_TOPIC_OR_PARTITION)  # the broker holds t as id-t2 now
    reactor.advance(FETCH_RETRY_BACKOFF_MS)
    c.poll(0)
    _answer_metadata(broker, _metadata(2, "id-t2"))
    for _ in range(3):
        if broker.fetch_offset() is not None and _fetch_topic_ids(broker) == {"t": "id-t"}:
            broker.answer_fetch(error=P.UNKNOWN_TOPIC_OR_PARTITION)  # sent before the metadata came
        reactor.advance(FETCH_RETRY_BACKOFF_MS)
        c.poll(0)
        broker.answer_list_offsets(0)
    new_topic_fetched_at = _fetched_at(broker, "id-t2")
    assert new_topic_fetched_at == [0], "the old topic's position was taken into the new topic"


# -- give_back's own input ---------------------------------------------------------------------------
def test_a_give_back_to_a_negative_offset_is_refused_and_changes_nothing(make: Any) -> None:
    """As ``seek``: taken, -1 became the position, the fetch at -1 was answered out of range and
    the partition reset by its policy (``latest``: past records never returned)."""
    c, broker, _ = make("latest")
    broker.answer_fetch(50)
    assert _offsets(c.poll(0, max_records=10)) == list(range(10))
    with pytest.raises(ValueError, match="negative"):
        c.give_back([(T0, 5), (T0, -1)])
    assert c.position(T0) == 10


def test_a_give_back_moves_no_partition_before_where_the_poll_took_from(make: Any) -> None:
    """The last poll took 10..19: a give-back names the first record not handed over, never one
    an earlier poll returned; below that, the partition goes back only to 10."""
    c, broker, _ = make("earliest")
    broker.answer_fetch(50)
    assert _offsets(c.poll(0, max_records=10)) == list(range(10))
    assert _offsets(c.poll(0, max_records=10)) == list(range(10, 20))
    c.give_back([(T0, 3)])
    assert c.position(T0) == 10


def test_a_give_back_after_an_out_of_range_reset_never_moves_past_where_the_poll_left_the_partition(
        make: Any) -> None:
    """The poll returned 0..49 (position 50); then the prefetch at 50 was answered out of range
    (retention moved the log start to 60), which reset the partition -- no position until the
    log start is looked up -- and kept it for the give-back. A give-back naming 70, past
    anything the poll took, moved the partition there: forward, past 60..69, which the reset
    (``earliest``) would have returned."""
    c, broker, reactor = make("earliest")
    broker.answer_fetch(50)
    _returned_then_out_of_range(c, broker, range(50), log_start=60)
    c.give_back([(T0, 70)])
    assert c.position(T0) != 70, "the give-back moved the partition forward, past records never returned"
    c.poll(0)
    assert broker.answer_list_offsets(60) == [-2]
    assert c.position(T0) == 60
