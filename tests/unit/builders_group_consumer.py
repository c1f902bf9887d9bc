"""A group consumer's world, once: one fake broker leading t-0 whose replies land in the
consumer's next reactor pass, that reactor on a ManualClock, and a scripted coordinator of
group g that keeps the committed offsets and applies the real commit rules
(nodes/coordinator/groups_offsets.py ``_commit_refusal``). Used by the tests of
``fabric.client.group.GroupConsumer`` and of the consumer service's instances, which host one.
Kept apart from ``fakes.py``: it builds the client consumer, which most unit tests do not need.
"""

from __future__ import annotations

from typing import Any, Callable

from fabric import protocol as P
from fabric.client.group import GroupConsumer
from fabric.client.group_link import CoordinatorLink
from fabric.clock import ManualClock
from fabric.errors import RemoteError, RequestTimeout
from fabric.metadata import BrokerInfo, ClusterMetadata, PartitionInfo, TopicInfo
from nodes.consumer_instance import Instance, InstanceHost
from tests.unit.fakes import FakeReactor, NoHeartbeat, ScriptedCoordinatorLink, as_leader_wrote, make_batch

T0 = ("t", 0)
LOG_END_OFFSET = 1000
RECORDS_PER_FETCH_ANSWER = 50   # what the broker hands out per FETCH: a fetch of 10 leaves some buffered
AUTO_COMMIT_INTERVAL_MS = 1000  # a RestInstance's


class OnePartitionBroker:
    """Broker 1, leader of t-0 (records 0..LOG_END_OFFSET-1), as the consumer's RPC client:
    every request is answered in the consumer's next reactor pass, as a socket's reply is."""

    def __init__(self) -> None:
        self.replies: list[Callable[[], None]] = []
        self.out_of_range_from: int | None = None  # a FETCH at or past it: offset_out_of_range
        self.epoch_of: Callable[[int], int] = lambda offset: 1  # the leader epoch of an answer from ``offset``
        self.metadata = ClusterMetadata(1, "c", {1: BrokerInfo(1, "b1", 1, 2)},
                                        {"t": TopicInfo("t", (PartitionInfo("t", 0, 1, 1, (1,), (1,)),), {}, "id-t")},
                                        coordinator="tcp://coordinator")

    def client(self, endpoint: str) -> "OnePartitionBroker":
        return self

    def make_topic_again(self, topic_id: str) -> None:
        """t deleted and made again under its name (id ``topic_id``): newer metadata names it, and a
        request naming the old id is refused as a real broker refuses it."""
        t = self.metadata.topics["t"]
        self.metadata = ClusterMetadata(self.metadata.version + 1, "c", self.metadata.brokers,
                                        {"t": TopicInfo("t", t.partitions, {}, topic_id)}, coordinator="tcp://coordinator",
                                        deleted_topic_ids=(*self.metadata.deleted_topic_ids, t.topic_id))

    def _other_topic(self, header: dict) -> bool:
        named = (header.get("topic_ids") or {}).get("t")
        return named is not None and named != self.metadata.topics["t"].topic_id

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        if command == P.METADATA:
            self.replies.append(lambda: callback({"metadata": self.metadata.to_wire()}, [], None))
        elif command == P.FETCH:
            [[topic, partition, offset, _max_bytes, _epoch, *_last_epoch]] = header["parts"]
            if self._other_topic(header):
                refused = [topic, partition, P.UNKNOWN_TOPIC_OR_PARTITION, -1, -1, 0, None]
                self.replies.append(lambda: callback({"parts": [refused]}, [b""], None))
                return len(self.replies)
            if self.out_of_range_from is not None and offset >= self.out_of_range_from:
                refused = [topic, partition, P.OFFSET_OUT_OF_RANGE, LOG_END_OFFSET, LOG_END_OFFSET, 0, None]
                self.replies.append(lambda: callback({"parts": [refused]}, [b""], None))
                return len(self.replies)
            n = min(RECORDS_PER_FETCH_ANSWER, LOG_END_OFFSET - offset)
            if n <= 0:
                return 0  # a long poll at the log end: answered only when records come (never here)
            data = as_leader_wrote(make_batch(n), offset, self.epoch_of(offset))
            entry = [topic, partition, 0, LOG_END_OFFSET, LOG_END_OFFSET, 0, None]
            self.replies.append(lambda: callback({"parts": [entry]}, [data], None))
        elif command == P.LIST_OFFSETS:  # the log start (EARLIEST, -2) or end (LATEST, -1)
            [[topic, partition, spec]] = header["parts"]
            found = [topic, partition, 0, 0 if spec == -2 else LOG_END_OFFSET]
            self.replies.append(lambda: callback({"parts": [found]}, [], None))
        else:
            raise AssertionError(f"the fake broker does not answer {command!r}")
        return len(self.replies)

    def cancel(self, request_id: int) -> bool:
        return False

    def close(self) -> None:
        pass


