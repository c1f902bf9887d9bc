"""A consumer service's hosted instance (``nodes.consumer_instance.Instance``): stopping it never blocks
the reactor, even with its command queue full, and every queued command gets an answer. Op
headers are checked on the reactor (``check_op_header``), so what still raises on the
instance's thread is a bug: it goes to the host, which stops the node."""

from __future__ import annotations

import threading
import time

import pytest

from fabric import protocol as P
from fabric.errors import RemoteError
from nodes.consumer_instance import COMMANDS_PER_INSTANCE_MAX, Instance, InstanceHost, check_op_header
from tests.unit.builders_group_consumer import (LOG_END_OFFSET, T0, BrokerRepliesReactor, OffsetsCoordinator,
                                                OnePartitionBroker, consumer_config, serve)
from tests.unit.fakes import ScriptedCoordinatorLink

# a fetch without a wait reads the answers already in: metadata, the log start, the records
FETCHES_WITHOUT_WAIT_MAX = 10


def _host(failed: list | None = None) -> InstanceHost:
    return InstanceHost("consumer-1", ["tcp://127.0.0.1:1"], 1000, (failed if failed is not None else []).append)


def test_stopping_an_instance_with_a_full_queue_does_not_block_and_answers_everything() -> None:
    inst = Instance(_host(), "g", "i", {}, 0)
    answers: list[int] = []
    lock = threading.Lock()

    def answer(header: dict | None, err: RemoteError | None) -> None:
        with lock:
            answers.append(err.code if err else 0)
    for _ in range(COMMANDS_PER_INSTANCE_MAX):
        inst.submit("subscription", {}, answer)
    started = time.monotonic()
    inst.stop()  # on the reactor: must return at once
    assert time.monotonic() - started < 1
    inst.start()
    inst.join(timeout=5)
    assert not inst.is_alive()
    assert answers == [P.UNKNOWN_CONSUMER_INSTANCE] * COMMANDS_PER_INSTANCE_MAX


def test_an_instance_takes_its_idle_timeout_from_its_config_or_the_host() -> None:
    host = _host()
    assert Instance(host, "g", "a", {}, 0).idle_timeout_ms == 1000
    config = {"idle_timeout_ms": 50, "auto_offset_reset": "earliest"}
    assert Instance(host, "g", "b", config, 0).idle_timeout_ms == 50 and config == {"auto_offset_reset": "earliest"}



def test_a_bug_on_the_instance_thread_goes_to_the_host_and_is_not_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    import nodes.consumer_instance

    def buggy_consumer(*args: object, **kw: object) -> None:
        raise TypeError("a bug while creating the consumer")
    monkeypatch.setattr(nodes.consumer_instance, "GroupConsumer", buggy_consumer)
    failed: list[BaseException] = []
    answers: list = []
    inst = Instance(_host(failed), "g", "i", {}, 0)
    inst.submit("create", {}, lambda h, err: answers.append((h, err)))
    inst.start()
    inst.join(timeout=10)
    assert not inst.is_alive() and answers == []
    assert len(failed) == 1 and isinstance(failed[0], TypeError)


@pytest.mark.parametrize("op, header", [
    ("fetch", {"timeout_ms": "1000"}), ("fetch", {"max_records": True}), ("fetch", {"positions": 1}),
    ("commit", {"offsets": [["t", 0]]}), ("commit", {"offsets": "all"}), ("commit", {"offsets": [[0, 0, 5]]}),
    ("committed", {"partitions": [["t", "0"]]}), ("seek", {"to": "offsets", "offsets": [["t", 0, None]]}),
    ("seek", {"to": "beginning", "partitions": [["t"]]}),
    ("seek", {"to": "offsets", "offsets": [["t", 0, -1]]}), ("commit", {"offsets": [["t", 0, -5]]}),
    ("seek", {"to": "end", "partitions": [["t", -1]]}),
])
def test_an_op_header_the_instance_could_not_read_is_malformed(op: str, header: dict) -> None:
    with pytest.raises(RemoteError) as e:
        check_op_header(op, header)
    assert e.value.code == P.MALFORMED_REQUEST


@pytest.mark.parametrize("op, header", [
    ("fetch", {}), ("fetch", {"timeout_ms": 10, "max_records": 5, "max_bytes": 100}), ("fetch", {"positions": True}),
    ("commit", {"offsets": None}),
    ("commit", {"offsets": [["t", 0, 5]]}), ("committed", {}), ("seek", {"to": "end", "partitions": [["t", 1]]}),
])
def test_a_readable_op_header_passes(op: str, header: dict) -> None:
    check_op_header(op, header)


def _assigned_instance() -> tuple[Instance, BrokerRepliesReactor]:
    """An instance of group g assigned t-0 (no auto-commit) on a fake broker, and its reactor."""
    broker = OnePartitionBroker()
    reactor = BrokerRepliesReactor(broker)
    config = consumer_config(broker, reactor, ScriptedCoordinatorLink(OffsetsCoordinator()), enable_auto_commit=False)
    inst = Instance(_host(), "g", "i", config, 0)
    serve(inst, "create")
    serve(inst, "assign", partitions=[list(T0)])
    return inst, reactor


