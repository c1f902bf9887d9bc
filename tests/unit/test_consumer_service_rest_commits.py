"""What a REST consumer instance (``nodes.consumer.Instance``) auto-commits. The records of a
fetch answer may never reach the REST client (it timed out, the connection dropped, the
gateway worker died mid-answer), so, as with Kafka's REST proxy, whose consumer auto-commits
inside the *next* poll, an auto-commit (the timer in ``maintain()``, a revocation, the idle
expiry's close, a gateway reclaiming a dead process's instance) never covers the latest
answer until the client comes back with its next request. An explicit commit of the
positions, and the client's own delete, cover everything handed out.

A real Instance with a real GroupConsumer on a ManualClock: a scripted coordinator that keeps
the committed offsets, and one fake broker leading t-0 whose replies land in the consumer's
next reactor pass. Driven on the test thread, one request at a time, as its thread would."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

import nodes.consumer as consumer_mod
from fabric import protocol as P
from fabric.clock import ManualClock
from fabric.errors import RemoteError
from fabric.metadata import BrokerInfo, ClusterMetadata, PartitionInfo, TopicInfo
from nodes.consumer import Instance, InstanceHost
from tests.unit.fakes import FakeReactor, NoHeartbeat, ScriptedCoordinatorLink, as_leader_wrote, make_batch

T0 = ("t", 0)
LOG_END_OFFSET = 1000
AUTO_COMMIT_INTERVAL_MS = 1000
RECORDS_PER_FETCH_ANSWER = 50   # what the broker hands out per FETCH: a fetch of 10 leaves some buffered


class _Broker:
    """Broker 1, leader of t-0 (records 0..LOG_END_OFFSET-1), as the consumer's RPC client:
    every request is answered in the consumer's next reactor pass, as a socket's reply is."""

    def __init__(self) -> None:
        self.replies: list[Callable[[], None]] = []
        self.metadata = ClusterMetadata(1, "c", {1: BrokerInfo(1, "b1", 1, 2)},
                                        {"t": TopicInfo("t", (PartitionInfo("t", 0, 1, 1, (1,), (1,)),), {}, "id-t")})

    def client(self, endpoint: str) -> "_Broker":
        return self

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        if command == P.METADATA:
            self.replies.append(lambda: callback({"metadata": self.metadata.to_wire()}, [], None))
        elif command == P.FETCH:
            [[topic, partition, offset, _max_bytes, _epoch]] = header["parts"]
            n = min(RECORDS_PER_FETCH_ANSWER, LOG_END_OFFSET - offset)
            data = as_leader_wrote(make_batch(n), offset, 1) if n > 0 else b""
            entry = [topic, partition, 0, LOG_END_OFFSET, LOG_END_OFFSET, 0, None]
            self.replies.append(lambda: callback({"parts": [entry]}, [data], None))
        else:
            raise AssertionError(f"the fake broker does not answer {command!r}")
        return len(self.replies)

    def cancel(self, request_id: int) -> bool:
        return False

    def close(self) -> None:
        pass


class _Reactor(FakeReactor):
    """A pass delivers the broker's replies waiting; with none, it waits out its timeout."""

    def __init__(self, broker: _Broker) -> None:
        super().__init__(ManualClock(10_000))
        self.broker = broker

    def run_once(self, timeout_ms_max: int = 1000) -> None:
        if not self.broker.replies:
            self.advance(timeout_ms_max)
            return
        replies, self.broker.replies = self.broker.replies, []
        for reply in replies:
            reply()
        self.run_due()


