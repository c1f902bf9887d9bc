"""What needs a pass of the producer's I/O thread gets one now that no tick runs one every
millisecond: the thread sleeps until the first thing due (up to IDLE_WAIT_MS, 100 ms), so a
state that calls for a pass and that nothing schedules holds records in the client up to 100 ms
longer. Each case here relied on the tick: a timer that wants fresh metadata after the pass (a
request stalled, a request's timeout), a pass that reset the producer id, a partition freed by
the pass's own sends (more than one request in flight), a refused one-way request to one broker
holding back the requests to another, and ``send_many``'s batches handed on only when the call
ends. Driven on a ManualClock as the I/O thread's loop runs them: a pass, then the timers that
fell due, then the wait (``poll_wait_ms``)."""

from __future__ import annotations

import pytest

import fabric.client.sender as sender_module
from fabric import protocol as P
from fabric.client.accumulator import AccumulatorSettings, RecordAccumulator
from fabric.client.metadata_cache import MetadataCache
from fabric.client.sender import IDLE_WAIT_MS, REQUEST_STALL_MS, Sender, SenderSettings
from fabric.client.sender_flights import Flight, Flights
from fabric.clock import ManualClock
from fabric.errors import RemoteError, RequestTimeout
from fabric.metadata import ClusterMetadata
from fabric.records import pack_values
from tests.unit.builders_sender import COORDINATOR, LEADER, sender_metadata
from tests.unit.fakes import FakeReactor, RecordingClient

OTHER_LEADER = "tcp://127.0.0.1:2"


def _ready(r) -> None:  # noqa: ANN001
    """The first pass's asks answered: metadata, and the producer id if idempotent."""
    r.sender.run_pass()
    r.client(COORDINATOR).answer_last(P.METADATA, {"metadata": sender_metadata(partitions=3).to_wire()})
    if r.sender.idempotent:
        r.sender.run_pass()
        r.grant_producer_id(7)
    r.sender.run_pass()
    assert not r.metadata.wanted


def test_a_stalled_request_has_metadata_asked_for_at_once(make_sender_rig) -> None:
    """The stall check is a timer: it runs after the pass, and the metadata it wants (the leader
    may be gone) must not wait for the next wake-up, up to 100 ms later."""
    r = make_sender_rig(idempotent=False)
    _ready(r)
    r.send("a")
    r.sender.run_pass()
    assert len(r.produce_requests()) == 1  # unanswered
    r.reactor.clock.advance(REQUEST_STALL_MS)
    r.sender.run_pass()
    r.reactor.run_due()  # the stall check, after the pass
    assert r.metadata.wanted
    assert r.sender.poll_wait_ms() == 0


@pytest.mark.parametrize("metadata_asked", [False, True])
def test_a_request_timed_out_by_its_timer_is_retried_when_its_backoff_ends(make_sender_rig, metadata_asked: bool) -> None:
    """A request's timeout is a timer too: its batches go back to their queue, and metadata is
    wanted, after the pass -- also while a metadata ask is in flight (its answer may be a
    request timeout away). The pass comes at once; the retry when its backoff ends, not at an
    idle wake-up."""
    r = make_sender_rig(idempotent=False, retry_backoff_ms=40)
    _ready(r)
    r.send("a")
    r.sender.run_pass()
    r.reactor.clock.advance(500)  # (within the batch's delivery timeout, 1000 ms)
    if metadata_asked:
        r.metadata.want_refresh()
    r.sender.run_pass()
    r.client(LEADER).fail_all(RequestTimeout("no reply"))  # what the request's timer does
    assert r.sender.poll_wait_ms() == 0
    r.sender.run_pass()
    assert len(r.produce_requests()) == 1 and r.sender.poll_wait_ms() == 40
    r.reactor.clock.advance(40)
    r.sender.run_pass()
    assert len(r.produce_requests()) == 2
    assert r.sender.poll_wait_ms() == IDLE_WAIT_MS  # the retry and a metadata ask in flight: nothing due


