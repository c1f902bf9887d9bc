"""A group consumer's commits name, per topic, the id of the topic its positions were read in
(OFFSET_COMMIT's ``topic_ids``) -- on every commit path: ``commit()`` sync and async, the
auto-commit, the commit before a revocation and at ``close``, a REST instance's commits -- so
that a position of a topic deleted and made again since is refused (``unknown_topic_id``)
instead of becoming the new topic's committed offset. The refusal is final for that commit:
no retry loop, no crash; the member goes on and reads the new topic.

A real GroupConsumer on a ManualClock, a fake broker leading t-0 (id ``id-t``) that refuses a
request naming another id than its topic's, and a scripted coordinator applying the id rule
(tests/unit/builders_group_consumer.py).
"""

from __future__ import annotations

from typing import Iterator

import pytest

from fabric import protocol as P
from fabric.client.admin import LATEST
from fabric.client.group import CommitFailed
from fabric.client.group_admin import GroupAdmin
from fabric.errors import CodedError, RemoteError
from fabric.metadata import BrokerInfo, ClusterMetadata, PartitionInfo, TopicInfo
from tests.unit.builders_group_consumer import T0, OffsetsCoordinator, RestInstance, SubscribedMember

AUTO_COMMIT_INTERVAL_MS = 1000
NEW_ID = "id-t2"


class _Member(SubscribedMember):
    """A member of group g that owns t-0, with auto-commit every AUTO_COMMIT_INTERVAL_MS."""

    def __init__(self) -> None:
        self.results: list[tuple[dict, Exception | None]] = []
        super().__init__(auto_commit_interval_ms=AUTO_COMMIT_INTERVAL_MS,
                         on_commit=lambda offsets, err: self.results.append((offsets, err)))

    def poll(self) -> list[int]:
        got: list[int] = []
        for _ in range(5):
            got = [r.offset for r in self.consumer.poll(1000, max_records=10)]
            if got:
                break
        return got

    def make_topic_again(self) -> None:
        """t deleted and made again: the coordinator (which forgets the old topic's committed
        offsets) and the broker know, the consumer not yet."""
        self.broker.make_topic_again(NEW_ID)
        self.coordinator.topic_ids["t"] = NEW_ID
        self.coordinator.committed.clear()

    def commits(self) -> list[dict]:
        return [h for c, h in self.link.calls if c == P.OFFSET_COMMIT]


@pytest.fixture
def member() -> Iterator[_Member]:
    m = _Member()
    yield m
    m.consumer.close()


def _commit_by(member: _Member, path: str) -> None:
    """A commit of the positions by ``path``; what it raises goes to the caller."""
    if path == "sync":
        member.consumer.commit()
    elif path == "async":
        member.consumer.commit(asynchronous=True)
    elif path == "auto":
        member.reactor.advance(AUTO_COMMIT_INTERVAL_MS)
        member.consumer._maybe_auto_commit()
    elif path == "revoke":
        member.consumer._revoke()
    else:
        member.consumer.close()


PATHS = ["sync", "async", "auto", "revoke", "close"]


@pytest.mark.parametrize("path", PATHS)
def test_every_commit_path_names_the_topic_the_positions_were_read_in(member: _Member, path: str) -> None:
    assert member.poll() == list(range(10))
    _commit_by(member, path)
    [sent] = member.commits()
    assert sent["topic_ids"] == {"t": "id-t"} and sent["offsets"] == [["t", 0, 10, "", 1]]  # with the leader epoch of the record before it
    assert member.coordinator.committed == {T0: 10}