class BrokerRepliesReactor(FakeReactor):
    """A pass delivers the broker's replies waiting; with none, it waits out its timeout."""

    def __init__(self, broker: OnePartitionBroker) -> None:
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


class OffsetsCoordinator:
    """Group g, whose joining members (generation 1) own t-0; keeps what is committed. As the
    real one, it refuses a member's commit below the committed offset, and a commit outside
    any generation (an assigned consumer's, which may move the offset back) while the group has
    members (``members``: those who joined and did not leave, plus any a test adds)."""

    def __init__(self) -> None:
        self.committed: dict[tuple[str, int], int] = {}
        self.committed_epochs: dict[tuple[str, int], int] = {}  # the leader epoch a commit named (absent: -1)
        self.members: set[str] = set()
        self.uncommitted = 0  # what OFFSET_FETCH answers for nothing committed (the real coordinator: -1)
        self.topic_ids = {"t": "id-t"}  # as the real one, a commit naming another id is refused whole

    def __call__(self, command: bytes, header: dict) -> dict:
        if command == P.JOIN_GROUP:
            member_id = header["member_id"] or "m-1"
            self.members.add(member_id)
            return {"member_id": member_id, "generation": 1}
        if command == P.SYNC_GROUP:
            return {"generation": 1, "assignment": [list(T0)]}
        if command == P.OFFSET_FETCH:
            return {"offsets": [[t, p, self.committed.get((t, p), self.uncommitted), "",
                                 self.committed_epochs.get((t, p), -1)] for t, p in header["partitions"]],
                    "topic_ids": {t: self.topic_ids[t] for t, p in header["partitions"] if (t, p) in self.committed}}
        if command == P.OFFSET_COMMIT:
            for t, named in (header.get("topic_ids") or {}).items():
                if named and named != self.topic_ids.get(t):
                    raise RemoteError(P.UNKNOWN_TOPIC_ID, f"topic {t!r} of id {named} was deleted: nothing was committed")
            if header["generation"] < 0 and self.members:
                raise RemoteError(P.NON_EMPTY_GROUP, "group 'g' has active members: only they may commit")
            # a member's commit below the committed offset is refused, unless it names a newer leader
            # epoch than the committed one's (the real coordinator's _check_not_backward)
            if header["generation"] >= 0 and any(
                    o < self.committed.get((t, p), 0)
                    and not (rest[1:2] or [-1])[0] > self.committed_epochs.get((t, p), -1) >= 0
                    for t, p, o, *rest in header["offsets"]):
                raise RemoteError(P.INVALID_COMMIT_OFFSET, "below the committed offset")
            for t, p, o, *rest in header["offsets"]:
                self.committed[(t, p)] = o
                self.committed_epochs[(t, p)] = rest[1] if len(rest) > 1 else -1
            return {}
        if command == P.LEAVE_GROUP:
            self.members.discard(header["member_id"])
            return {}
        raise AssertionError(f"the scripted coordinator does not answer {command!r}")


class HeldCoordinator:
    """The coordinator's RPC client: every request answered by ``answer`` on the consumer's
    next reactor pass, but those of command ``held`` (JOIN_GROUP: the rebalance waits for other
    members) held while ``holding``, until ``release()``; a held request times out at its
    ``timeout_ms``, as a real client's does."""

    def __init__(self, reactor: BrokerRepliesReactor, answer: Callable[[bytes, dict], dict],
                 held: bytes = P.JOIN_GROUP) -> None:
        self.reactor, self.answer, self.held_command = reactor, answer, held
        self.holding = True
        self.held: list[tuple[Callable, dict]] = []
        self.calls: list[tuple[bytes, dict]] = []

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable, timeout_ms: int) -> None:
        self.calls.append((command, dict(header)))
        if command == self.held_command and self.holding:
            entry = (callback, header)
            self.held.append(entry)
            self.reactor.call_later(timeout_ms, lambda: self._expire(entry))
            return
        self.reactor.broker.replies.append(lambda: self._answer(command, header, callback))

    def _answer(self, command: bytes, header: dict, callback: Callable) -> None:
        try:
            reply = self.answer(command, header)
        except RemoteError as e:
            callback(None, [], e)
        else:
            callback(reply, [], None)

    def _expire(self, entry: tuple[Callable, dict]) -> None:
        if entry in self.held:
            self.held.remove(entry)
            entry[0](None, [], RequestTimeout("no answer in time"))

    def release(self) -> None:
        self.holding = False
        for callback, header in self.held:
            self.reactor.broker.replies.append(lambda cb=callback, h=header: self._answer(self.held_command, h, cb))
        self.held.clear()

    def sent(self, command: bytes) -> int:
        return sum(1 for c, _ in self.calls if c == command)

    def joins(self) -> int:
        return self.sent(P.JOIN_GROUP)

    def close(self) -> None:
        pass