def test_a_producer_id_reset_by_a_pass_is_asked_for_at_once(make_sender_rig) -> None:
    """A numbered batch that expires in its queue resets the producer id in the pass; the
    batches of every partition wait for the next id, which the next pass asks for."""
    r = make_sender_rig()
    _ready(r)
    r.send("a", partition=0)
    r.sender.run_pass()
    r.client(LEADER).answer_last(P.PRODUCE, None, err=RemoteError(P.NOT_LEADER, "moved"))  # back in its queue
    md = ClusterMetadata.from_wire({**sender_metadata(version=2, partitions=3).to_wire()})
    wire = md.to_wire()
    wire["topics"]["t"]["partitions"][0][0] = -1  # partition 0: no leader now
    r.metadata.update(ClusterMetadata.from_wire(wire))
    r.sender.run_pass()  # asks for metadata: unanswered, the batch waits for a leader
    r.send("b", partition=1)
    r.reactor.clock.advance(1000)  # the delivery timeout of the first batch
    r.sender.run_pass()
    assert r.sender.producer_id < 0  # reset by the expired batch
    inits = len(r.client(COORDINATOR).of(P.INIT_PRODUCER_ID))
    assert r.sender.poll_wait_ms() == 0
    r.sender.run_pass()
    assert len(r.client(COORDINATOR).of(P.INIT_PRODUCER_ID)) == inits + 1
    assert r.sender.poll_wait_ms() > 0  # asked: its answer wakes the thread


def test_a_partition_the_pass_freed_sends_its_open_batch_at_once(make_sender_rig) -> None:
    """Two requests in flight per partition: a batch opened while its partition had batches
    queued (waiting for the producer id) stays open at the pass that sends them -- after which
    the partition has room for it. It goes at the next pass, not at the first request's answer
    (or 100 ms later)."""
    r = make_sender_rig(max_in_flight=2)
    r.sender.run_pass()
    r.client(COORDINATOR).answer_last(P.METADATA, {"metadata": sender_metadata().to_wire()})
    r.send("a")
    r.sender.run_pass()  # queued: no producer id yet
    r.send("b")  # opens a batch on a partition with a batch queued: it stays open
    r.grant_producer_id(7)
    r.sender.run_pass()
    assert len(r.produce_requests()) == 1
    assert r.sender.poll_wait_ms() == 0
    r.sender.run_pass()
    assert len(r.produce_requests()) == 2
    assert r.sender.poll_wait_ms() == IDLE_WAIT_MS  # two in flight: their answers wake the thread


def test_a_refused_one_way_request_does_not_hold_back_another_brokers(make_sender_rig, monkeypatch) -> None:
    """acks=0: one broker's send queue full must not keep another broker's next request (one
    request could not carry all its batches) waiting for the idle wake-up."""
    monkeypatch.setattr(sender_module, "REQUEST_BATCHES_MAX", 1)
    r = make_sender_rig(acks=0, idempotent=False)
    wire = sender_metadata(partitions=3).to_wire()
    wire["topics"]["t"]["partitions"][2][0] = 2  # partition 2 led by broker 2, the others by broker 1
    r.metadata.update(ClusterMetadata.from_wire(wire))
    r.metadata.take_wanted()
    full = r.clients[OTHER_LEADER] = RecordingClient()
    full.refuse_oneway = True
    for p in range(3):
        r.send("a", partition=p)
    r.sender.run_pass()
    assert len(r.client(LEADER).oneway) == 1
    assert r.sender.poll_wait_ms() == 0
    r.sender.run_pass()
    assert len(r.client(LEADER).oneway) == 2
    assert r.sender.poll_wait_ms() == IDLE_WAIT_MS  # the full queue's writes end in a pass: no spin