@pytest.mark.parametrize("path", PATHS)
def test_a_commit_of_a_topic_made_again_since_is_refused_once_and_the_member_goes_on(member: _Member, path: str) -> None:
    assert member.poll() == list(range(10))
    member.make_topic_again()
    if path == "sync":
        with pytest.raises(CommitFailed) as refused:
            _commit_by(member, path)
        assert refused.value.code == P.UNKNOWN_TOPIC_ID
    else:
        _commit_by(member, path)  # refused: logged (and told on_commit), never raised
    assert len(member.commits()) == 1, "the refused commit was sent again"
    assert member.commits()[0]["topic_ids"] == {"t": "id-t"}
    assert member.coordinator.committed == {}, "the old topic's position became the new topic's committed offset"
    if path in ("async", "auto"):
        [(offsets, err)] = member.results
        assert offsets == {T0: 10} and isinstance(err, RemoteError) and err.code == P.UNKNOWN_TOPIC_ID
    if path in ("revoke", "close"):
        return
    # a member that fetched nothing more would not learn of the new topic otherwise
    assert member.consumer._md_in_flight, "the refusal did not ask for the metadata naming the new topic"
    got = []
    for _ in range(40):  # records of the old topic fetched before (up to 150) may come first
        got = member.poll()
        if got and got[0] == 0:
            break
    assert got == list(range(10)), "the member did not go on reading the new topic from its start"
    member.consumer.commit()
    assert member.commits()[-1]["topic_ids"] == {"t": NEW_ID} and member.coordinator.committed == {T0: 10}


def test_a_seek_names_the_topic_the_metadata_named_when_it_was_made(member: _Member) -> None:
    assert member.poll() == list(range(10))
    member.consumer.seek(T0, 500)
    member.make_topic_again()  # the consumer's metadata still names id-t: 500 is an offset of that topic
    with pytest.raises(CommitFailed):
        member.consumer.commit()
    assert member.commits()[-1]["topic_ids"] == {"t": "id-t"} and member.coordinator.committed == {}
    for _ in range(50):  # the refusal asked for metadata: once it names the new topic, a seek is into it
        if member.consumer.metadata.topics["t"].topic_id == NEW_ID:
            break
        member.reactor.run_once(100)
    member.consumer.seek(T0, 3)
    member.consumer.commit()
    assert member.commits()[-1]["topic_ids"] == {"t": NEW_ID} and member.coordinator.committed == {T0: 3}


def test_a_position_from_the_committed_offset_names_the_topic_of_the_assignment(member: _Member) -> None:
    member.coordinator.committed[T0] = 20
    assert member.poll() == list(range(20, 30))
    member.consumer.commit({T0: 25})
    assert member.commits()[-1]["topic_ids"] == {"t": "id-t"}


def _made_again_after_the_committed_offsets(member: _Member, consumer_knows: bool) -> None:
    """The group holds 20 for t-0; t is made again just after the coordinator answers the
    member's OFFSET_FETCH with it (``consumer_knows``: the member has the new metadata at once)."""
    member.coordinator.committed[T0] = 20
    answer = member.link.answer

    def made_again_after_the_answer(command: bytes, header: dict) -> dict:
        reply = answer(command, header)
        if command == P.OFFSET_FETCH:
            member.make_topic_again()
            if consumer_knows:
                member.consumer._take_metadata(ClusterMetadata.from_wire(member.broker.metadata.to_wire()))
        return reply
    member.link.answer = made_again_after_the_answer


@pytest.mark.parametrize("consumer_knows", [False, True])
def test_a_committed_offset_of_a_topic_made_again_before_the_member_reads_is_not_used_in_the_new_topic(
        member: _Member, consumer_knows: bool) -> None:
    """The group's committed offset 20 of t is taken at the assignment; the topic is made again
    before the member fetched from it -- the member's metadata still names the old topic, or
    already the new one. The member reads the new topic from its start, not from 20 (the new
    topic's records 0..19 were skipped, and its commits moved the group past them)."""
    _made_again_after_the_committed_offsets(member, consumer_knows)
    assert member.poll() == list(range(10)), "the old topic's committed offset was used in the new topic"
    member.consumer.commit()
    assert member.commits()[-1]["topic_ids"] == {"t": NEW_ID} and member.coordinator.committed == {T0: 10}


def test_an_assigned_consumers_committed_offset_of_a_topic_made_again_is_not_used_in_the_new_topic(
        member: _Member) -> None:
    """The same for a consumer assigned t-0 (no subscription): its start at the group's committed
    offset (``_position_at_commits``) is of the old topic."""
    member.consumer.unsubscribe()
    _made_again_after_the_committed_offsets(member, consumer_knows=False)
    member.consumer.assign([T0])
    assert member.poll() == list(range(10)), "the old topic's committed offset was used in the new topic"


