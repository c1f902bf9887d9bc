"""The consumer (``fabric.client.consumer.Consumer``) through a leader's failover, built for real
on a fake reactor (ManualClock) with one recording RPC client per endpoint (tests/unit/fakes.py):
a fetch stalled at a dead leader is given up as soon as metadata names the new one (and only
that fetch), a late answer of the old leader is not read, metadata that still names the dead
leader or no leader is asked for with backoff, a refused fetch is not retried at once, a
partition reassigned meanwhile starts at its new position, and a LIST_OFFSETS stalled at a
dead leader goes to the new one."""

from __future__ import annotations

from typing import Any

import pytest

from fabric import protocol as P
from fabric.client.consumer import (FETCH_RETRY_BACKOFF_MS, FETCH_STALL_MS, FETCH_WAIT_MS, METADATA_BACKOFF_MS_MAX,
                                    Consumer)
from fabric.clock import ManualClock
from fabric.metadata import BrokerInfo, ClusterMetadata, PartitionInfo, TopicInfo
from tests.unit.fakes import FakeReactor, RecordingClient, as_leader_wrote, make_batch

BOOTSTRAP = "tcp://127.0.0.1:1"
COORDINATOR = "tcp://coordinator:1"
T = "t"
STALL_MS = FETCH_WAIT_MS + FETCH_STALL_MS


def endpoint(broker: int) -> str:
    return f"tcp://b{broker}:1"


def metadata(version: int, leaders: dict[int, int | tuple[int, int]], epoch: int = 1) -> dict:
    """A METADATA reply: topic ``t`` with partition -> leader (-1: none) at ``epoch``, or
    partition -> (leader, its epoch); brokers 1-3."""
    brokers = {b: BrokerInfo(b, f"b{b}", 1, 2) for b in (1, 2, 3)}
    lead = {p: v if isinstance(v, tuple) else (v, epoch) for p, v in leaders.items()}
    parts = tuple(PartitionInfo(T, p, leader, e, (1, 2, 3), (1, 2, 3)) for p, (leader, e) in sorted(lead.items()))
    md = ClusterMetadata(version, "c", brokers, {T: TopicInfo(T, parts, {}, "id-t")}, COORDINATOR)
    return {"metadata": md.to_wire()}


class Net:
    """The consumer's view of the network: a RecordingClient per endpoint."""

    def __init__(self) -> None:
        self.clients: dict[str, RecordingClient] = {}

    def client(self, ep: str) -> RecordingClient:
        return self.clients.setdefault(ep, RecordingClient())

    def open(self, command: bytes, ep: str | None = None) -> list[tuple[str, int]]:
        """(endpoint, index) of every unanswered ``command``."""
        return [(e, i) for e, c in self.clients.items() if ep in (None, e)
                for i in c.unanswered if c.sent[i][0] == command]

    def count(self, command: bytes, ep: str | None = None) -> int:
        return sum(1 for e, c in self.clients.items() if ep in (None, e) for s in c.sent if s[0] == command)

    def answer(self, ep: str, i: int, header: dict | None, payloads: list | None = None, err: Any = None) -> None:
        c = self.clients[ep]
        if i in c.unanswered:
            c.unanswered.remove(i)
        c.sent[i][3](header, payloads or [], err)

    def answer_metadata(self, reply: dict) -> None:
        [(ep, i)] = self.open(P.METADATA)
        self.answer(ep, i, reply)

    def fetches(self, broker: int) -> list[tuple[int, dict]]:
        """(index, header) of every unanswered FETCH to ``broker``."""
        return [(i, self.clients[endpoint(broker)].sent[i][1]) for _, i in self.open(P.FETCH, endpoint(broker))]

    def fetch(self, broker: int) -> tuple[int, dict]:
        """The one unanswered FETCH to ``broker``: (index, header)."""
        [(_, i)] = self.open(P.FETCH, endpoint(broker))
        return i, self.clients[endpoint(broker)].sent[i][1]

    def answer_fetch(self, broker: int, i: int, entries: list[tuple[int, int, int]], payloads: list[bytes]) -> None:
        """Answer fetch ``i``: (partition, error, high watermark) per entry."""
        parts = [[T, p, code, hw, hw, 0, None] for p, code, hw in entries]
        self.answer(endpoint(broker), i, {"parts": parts}, payloads)


