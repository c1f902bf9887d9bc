"""Pipelined PRODUCE requests (``max_in_flight`` > 1) in the cases that break order or
recognised retries one at a time, against real broker partitions (MemoryEngine): the Sender
and RecordAccumulator with recording RPC clients, requests arriving in sending order and
answered (or not) as each test says (``Broker`` of the pipelined fuzz)."""

from __future__ import annotations

from fabric import protocol as P
from tests.unit.test_producer_pipelined_fuzz import Broker
from tests.unit.test_producer_split_against_a_partition import L1, L2, SplitRig, _outcomes


def _send(rig: SplitRig, tag: str, n: int) -> list:
    """``n`` records of topic t (each a batch of its own with batch_records_max=1), closed and
    handed to the sender, which sends what it may."""
    futures = [rig.send("t", b"%s%02d" % (tag.encode(), i)) for i in range(n)]
    rig.flush_batches()
    rig.grant_pid()
    return futures


def _settle(rig: SplitRig, broker: Broker, rounds: int = 100) -> None:
    for _ in range(rounds):
        rig.clock.advance(60)
        rig.reactor.run_due()
        rig.grant_pid()
        busy = broker.arrive()
        while broker.held:
            i = min(broker.held)
            broker._answer(i, *broker.held.pop(i))
            busy = True
        if not busy and not rig.unanswered(broker.endpoint, P.PRODUCE):
            return


def test_without_idempotence_a_batch_refused_before_its_write_is_not_overtaken() -> None:
    """A producer without idempotence numbers nothing: a broker cannot refuse a batch that
    overtakes an earlier one refused before its write (not enough replicas, then back), so a
    second request in flight would write the later batch first and the retry after it."""
    rig = SplitRig(batch_records_max=1, idempotent=False, max_in_flight=2)
    broker = Broker(rig, L1, "t")
    a = _send(rig, "a", 1)
    b = _send(rig, "b", 1)
    broker.arrive(refuse=P.NOT_ENOUGH_REPLICAS)
    broker.arrive()
    _settle(rig, broker)
    assert rig.log() == [b"a00", b"b00"]
    assert _outcomes(a) == [0] and _outcomes(b) == [1]


def test_a_written_batch_whose_answers_are_lost_stays_recognised() -> None:
    """A batch written, whose answer is lost twice, is sent again while the broker still
    remembers it as one of its producer's last 32 batches: it is never refused as an old
    duplicate (and failed, with the producer id reset) because new batches went behind its
    retry while it was in flight."""
    rig = SplitRig(batch_records_max=1, max_in_flight=2)
    broker = Broker(rig, L1, "t")
    a = _send(rig, "a", 1)        # request 0: a00
    b = _send(rig, "b", 31)       # request 1: b00..b30 (32 batches in flight)
    assert broker.arrive() and broker.arrive()
    broker.lose_reply(_Pick(0))   # a00 written, its answer lost
    broker._answer(1, *broker.held.pop(1))  # b.. written and answered: they wait for a00
    rig.clock.advance(60)
    rig.reactor.run_due()
    rig.grant_pid()               # a00 goes again
    c = _send(rig, "c", 31)       # and c.. behind it, in the same request or the next
    while broker.arrive():
        pass
    for i in sorted(broker.held):  # every answer lost: a00 and c.. go again
        broker.held.pop(i)
        broker.lose_reply(_Pick(i))
    _settle(rig, broker)
    assert _outcomes(a) == [0], _outcomes(a)
    assert _outcomes(b) == list(range(1, 32)) and _outcomes(c) == list(range(32, 63))
    assert rig.log() == [b"a00"] + [b"b%02d" % i for i in range(31)] + [b"c%02d" % i for i in range(31)]


class _Pick:
    """A random.Random stand-in whose ``choice`` picks request ``i``."""

    def __init__(self, i: int) -> None:
        self.i = i

    def choice(self, options: list) -> int:
        assert self.i in options, (self.i, options)
        return self.i


def test_a_batch_failed_for_good_behind_one_that_goes_again_completes_after_it() -> None:
    """A batch refused for good (a single record over the lowered limit) behind one whose
    answer was lost completes after that one: a partition's delivery callbacks, failures too,
    run in the order its records were sent."""
    rig = SplitRig(batch_records_max=1, max_in_flight=2)
    broker = Broker(rig, L1, "t")
    done: list[tuple[bytes, str]] = []

    def on_delivery(value: bytes):  # noqa: ANN202
        def cb(_md: object, err: object) -> None:
            done.append((value, "ok" if err is None else P.error_name(err.code)))
        return cb
    a = [rig.send("t", b"a", on_delivery=on_delivery(b"a"))]
    rig.flush_batches()
    rig.grant_pid()
    big = b"B" * 400
    b = [rig.send("t", big, on_delivery=on_delivery(b"B"))]
    rig.flush_batches()
    rig.grant_pid()
    assert broker.arrive()
    rig.limit["t"] = 300
    assert broker.arrive()
    broker.lose_reply(_Pick(0))             # a written, its answer lost: it goes again
    broker._answer(1, *broker.held.pop(1))  # b refused for good
    _settle(rig, broker)
    assert _outcomes(a) == [0] and _outcomes(b) == ["record_too_large"]
    assert done == [(b"a", "ok"), (b"B", "record_too_large")]


def test_after_a_producer_id_reset_no_batch_is_numbered_ahead_of_one_in_flight() -> None:
    """Another partition fails a batch for good (the producer id is reset) while a batch of
    this partition is in flight under the old id: a batch behind it is not numbered under the
    new id and sent while it is in flight -- that one, refused before its write, would be
    numbered again after it, out of order (its sequence above the later batch's: the later one
    then refused as an old duplicate, a record lost that nothing refused for good)."""
    rig = SplitRig(batch_records_max=1, max_in_flight=2)
    t, u = Broker(rig, L1, "t"), Broker(rig, L2, "u")
    a = [rig.send("u", b"a")]
    rig.flush_batches()
    rig.grant_pid()                      # u: [a] under producer 7
    x = [rig.send("t", b"x")]
    rig.flush_batches()
    rig.grant_pid()                      # t: [x] under producer 7
    assert t.arrive(invalid=0)
    t._answer(0, *t.held.pop(0))         # x fails for good: producer id reset
    assert _outcomes(x) == ["invalid_record"]
    rig.grant_pid()                      # producer 8
    b = [rig.send("u", b"b")]
    rig.flush_batches()
    rig.grant_pid()
    assert u.arrive(refuse=P.NOT_ENOUGH_REPLICAS)  # a refused before its write
    _settle(rig, u)
    assert _outcomes(a) == [0] and _outcomes(b) == [1], (_outcomes(a), _outcomes(b))
    assert rig.log("u") == [b"a", b"b"]