def test_a_rest_instance_assigned_at_an_old_topics_committed_offset_reads_the_new_topic_whole() -> None:
    """A REST instance's assign starts new partitions at the group's committed offsets, looked
    up before it assigns them (``committed_offsets``, then a seek): taken just before the topic
    was made again, the old topic's offset must not become a position in the new one."""
    rest = RestInstance(auto_offset_reset="earliest")
    try:
        rest.request("subscribe", topics=[])  # no member: an assigned instance
        rest.coordinator.committed[T0] = 20
        answer = rest.link.answer

        def made_again_after_the_answer(command: bytes, header: dict) -> dict:
            reply = answer(command, header)
            if command == P.OFFSET_FETCH:
                rest.broker.make_topic_again(NEW_ID)
                rest.coordinator.topic_ids["t"] = NEW_ID
                rest.coordinator.committed.clear()
            return reply
        rest.link.answer = made_again_after_the_answer
        rest.request("assign", partitions=[["t", 0]])
        got = rest.fetch_records()
        assert got == list(range(10)), "the old topic's committed offset was used in the new topic"
    finally:
        rest.instance._close()


def test_partitions_of_one_topic_read_in_two_of_its_ids_name_the_replaced_one(member: _Member) -> None:
    """Whatever the commit names for a topic is judged for all its partitions: one position of
    the topic that is gone refuses the commit, never lets it through as the new topic's."""
    c = member.consumer
    c.metadata = ClusterMetadata(2, "c", {1: BrokerInfo(1, "b1", 1, 2)},
                                 {"t": TopicInfo("t", tuple(PartitionInfo("t", p, 1, 1, (1,), (1,)) for p in range(3)),
                                                 {}, NEW_ID)})
    c._read_in = {("t", 0): NEW_ID}
    c._positioned_in = {("t", 1): "id-t"}
    c.positions = {("t", 0): 10, ("t", 1): 10, ("t", 2): 10}
    assert c._commit_topic_ids({("t", 0): 10, ("t", 1): 10, ("t", 2): 10}) == {"t": "id-t"}
    assert c._commit_topic_ids({("t", 0): 10, ("t", 2): 10}) == {"t": NEW_ID}
    assert c._commit_topic_ids({("u", 0): 10}) == {}, "a topic the metadata does not know is named by name"


def test_an_offset_past_the_new_topics_position_names_the_topic_it_was_read_in(member: _Member) -> None:
    """The application commits offsets of records it got (``commit(offsets)``): one of the old
    topic's, past what the consumer read of the new topic since, is not the new topic's."""
    assert member.poll() == list(range(10))
    member.make_topic_again()
    for _ in range(40):  # the consumer learns of the new topic and reads it from its start
        if member.poll()[:1] == [0]:
            break
    assert member.consumer.position(T0) == 10 and member.consumer.metadata.topics["t"].topic_id == NEW_ID
    with pytest.raises(CommitFailed):
        member.consumer.commit({T0: 150})  # after a record of the old topic (the consumer returned up to 149)
    assert member.commits()[-1]["topic_ids"] == {"t": "id-t"} and member.coordinator.committed == {}
    member.consumer.commit({T0: 5})
    assert member.commits()[-1]["topic_ids"] == {"t": NEW_ID} and member.coordinator.committed == {T0: 5}


def test_a_rest_instance_commit_of_a_topic_made_again_is_refused_and_the_instance_goes_on() -> None:
    rest = RestInstance(auto_offset_reset="earliest")
    try:
        assert rest.fetch() == list(range(10))
        rest.broker.make_topic_again(NEW_ID)
        rest.coordinator.topic_ids["t"] = NEW_ID
        with pytest.raises(RemoteError) as refused:
            rest.request("commit")
        assert refused.value.code == P.UNKNOWN_TOPIC_ID and rest.committed == 0
        rest.idle(3 * 1000)  # the auto-commit meanwhile: nothing of the old topic is committed either
        assert T0 not in rest.coordinator.committed
        assert rest.fetch() == list(range(10)), "the instance did not go on with the new topic"
        rest.request("commit")
        assert rest.coordinator.committed == {T0: 10}
    finally:
        rest.instance._close()