@pytest.fixture
def make() -> Any:
    made: list[Consumer] = []

    def build(partitions: tuple[int, ...] = (0, 1), positions: dict[int, int] | None = None) -> tuple[Consumer, Net, FakeReactor]:
        net, reactor = Net(), FakeReactor(ManualClock(1_000))
        c = Consumer(BOOTSTRAP, clock=reactor.clock, reactor=reactor, client_factory=net.client,
                     auto_offset_reset="earliest")
        made.append(c)
        c.assign([(T, p) for p in partitions])
        for p, o in (positions if positions is not None else {p: 0 for p in partitions}).items():
            c.seek((T, p), o)
        return c, net, reactor
    yield build
    for c in made:
        c.close()


def _started(make: Any) -> tuple[Consumer, Net, FakeReactor]:
    """Partition 0 led by broker 1, partition 1 by broker 2; one fetch in flight to each."""
    c, net, reactor = make()
    assert c.poll(0) == []
    net.answer_metadata(metadata(1, {0: 1, 1: 2}))
    # that was a broker's answer: the coordinator is asked how t was when the reading began
    net.answer_metadata(metadata(1, {0: 1, 1: 2}))
    assert c.poll(0) == []
    assert net.fetch(1)[1]["parts"] == [[T, 0, 0, c.partition_fetch_bytes_max, 1, -1]]
    assert net.fetch(2)[1]["parts"] == [[T, 1, 0, c.partition_fetch_bytes_max, 1, -1]]
    return c, net, reactor