@pytest.mark.parametrize("linger_ms", [0, 5])
def test_send_many_hands_on_each_batch_it_fills_at_once(linger_ms: int) -> None:
    """A long ``send_many`` fills batch after batch; each full one wakes the I/O thread as it
    closes (as ``send`` does), not when the call returns: the thread sleeps up to 100 ms."""
    clock = ManualClock(1000)
    wakes: list[int] = []
    acc = RecordAccumulator(AccumulatorSettings(linger_ms=linger_ms, batch_records_max=2), clock,
                            wake=lambda: wakes.append(1), idle=lambda tp: False, lingering=lambda due_ms: False)
    woken_before_pack: list[int] = []

    def pack(a: int, b: int) -> list[bytes]:
        woken_before_pack.append(len(wakes))
        return pack_values([b"v"] * (b - a), 0, 1)
    acc.append_many("t", 0, 0, [b"v"] * 6, 30, pack)
    assert len(woken_before_pack) == 3  # three batches of two
    assert woken_before_pack[1:] == [1, 2], woken_before_pack  # each closed batch woke it before the next filled


def test_a_batch_opened_while_a_pass_packs_its_partitions_queue_wakes_the_thread(monkeypatch) -> None:
    """linger 0, two requests in flight: an application thread that opens a batch while the I/O
    thread packs the partition's queue (its GIL let go in a compression codec, or at a switch)
    reads the partition busy -- its batches still queued -- and did not wake the thread; the
    pass then sent them and left room for another request, but the new batch, which the pass had
    not seen, waited for the answer (or 100 ms). Queued batches during a pass are not busy."""
    clock = ManualClock(1000)
    wakes: list[int] = []
    sender: Sender
    acc = RecordAccumulator(AccumulatorSettings(linger_ms=0), clock, wake=lambda: wakes.append(clock.now_ms()),
                            idle=lambda tp: sender.partition_idle(tp))
    metadata = MetadataCache(wake=lambda: None)
    metadata.update(sender_metadata())
    metadata.take_wanted()
    clients: dict[str, RecordingClient] = {}
    sender = Sender(SenderSettings(acks=-1, idempotent=True, max_in_flight=2), acc, metadata, [COORDINATOR],
                    clock=clock, client_factory=lambda ep: clients.setdefault(ep, RecordingClient()))
    sender.attach(FakeReactor(clock))
    try:
        sender.run_pass()
        clients[COORDINATOR].answer_last(P.INIT_PRODUCER_ID, {"producer_id": 7, "producer_epoch": 0})
        acc.append("t", 0, 0, None, b"a", None, 30)
        assert len(wakes) == 1  # an idle partition
        pack = sender._pack
        opened: list[bool] = []

        def pack_while_the_application_sends(b, tp):  # noqa: ANN001, ANN202
            if not opened:
                opened.append(True)
                acc.append("t", 0, 0, None, b"b", None, 30)  # the application's thread, mid-pass
            return pack(b, tp)
        monkeypatch.setattr(sender, "_pack", pack_while_the_application_sends)
        sender.run_pass()
        assert len(clients[LEADER].of(P.PRODUCE)) == 1
        assert len(wakes) == 2, "the batch opened mid-pass did not wake the thread"
        sender.run_pass()  # the wake-up's pass
        assert len(clients[LEADER].of(P.PRODUCE)) == 2
    finally:
        sender.stop()


def test_the_application_threads_idle_check_survives_the_io_thread_changing_the_flights() -> None:
    """``partition_idle`` runs on an application thread (``send``, linger 0) and reads the
    partition's requests in flight while the I/O thread sends and lands them: a thread switch
    between two of them (here: the I/O thread's ``sent`` as the count reads a request) raised
    "deque mutated during iteration" out of ``send`` -- after the record was queued."""
    flights = Flights(max_in_flight=3, batches_max=32)
    tp = ("t", 0)
    flights.sent(tp, LEADER, 0, 3, 1, 0)

    class Switching(Flight):  # the I/O thread runs while the application thread reads this one
        __slots__ = ()

        def __getattribute__(self, name: str):  # noqa: ANN204
            if name == "batches" and len(flights._of[tp]) < 3:
                flights.sent(tp, LEADER, 0, 3, 1, 0)
            return object.__getattribute__(self, name)
    flights._of[tp].append(Switching(LEADER, 0, 3, 1, 0))
    flights._of[tp].rotate(1)  # read first
    assert flights.can_take(tp) in (True, False)
