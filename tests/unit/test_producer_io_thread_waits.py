"""How long the producer's I/O thread sleeps between passes: until the first thing it has to do
at a time -- a lingering batch falls due, a queued batch's delivery timeout ends, a metadata ask
goes again -- and no longer than IDLE_WAIT_MS; a batch opened while it sleeps wakes it only if
it falls due before the thread would look (Kafka's sender polls for the accumulator's next
ready time the same way). An idle producer used to pass every millisecond at ``linger_ms`` 0
(every ``linger_ms`` otherwise): 6 % of a core for each idle producer of the producer service."""

from __future__ import annotations

import time

import pytest

import fabric.client.sender as sender_module
from fabric.client.accumulator import AccumulatorSettings, RecordAccumulator
from fabric.client.metadata_cache import MetadataCache
from fabric.client.producer import Producer
from fabric.client.sender import IDLE_WAIT_MS, Sender, SenderSettings
from fabric.clock import ManualClock
from fabric.metadata import ClusterMetadata
from tests.unit.fakes import FakeReactor, RecordingClient

LEADER = "tcp://127.0.0.1:1"


def _wire(leader: int, partitions: int = 2) -> dict:
    return {"version": 1, "cluster": "c", "coordinator": "tcp://127.0.0.1:9", "brokers": [[1, "127.0.0.1", 1, 101, True]],
            "topics": {"t": {"configs": {}, "partitions": [[leader, 3, [1], [1]]] * partitions}}}


def _metadata(leader: int = 1, partitions: int = 2) -> ClusterMetadata:
    return ClusterMetadata.from_wire(_wire(leader, partitions))


class _Rig:
    def __init__(self, linger_ms: int, delivery_timeout_ms: int = 120_000, leader: int = 1, acks: int = -1,
                 partitions: int = 2, batch_bytes_max: int = 1024 * 1024) -> None:
        self.clock = ManualClock(1000)
        self.wakes: list[int] = []
        self.sender: Sender
        self.acc = RecordAccumulator(AccumulatorSettings(linger_ms=linger_ms, batch_bytes_max=batch_bytes_max), self.clock,
                                     wake=lambda: self.wakes.append(self.clock.now_ms()),
                                     idle=lambda tp: self.sender.partition_idle(tp),
                                     lingering=lambda due_ms: self.sender.sleeps_past(due_ms))
        self.metadata = MetadataCache(wake=lambda: None)
        self.metadata.update(_metadata(leader, partitions))
        self.clients: dict[str, RecordingClient] = {}
        self.sender = Sender(SenderSettings(acks=acks, idempotent=False, delivery_timeout_ms=delivery_timeout_ms),
                             self.acc, self.metadata, ["tcp://127.0.0.1:9"], clock=self.clock,
                             client_factory=lambda ep: self.clients.setdefault(ep, RecordingClient()))
        self.sender.attach(FakeReactor(self.clock))

    def produces(self) -> int:
        return len(self.clients[LEADER].of(b"PRODUCE")) if LEADER in self.clients else 0

    def requests(self) -> int:
        """PRODUCE requests sent to the leader (one-way ones too)."""
        c = self.clients.get(LEADER)
        return 0 if c is None else len(c.of(b"PRODUCE")) + len(c.oneway)

    def send(self, partition: int = 0) -> None:
        self.acc.append("t", partition, 0, None, b"v", None, 30)


@pytest.fixture
def rig():
    made: list[_Rig] = []

    def make(*args, **kw) -> _Rig:
        made.append(_Rig(*args, **kw))
        return made[-1]
    yield make
    for r in made:
        r.sender.stop()


def test_with_nothing_to_do_the_thread_waits_the_idle_wait(rig) -> None:
    for linger in (0, 5):
        r = rig(linger)
        r.sender.run_pass()
        assert r.sender.poll_wait_ms() == IDLE_WAIT_MS


def test_a_lingering_batch_is_looked_at_when_it_falls_due(rig) -> None:
    r = rig(30)
    r.send()
    r.sender.run_pass()
    assert r.sender.poll_wait_ms() == 30
    r.clock.advance(29)
    r.sender.run_pass()
    assert r.produces() == 0 and r.sender.poll_wait_ms() == 1
    r.clock.advance(1)
    r.sender.run_pass()
    assert r.produces() == 1
    assert r.sender.poll_wait_ms() == IDLE_WAIT_MS  # (a request in flight: its answer wakes the thread)