def _stall(net: Net, reactor: FakeReactor) -> None:
    """Let broker 1's fetch stall while broker 2 answers its long-polls empty, as a live one does."""
    waited = 0
    while waited < STALL_MS:
        reactor.advance(FETCH_WAIT_MS // 2)
        waited += FETCH_WAIT_MS // 2
        for _, i in net.open(P.FETCH, endpoint(2)):
            net.answer_fetch(2, i, [(1, 0, 0)], [b""])


def test_a_fetch_stalled_at_a_dead_leader_is_given_up_when_metadata_names_the_new_one(make: Any) -> None:
    c, net, reactor = _started(make)
    reactor.advance(STALL_MS - 1)
    assert net.open(P.METADATA) == []  # a long-poll still within its wait is not a stall
    for _, i in net.open(P.FETCH, endpoint(2)):
        net.answer_fetch(2, i, [(1, 0, 0)], [b""])
    c.poll(0)
    reactor.advance(FETCH_STALL_MS)
    assert len(net.open(P.METADATA)) == 1  # broker 1's fetch stalled: where is partition 0 now?
    old_fetch, _ = net.fetch(1)
    fetches_to_2 = net.count(P.FETCH, endpoint(2))
    net.answer_metadata(metadata(2, {0: (3, 2), 1: 2}))
    assert net.clients[endpoint(1)].cancelled == [old_fetch]
    assert net.clients[endpoint(2)].cancelled == []  # broker 2 still leads partition 1
    assert c.poll(0) == []
    _, header = net.fetch(3)
    assert header["parts"] == [[T, 0, 0, c.partition_fetch_bytes_max, 2, -1]]  # same position, new epoch
    assert net.count(P.FETCH, endpoint(2)) == fetches_to_2  # not fetched again needlessly
    # the old leader comes back and answers the old fetch: not read
    net.answer_fetch(1, old_fetch, [(0, 0, 3)], [as_leader_wrote(make_batch(3, tag="old"), 0, 1)])
    assert c.poll(0) == []
    i, _ = net.fetch(3)
    net.answer_fetch(3, i, [(0, 0, 3)], [as_leader_wrote(make_batch(3, tag="new"), 0, 2)])
    got = c.poll(0)
    assert [(r.offset, r.value) for r in got] == [(0, b"new0"), (1, b"new1"), (2, b"new2")]
    assert c.position((T, 0)) == 3


def test_metadata_that_still_names_the_dead_leader_keeps_the_fetch_and_is_asked_with_backoff(make: Any) -> None:
    c, net, reactor = _started(make)
    _stall(net, reactor)
    old_fetch, _ = net.fetch(1)
    asked_ms = []
    for _ in range(100):  # 10 s of an election that does not end
        for _, i in net.open(P.FETCH, endpoint(2)):
            net.answer_fetch(2, i, [(1, 0, 0)], [b""])
        if net.open(P.METADATA):
            asked_ms.append(reactor.clock.now_ms())
            net.answer_metadata(metadata(1, {0: 1, 1: 2}))
        c.poll(100)
    assert net.clients[endpoint(1)].cancelled == []
    assert net.fetch(1)[0] == old_fetch  # still waiting there: nothing better is known
    gaps = [b - a for a, b in zip(asked_ms, asked_ms[1:])]
    assert 5 <= len(asked_ms) <= 20, asked_ms
    assert gaps == sorted(gaps) and max(gaps) <= METADATA_BACKOFF_MS_MAX + 100, gaps
    # the election ends: the next answer moves the partition at once
    reactor.advance(METADATA_BACKOFF_MS_MAX)
    net.answer_metadata(metadata(2, {0: (3, 2), 1: 2}))
    c.poll(0)
    assert net.clients[endpoint(1)].cancelled == [old_fetch] and net.fetch(3)


def test_a_partition_without_a_leader_is_not_fetched_and_metadata_is_asked_with_backoff(make: Any) -> None:
    c, net, reactor = _started(make)
    _stall(net, reactor)
    old_fetch, _ = net.fetch(1)
    net.answer_metadata(metadata(2, {0: -1, 1: 2}, epoch=1))
    assert net.clients[endpoint(1)].cancelled == [old_fetch]  # broker 1 no longer leads it
    metadata_asked = net.count(P.METADATA)
    for _ in range(50):  # 5 s without a leader
        for _, i in net.open(P.FETCH, endpoint(2)):
            net.answer_fetch(2, i, [(1, 0, 0)], [b""])
        if net.open(P.METADATA):
            net.answer_metadata(metadata(2, {0: -1, 1: 2}, epoch=1))
        c.poll(100)
    assert net.count(P.METADATA) - metadata_asked <= 12
    assert all(h["parts"][0][1] == 1 for e, c_ in net.clients.items() for cmd, h, _, _ in c_.sent
               if cmd == P.FETCH and e != endpoint(1))  # partition 0 went nowhere


def test_a_refused_fetch_is_retried_after_a_backoff_not_at_once(make: Any) -> None:
    c, net, reactor = _started(make)
    i, _ = net.fetch(1)
    net.answer_fetch(1, i, [(0, P.NOT_LEADER, -1)], [b""])
    c.poll(0)
    assert net.open(P.FETCH, endpoint(1)) == []
    reactor.advance(FETCH_RETRY_BACKOFF_MS - 1)
    c.poll(0)
    assert net.open(P.FETCH, endpoint(1)) == []
    reactor.advance(1)
    net.answer_metadata(metadata(1, {0: 1, 1: 2}))  # asked for meanwhile; nothing new yet
    c.poll(0)
    assert len(net.open(P.FETCH, endpoint(1))) == 1


def test_a_partition_reassigned_during_the_failover_starts_at_its_new_position(make: Any) -> None:
    c, net, reactor = _started(make)
    _stall(net, reactor)
    old_fetch, _ = net.fetch(1)
    c.assign([(T, 0)])  # a rebalance: partition 0 stays, at the committed offset 5
    c.seek((T, 0), 5)
    net.answer_metadata(metadata(2, {0: (3, 2), 1: 2}))
    c.poll(0)
    assert net.fetch(3)[1]["parts"] == [[T, 0, 5, c.partition_fetch_bytes_max, 2, -1]]
    net.answer_fetch(1, old_fetch, [(0, 0, 3)], [as_leader_wrote(make_batch(3, tag="old"), 0, 1)])
    i, _ = net.fetch(3)
    net.answer_fetch(3, i, [(0, 0, 7)], [as_leader_wrote(make_batch(2, tag="new"), 5, 2)])
    assert [(r.offset, r.value) for r in c.poll(0)] == [(5, b"new0"), (6, b"new1")]


def _resetting(make: Any) -> tuple[Consumer, Net, FakeReactor, int]:
    """Partition 0 with no position, led by broker 1: its LIST_OFFSETS in flight (index ``old``)."""
    c, net, reactor = make(partitions=(0,), positions={})
    c.poll(0)
    net.answer_metadata(metadata(1, {0: 1}))
    c.poll(0)
    [(_, old)] = net.open(P.LIST_OFFSETS, endpoint(1))
    return c, net, reactor, old


def test_a_list_offsets_stalled_at_a_dead_leader_goes_to_the_new_one(make: Any) -> None:
    c, net, reactor, old = _resetting(make)
    reactor.advance(FETCH_STALL_MS)
    net.answer_metadata(metadata(2, {0: (3, 2)}))
    assert net.clients[endpoint(1)].cancelled == [old]
    c.poll(0)
    [(_, i)] = net.open(P.LIST_OFFSETS, endpoint(3))
    net.answer(endpoint(3), i, {"parts": [[T, 0, 0, 4]]})
    c.poll(0)
    assert c.position((T, 0)) == 4 and net.fetch(3)[1]["parts"][0][2] == 4


# -- a leader re-elected on the same endpoint, and a rebalance while the metadata moves ----------

def _run(c: Consumer, net: Net, ms: int, md: dict | None = None) -> None:
    """``ms`` of polling while broker 2 answers its long-polls empty and metadata is ``md``."""
    for _ in range(ms // 100):
        for i, _h in net.fetches(2):
            net.answer_fetch(2, i, [(1, 0, 0)], [b""])
        if md is not None and net.open(P.METADATA):
            net.answer_metadata(md)
        c.poll(100)


def test_a_fetch_lost_by_a_leader_that_restarted_and_was_reelected_is_sent_again(make: Any) -> None:
    """Broker 1 was SIGKILLed with our fetch in it and came back as the leader of partition 0 at
    epoch 3 (offline in between, which backed-off metadata requests need not see): nobody will
    answer the fetch its old process had. The new epoch gives it up, and the partition is
    fetched at epoch 3 -- not after the RPC timeout."""
    c, net, reactor = _started(make)
    [(old, _)] = net.fetches(1)
    _run(c, net, STALL_MS + 100, md=metadata(1, {0: 1, 1: 2}))  # stalled; nothing new yet
    _run(c, net, 3000, md=metadata(2, {0: (1, 3), 1: 2}))
    assert old in net.clients[endpoint(1)].cancelled
    assert [h["parts"][0][4] for _, h in net.fetches(1)] == [3]


def test_a_list_offsets_lost_by_a_leader_that_restarted_and_was_reelected_is_sent_again(make: Any) -> None:
    c, net, reactor, old = _resetting(make)
    for _ in range(35):
        c.poll(100)
        if net.open(P.METADATA):
            net.answer_metadata(metadata(2, {0: (1, 3)}))  # broker 1 again, epoch 3
    assert old in net.clients[endpoint(1)].cancelled and len(net.open(P.LIST_OFFSETS, endpoint(1))) == 1


def test_a_stalled_fetch_is_given_up_even_when_its_partition_was_revoked_and_reassigned(make: Any) -> None:
    """A rebalance (revoke, then the assignment) while broker 1's fetch is stalled, the metadata
    that moves partition 0 arriving while nothing is assigned: the fetch is still given up, so
    partition 0 is never fetched from two brokers at once, and the deposed leader's late answer
    is not read."""
    c, net, reactor = _started(make)
    [(old, _)] = net.fetches(1)
    _run(c, net, STALL_MS + 100)
    c.assign([])
    net.answer_metadata(metadata(2, {0: (3, 2), 1: 2}))
    c.assign([(T, 0)])
    c.seek((T, 0), 0)
    c.poll(0)
    assert len(net.fetches(3)) == 1
    assert old in net.clients[endpoint(1)].cancelled
    net.answer_fetch(1, old, [(0, 0, 3)], [as_leader_wrote(make_batch(3, tag="old"), 0, 1)])  # broker 1 wakes up
    assert [r.value for r in c.poll(0)] == []