class _Coordinator:
    """Group g of one member (generation 1) that owns t-0; keeps what is committed. As the real
    one (nodes/coordinator/offsets.py), it refuses a member's commit below the committed offset;
    a commit outside any generation (an assigned instance's) may move it back."""

    def __init__(self) -> None:
        self.committed: dict[tuple[str, int], int] = {}

    def __call__(self, command: bytes, header: dict) -> dict:
        if command == P.JOIN_GROUP:
            return {"member_id": header["member_id"] or "m-1", "generation": 1}
        if command == P.SYNC_GROUP:
            return {"generation": 1, "assignment": [list(T0)]}
        if command == P.OFFSET_FETCH:
            return {"offsets": [[t, p, self.committed.get((t, p), 0), ""] for t, p in header["partitions"]]}
        if command == P.OFFSET_COMMIT:
            if header["generation"] >= 0 and any(o < self.committed.get((t, p), 0) for t, p, o in header["offsets"]):
                raise RemoteError(P.INVALID_COMMIT_OFFSET, "below the committed offset")
            for t, p, o in header["offsets"]:
                self.committed[(t, p)] = o
            return {}
        if command == P.LEAVE_GROUP:
            return {}
        raise AssertionError(f"the scripted coordinator does not answer {command!r}")


class _Rig:
    """A REST instance of group g (auto-commit every AUTO_COMMIT_INTERVAL_MS), created and
    subscribed to t, as its client and its service drive it."""

    def __init__(self) -> None:
        self.broker = _Broker()
        self.reactor = _Reactor(self.broker)
        self.coordinator = _Coordinator()
        config = {"coordinator": ScriptedCoordinatorLink(self.coordinator), "heartbeat_factory": NoHeartbeat.make,
                  "clock": self.reactor.clock, "reactor": self.reactor, "client_factory": self.broker.client,
                  "auto_offset_reset": "earliest", "auto_commit_interval_ms": AUTO_COMMIT_INTERVAL_MS}
        host = InstanceHost("consumer-1", ["127.0.0.1:1"], 60_000, lambda e: None)  # a bug raises out of _serve
        self.instance = Instance(host, "g", "rest-1", config, 0)
        self.request("create")
        self.request("subscribe", topics=["t"])

    def request(self, op: str, **header: Any) -> dict:
        """One request from the REST client, served as the instance's thread serves it."""
        answers: list = []
        self.instance._serve(op, header, lambda h, err: answers.append((h, err)))
        [(answer, err)] = answers
        if err is not None:
            raise err
        return answer

    def fetch(self, max_records: int = 10, **header: Any) -> list[int]:
        """The offsets of one fetch answer (records of t-0)."""
        return [r.offset for r in self.request("fetch", timeout_ms=1000, max_records=max_records, **header)["records"]]

    def idle(self, ms: int) -> None:
        """``ms`` pass with no request from the client: the service maintains the instance."""
        for _ in range(ms // 100):
            self.reactor.clock.advance(100)
            self.instance._maintain()

    @property
    def committed(self) -> int:
        return self.coordinator.committed.get(T0, 0)


@pytest.fixture
def rig() -> Iterator[_Rig]:
    made = _Rig()
    yield made
    made.instance._close()


def test_an_answer_is_auto_committed_only_once_the_client_comes_back(rig: _Rig) -> None:
    assert rig.fetch() == list(range(0, 10))
    rig.idle(3 * AUTO_COMMIT_INTERVAL_MS)  # the answer may never have reached the client
    assert rig.committed == 0, "records 0..9 were committed while their answer may be lost: the next member skips them"
    assert rig.fetch() == list(range(10, 20))  # the client read 0..9: it asks for more
    rig.idle(3 * AUTO_COMMIT_INTERVAL_MS)
    assert rig.committed == 10, "the first answer (0..9) is confirmed by the next request; 10..19 is not"
    rig.request("assignment")  # any request of the client confirms what it got
    rig.idle(2 * AUTO_COMMIT_INTERVAL_MS)
    assert rig.committed == 20


def test_an_explicit_commit_of_the_positions_covers_the_latest_answer(rig: _Rig) -> None:
    rig.fetch()
    rig.request("commit", offsets=None)
    assert rig.committed == 10


@pytest.mark.parametrize("end", ["idle-expiry", "reclaimed-by-the-gateway"])
def test_closing_an_instance_the_client_left_does_not_commit_its_latest_answer(rig: _Rig, end: str) -> None:
    rig.fetch()
    rig.fetch()
    if end == "idle-expiry":
        rig.instance._close()  # the service's idle expiry stops the instance: its thread closes it
    else:  # a gateway process replaced the one that was answering: it deletes that one's instances
        rig.request("delete", owner="gateway:gw-1:old-process")
        rig.instance._close()
    assert rig.committed == 10, "the close committed the answer 10..19, which may have died with its HTTP answer"


def test_the_clients_delete_commits_the_positions(rig: _Rig) -> None:
    rig.fetch()
    rig.request("delete")
    rig.instance._close()  # the thread closes the instance after answering the delete
    assert rig.committed == 10


def test_a_rebalance_between_requests_does_not_commit_the_latest_answer(rig: _Rig) -> None:
    rig.fetch()
    rig.fetch()
    rig.instance.consumer.request_rejoin(1, reset_member=False)  # a heartbeat answered "rebalance"
    rig.idle(100)  # maintain() rejoins: the revocation commits, and the same partition comes back
    assert rig.committed == 10
    assert rig.fetch() == list(range(10, 20)), "the new assignment starts at the committed offset: again, not skipped"


def test_records_given_back_for_the_byte_limit_stay_uncommitted_and_come_again(rig: _Rig) -> None:
    assert rig.fetch(max_bytes=1) == [0]  # one record fits; 1..9 are given back (a seek to 1)
    rig.request("assignment")
    rig.idle(2 * AUTO_COMMIT_INTERVAL_MS)
    assert rig.committed == 1
    assert rig.fetch() == list(range(1, 11))
    rig.idle(2 * AUTO_COMMIT_INTERVAL_MS)
    assert rig.committed == 1


def test_a_seek_back_under_an_answer_commits_nothing_past_it(rig: _Rig) -> None:
    rig.fetch()
    rig.fetch()
    rig.request("seek", to="offsets", offsets=[["t", 0, 5]])  # the client reads 5.. again
    assert rig.fetch() == list(range(5, 15))
    rig.idle(2 * AUTO_COMMIT_INTERVAL_MS)
    assert rig.committed <= 5, f"committed {rig.committed}: past the first record of the answer 5..14"


def test_a_fetch_that_gives_its_records_back_leaves_nothing_held(rig: _Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A poll that outlasted its caller: no records go out, the position goes back, and the
    records before it (confirmed by this very request) are committed."""
    rig.fetch()
    waited_ms = iter([0.0, 10_000.0])  # not at the start of the fetch; after its poll, long
    monkeypatch.setattr(consumer_mod, "_waited_ms", lambda h: next(waited_ms))
    with pytest.raises(RemoteError) as e:
        rig.fetch(budget_ms=1000, _received=0.0)
    assert e.value.code == P.REQUEST_TIMED_OUT
    monkeypatch.undo()
    rig.idle(2 * AUTO_COMMIT_INTERVAL_MS)
    assert rig.committed == 10
    assert rig.fetch() == list(range(10, 20))



def test_an_assigned_instance_commits_its_positions_again_after_a_commit_back(rig: _Rig) -> None:
    """An assigned instance (no subscription) commits outside any generation, which may move the
    group's offset back. Once the records after it are read again, a commit of the positions must
    be sent: they equal what was committed before, which is no longer what the group holds."""
    rig.request("subscribe", topics=[])
    rig.request("assign", partitions=[["t", 0]])
    assert rig.fetch(max_records=20) == list(range(0, 20))
    rig.request("commit", offsets=None)
    assert rig.committed == 20
    rig.request("commit", offsets=[["t", 0, 5]])  # the client will process 5.. again
    rig.request("seek", to="offsets", offsets=[["t", 0, 5]])
    assert rig.committed == 5
    assert rig.fetch(max_records=15) == list(range(5, 20))
    rig.request("commit", offsets=None)
    assert rig.committed == 20, "the commit of the positions sent nothing: 5..19 come again after every restart"