def test_a_busy_partitions_lingering_batch_does_not_make_the_thread_spin(rig) -> None:
    r = rig(10)
    r.send()
    r.clock.advance(10)
    r.sender.run_pass()
    assert r.produces() == 1
    r.send()  # its partition has a request in flight (linger 10 ms, max_in_flight 1): it waits for the answer
    r.clock.advance(50)
    r.sender.run_pass()
    assert r.produces() == 1
    assert r.sender.poll_wait_ms() == IDLE_WAIT_MS


def test_a_batch_opened_while_the_thread_sleeps_wakes_it_only_if_due_before_it_looks(rig) -> None:
    r = rig(30)
    r.sender.run_pass()
    assert r.sender.poll_wait_ms() == IDLE_WAIT_MS  # asleep until 1100
    r.send(0)  # due at 1030: before 1100
    assert r.wakes == [1000]
    r.sender.run_pass()
    assert r.sender.poll_wait_ms() == 30  # asleep until 1030
    r.clock.advance(10)
    r.send(1)  # due at 1040: the thread looks at 1030 anyway, and then waits for this one
    assert r.wakes == [1000]
    r.clock.advance(20)
    r.sender.run_pass()
    assert r.sender.poll_wait_ms() == 10


def test_a_batch_opened_during_a_pass_wakes_the_thread(rig) -> None:
    """Between a pass's look at the accumulator and its next wait, a batch opened is not in the
    wait it computes: the opener wakes it."""
    r = rig(30)
    r.sender.run_pass()
    r.send()
    assert r.wakes == [1000]


def test_a_queued_batch_is_failed_when_its_delivery_timeout_ends(rig) -> None:
    r = rig(0, delivery_timeout_ms=500, leader=-1)  # no leader: the batch waits in its queue
    f = r.acc.append("t", 0, 0, None, b"v", None, 30)
    r.sender.run_pass()
    assert 0 < r.sender.poll_wait_ms() <= 500
    r.clock.advance(500)
    r.sender.run_pass()
    assert f.done()


def test_a_metadata_ask_wanted_by_a_pass_goes_at_the_next_pass_at_once(rig) -> None:
    r = rig(0)
    r.sender.run_pass()
    asks = r.clients["tcp://127.0.0.1:9"]
    [_] = asks.of(b"METADATA")  # the first pass asks: its answer wakes the thread
    assert r.sender.poll_wait_ms() == IDLE_WAIT_MS
    asks.answer_last(b"METADATA", {"metadata": _wire(1)})
    r.sender.run_pass()
    assert r.sender.poll_wait_ms() == IDLE_WAIT_MS
    r.acc.append("u", 0, 0, None, b"v", None, 30)  # a topic the metadata does not have (yet)
    r.sender.run_pass()  # wants fresh metadata, after its own ask
    assert r.metadata.wanted
    assert r.sender.poll_wait_ms() == 0
    r.sender.run_pass()
    assert len(asks.of(b"METADATA")) == 2


@pytest.mark.parametrize("acks", [-1, 0])
def test_batches_one_request_could_not_carry_go_at_the_next_pass_at_once(rig, monkeypatch, acks: int) -> None:
    monkeypatch.setattr(sender_module, "REQUEST_BATCHES_MAX", 2)
    r = rig(0, partitions=3, acks=acks)
    for p in range(3):
        r.send(p)
    r.sender.run_pass()
    assert r.requests() == 1
    assert r.sender.poll_wait_ms() == 0
    r.sender.run_pass()
    assert r.requests() == 2


def test_batches_waiting_for_an_answer_do_not_make_the_thread_spin(rig, monkeypatch) -> None:
    monkeypatch.setattr(sender_module, "REQUEST_BYTES_TARGET", 1)  # a batch per request
    r = rig(0, batch_bytes_max=50)  # a batch per record
    r.send(0)
    r.send(0)
    r.sender.run_pass()  # one request in flight (max_in_flight 1): the other batch waits for its answer
    assert r.requests() == 1
    assert r.sender.poll_wait_ms() == IDLE_WAIT_MS


@pytest.mark.parametrize("linger_ms", [0, 5])
def test_an_idle_producer_does_not_pass_every_millisecond(linger_ms: int) -> None:
    """A real producer and its I/O thread; nothing listens at its bootstrap (its metadata asks
    are refused and asked again every 100 ms)."""
    p = Producer("127.0.0.1:9", linger_ms=linger_ms, idempotent=False)
    try:
        deadline = time.monotonic() + 5
        while p.sender.reactor is None and time.monotonic() < deadline:
            time.sleep(0.01)
        before = p.sender.reactor.passes
        time.sleep(1.0)  # an observation window: counts passes, which a slow machine only lowers
        passes = p.sender.reactor.passes - before
        assert passes < 100, f"{passes} passes in an idle second"
    finally:
        p.close(timeout=1)