class HeldWorld:
    """A real GroupConsumer of group g (``kw``: its settings) on a real CoordinatorLink whose
    coordinator client (``client_type``: a ``HeldCoordinator``) holds the requests of command
    ``held``; ``broker``: the fake broker (a ``OnePartitionBroker``)."""

    def __init__(self, held: bytes, broker: OnePartitionBroker | None = None,
                 client_type: type[HeldCoordinator] = HeldCoordinator, **kw: Any) -> None:
        self.broker = broker or OnePartitionBroker()
        self.reactor = BrokerRepliesReactor(self.broker)
        self.clock = self.reactor.clock
        self.coordinator = OffsetsCoordinator()
        self.client = client_type(self.reactor, self.coordinator, held=held)
        link = CoordinatorLink(self.reactor, self.clock, lambda: self.client)
        self.consumer = GroupConsumer("127.0.0.1:1", group_id="g", **consumer_config(self.broker, self.reactor, link, **kw))

    def close(self) -> None:
        self.client.release()
        self.consumer.close()


def consumer_config(broker: OnePartitionBroker, reactor: BrokerRepliesReactor, coordinator: Any,
                    **kw: Any) -> dict[str, Any]:
    """GroupConsumer keywords that put it in this world (``coordinator``: a
    ``ScriptedCoordinatorLink``), with no heartbeat thread and ``auto_offset_reset`` earliest."""
    return {"coordinator": coordinator, "heartbeat_factory": NoHeartbeat.make, "clock": reactor.clock,
            "reactor": reactor, "client_factory": broker.client, "auto_offset_reset": "earliest", **kw}


class SubscribedMember:
    """A real GroupConsumer of group g subscribed to t (``kw``: its settings over the rig's), on
    a fake broker and a scripted coordinator with nothing committed yet (-1)."""

    def __init__(self, **kw: Any) -> None:
        self.broker = OnePartitionBroker()
        self.reactor = BrokerRepliesReactor(self.broker)
        self.coordinator = OffsetsCoordinator()
        self.coordinator.uncommitted = -1
        self.link = ScriptedCoordinatorLink(self.coordinator)
        self.consumer = GroupConsumer("127.0.0.1:1", group_id="g",
                                      **consumer_config(self.broker, self.reactor, self.link, **kw))
        self.consumer.subscribe(["t"])


def serve(instance: Any, op: str, **header: Any) -> Any:
    """One request to a consumer service's ``Instance`` (nodes/consumer_instance.py), served on the test
    thread as the instance's own thread serves it: its answer, or its error raised."""
    answers: list = []
    instance._serve(op, header, lambda h, err: answers.append((h, err)))
    [(answer, err)] = answers
    if err is not None:
        raise err
    return answer


class RestInstance:
    """A consumer service's ``Instance`` (nodes/consumer_instance.py) as a REST consumer instance:
    group g (auto-commit every AUTO_COMMIT_INTERVAL_MS), created and subscribed to t, driven on
    the test thread one request at a time as its client and its service drive it."""

    def __init__(self, coordinator: OffsetsCoordinator | None = None, **config: Any) -> None:
        """``config``: GroupConsumer keywords over the rig's."""
        self.broker = OnePartitionBroker()
        self.reactor = BrokerRepliesReactor(self.broker)
        self.coordinator = coordinator or OffsetsCoordinator()
        self.link = ScriptedCoordinatorLink(self.coordinator)
        config = consumer_config(self.broker, self.reactor, self.link,
                                 **{"auto_commit_interval_ms": AUTO_COMMIT_INTERVAL_MS, **config})
        host = InstanceHost("consumer-1", ["127.0.0.1:1"], 60_000, lambda e: None)  # a bug raises out of _serve
        self.instance = Instance(host, "g", "rest-1", config, 0)
        self.request("create")
        self.request("subscribe", topics=["t"])

    def request(self, op: str, **header: Any) -> dict:
        """One request from the REST client, served as the instance's thread serves it."""
        return serve(self.instance, op, **header)

    def fetch(self, max_records: int = 10, **header: Any) -> list[int]:
        """The offsets of one fetch answer (records of t-0)."""
        return [r.offset for r in self.request("fetch", timeout_ms=1000, max_records=max_records, **header)["records"]]

    def fetch_records(self, fetches: int = 20) -> list[int]:
        """``fetch`` until an answer has records, at most ``fetches`` times: that answer's offsets."""
        got: list[int] = []
        for _ in range(fetches):
            got = self.fetch()
            if got:
                break
        return got

    def idle(self, ms: int) -> None:
        """``ms`` pass with no request from the client: the service maintains the instance."""
        for _ in range(ms // 100):
            self.reactor.clock.advance(100)
            self.instance._maintain()

    @property
    def committed(self) -> int:
        return self.coordinator.committed.get(T0, 0)