class _Admin:
    """What GroupAdmin asks of an Admin: topic t (two partitions, id ``topic_id``), the coordinator."""

    def __init__(self, coordinator: OffsetsCoordinator) -> None:
        self.coordinator = coordinator
        self.topic_id = "id-t"

    def metadata(self, refresh: bool = True, **_kw: object) -> ClusterMetadata:
        return ClusterMetadata(1, "c", {}, {"t": TopicInfo("t", (), {}, self.topic_id)})

    def list_offsets(self, topic: str, spec: int, **_kw: object) -> dict[int, int]:
        return {0: 100 if spec == LATEST else 0, 1: 100 if spec == LATEST else 0}

    def call_coordinator(self, command: bytes, header: dict, retries: int = 3) -> dict:
        if command == P.OFFSET_FETCH:
            return {"offsets": [[t, p, o, ""] for (t, p), o in self.coordinator.committed.items()]}
        return self.coordinator(command, header)


def test_a_reset_planned_against_a_topic_made_again_before_it_is_applied_is_refused() -> None:
    coordinator = OffsetsCoordinator()
    admin = _Admin(coordinator)
    ga = GroupAdmin(admin)  # type: ignore[arg-type]
    ga.execute_reset("g", ga.plan_reset("g", "t", to_latest=True))
    assert coordinator.committed == {("t", 0): 100, ("t", 1): 100}
    plan = ga.plan_reset("g", "t", to_earliest=True)
    coordinator.topic_ids["t"] = admin.topic_id = NEW_ID  # made again between the plan and its execution
    with pytest.raises(CodedError) as refused:
        ga.execute_reset("g", plan)
    assert refused.value.code == P.UNKNOWN_TOPIC_ID
    assert coordinator.committed == {("t", 0): 100, ("t", 1): 100}, "a reset of the old topic was applied to the new one"


@pytest.mark.parametrize("path", ["sync", "auto", "close"])
def test_the_new_topics_position_is_committed_where_the_old_topics_was_committed_at_the_same_offset(
        member: _Member, path: str) -> None:
    """The member committed 10 in the old topic, then read the new topic's 0..9: its position
    10 there is not committed yet -- the coordinator forgot the old topic's offsets. Taken for
    "already committed" (the same number), the commit sent nothing and returned as if done,
    the group held no offset of the new topic, and the next owner started at auto_offset_reset
    (latest: records produced meanwhile skipped)."""
    assert member.poll() == list(range(10))
    member.consumer.commit()
    assert member.coordinator.committed == {T0: 10}
    member.make_topic_again()
    got: list[int] = []
    for _ in range(40):  # the old topic's records fetched before may come first
        got = member.poll()
        if got[:1] == [0]:
            break
    assert got == list(range(10)) and member.consumer.metadata.topics["t"].topic_id == NEW_ID
    member.results.clear()
    _commit_by(member, path)
    assert member.coordinator.committed == {T0: 10}, \
        "the new topic's position was not committed: the old topic's commit at the same offset stood for it"
    assert member.commits()[-1]["topic_ids"] == {"t": NEW_ID}


@pytest.mark.parametrize("path", ["sync", "auto"])
def test_a_member_holding_a_deleted_topic_still_commits_its_other_topics(member: _Member, path: str) -> None:
    """The member holds t-0 and u-0; t is deleted (not made again): the metadata no longer names
    it and lists its id as deleted. A commit of the positions that names t's position is refused
    whole, at every attempt -- the member read u fine and committed none of it, for as long as it
    held t-0 (no rebalance follows a deletion). A position of a deleted topic has nothing to be
    committed for: it is left out."""
    assert member.poll() == list(range(10))  # a member of generation 1
    c = member.consumer
    u0 = ("u", 0)
    c.metadata = ClusterMetadata(5, "c", {1: BrokerInfo(1, "b1", 1, 2)},
                                 {"u": TopicInfo("u", (PartitionInfo("u", 0, 1, 1, (1,), (1,)),), {}, "id-u")},
                                 coordinator="tcp://coordinator", deleted_topic_ids=("id-t",))
    member.coordinator.topic_ids = {"u": "id-u"}
    c.positions = {T0: 10, u0: 20}
    c._read_in = {T0: "id-t", u0: "id-u"}
    for _ in range(2):
        try:
            _commit_by(member, path)
        except CommitFailed:
            pass
    assert member.coordinator.committed == {u0: 20}, \
        f"the member's commits of u were refused for its position in the deleted t: {member.commits()}"
    assert all(["t", 0, 10] not in [e[:3] for e in h["offsets"]] for h in member.commits())