def test_fetches_without_a_wait_still_deliver_the_records() -> None:
    """A fetch with ``timeout_ms: 0`` (what the gateway asks for once its long-poll budget is
    taken) answers with what is there now; polled again and again, it must still get the
    records: its poll used to return before it read any answer that had come in, so an
    instance whose thread does nothing else with the consumer (assigned, no auto-commit) never
    got one. A real GroupConsumer on a fake broker, served on the test thread."""
    inst, reactor = _assigned_instance()
    offsets: list[int] = []
    for _ in range(FETCHES_WITHOUT_WAIT_MAX):
        offsets += [r[2] for r in serve(inst, "fetch", timeout_ms=0, max_records=10)["records"]]
        if offsets:
            break
    assert offsets == list(range(10)), f"nothing after {FETCHES_WITHOUT_WAIT_MAX} fetches without a wait"
    assert reactor.clock.now_ms() == 10_000, "no fetch waited"
    inst._close()


class NothingCommitted(OffsetsCoordinator):
    """Group g with no committed offsets: a member's partitions start at ``auto_offset_reset``."""

    def __call__(self, command: bytes, header: dict) -> dict:
        if command == P.OFFSET_FETCH:
            return {"offsets": [[t, p, -1, ""] for t, p in header["partitions"]]}
        return super().__call__(command, header)


def test_a_fetch_asked_for_positions_says_none_until_the_member_is_positioned() -> None:
    """``positions: true`` (what /ws/consume asks, to tell its client "ready"): null while the
    member joins and while it looks its partitions' log end up, then every assigned partition's
    next offset, with the generation they belong to. A subscribed instance, ``latest``, in a
    group with nothing committed: the dashboard's tail "from the end"."""
    broker = OnePartitionBroker()
    reactor = BrokerRepliesReactor(broker)
    config = consumer_config(broker, reactor, ScriptedCoordinatorLink(NothingCommitted()),
                             enable_auto_commit=False, auto_offset_reset="latest")
    inst = Instance(_host(), "g", "i", config, 0)
    serve(inst, "create")
    serve(inst, "subscribe", topics=["t"])
    seen: list = []
    for _ in range(FETCHES_WITHOUT_WAIT_MAX):
        answer = serve(inst, "fetch", timeout_ms=0, frame=True, positions=True).header
        seen.append((answer["positions"], answer["generation"]))
        if answer["positions"] is not None:
            break
    assert seen[-1] == ([["t", 0, LOG_END_OFFSET]], 1), seen
    assert len(seen) > 1 and all(positions is None for positions, _ in seen[:-1]), seen
    assert "positions" not in serve(inst, "fetch", timeout_ms=0), "only when asked"
    inst._close()


@pytest.mark.parametrize("to", ["beginning", "end", "offsets"])
@pytest.mark.parametrize("tp", [["t", 7], ["nope", 0]])
def test_seeking_a_partition_not_assigned_is_refused_alike_whatever_the_target(to: str, tp: list) -> None:
    """Seeking to offsets refused a partition the instance was not assigned (unknown topics
    too) with partition_not_assigned (REST: 422 / 42205); seeking it to its beginning or end
    was answered done and did nothing -- it even gave the consumer a position for it."""
    inst, _ = _assigned_instance()
    header = {"offsets": [[*tp, 0]]} if to == "offsets" else {"partitions": [tp]}
    with pytest.raises(RemoteError) as e:
        serve(inst, "seek", to=to, **header)
    assert e.value.code == P.PARTITION_NOT_ASSIGNED and f"{tp[0]}-{tp[1]}" in e.value.message
    assert serve(inst, "assignment")["partitions"] == [list(T0)]
    inst._close()


def test_the_assignment_says_whether_the_member_is_joining() -> None:
    """``joining`` in the assignment's answer: a member in a rebalance holds no partition yet,
    and its empty assignment is not one that gave its partitions to others (/ws/consume's
    commits tell the two apart). A subscribed instance before and after its join."""
    broker = OnePartitionBroker()
    reactor = BrokerRepliesReactor(broker)
    config = consumer_config(broker, reactor, ScriptedCoordinatorLink(OffsetsCoordinator()), enable_auto_commit=False)
    inst = Instance(_host(), "g", "i", config, 0)
    serve(inst, "create")
    serve(inst, "subscribe", topics=["t"])
    assert serve(inst, "assignment") == {"partitions": [], "positions": [], "joining": True}
    for _ in range(FETCHES_WITHOUT_WAIT_MAX):
        if serve(inst, "fetch", timeout_ms=0, frame=True, positions=True).header["positions"] is not None:
            break
    assert serve(inst, "assignment")["partitions"] == [list(T0)] and serve(inst, "assignment")["joining"] is False
    inst._close()
