"""A batch that a PRODUCE answer sends again (not_leader, not_enough_replicas, buffer_full, a
request's timeout) waits out a backoff before it goes: its partition sends nothing until then,
the backoff grows exponentially with the batch's attempts (``retry_backoff_ms`` doubling up to
``retry_backoff_max_ms``, with jitter), and the I/O thread's wait ends exactly when it does.
It used to go at the very next pass: against a leader that kept refusing, the producer resent
in a tight loop until the delivery timeout. Driven on a ManualClock as the I/O thread's loop
runs: a pass, the timers that fell due, then the wait (``poll_wait_ms``)."""

from __future__ import annotations

import pytest

from engines import batch as B
from fabric import protocol as P
from fabric.client.producer import Producer
from fabric.client.sender_replies import retry_backoff_ms
from fabric.errors import MAY_HAVE_BEEN_WRITTEN, DeliveryTimeoutError, FabricError, RemoteError
from fabric.metadata import ClusterMetadata
from fabric.records import decode_batches
from tests.unit.builders_sender import LEADER, Rig, sender_metadata
from tests.unit.driven_producer import NOWHERE, driven_producer
from tests.unit.fakes import RecordingClient
from tests.unit.test_producer_failure_paths_fuzz import _forget_producers, _write_prefix_then_lose_reply
from tests.unit.test_producer_split_against_a_partition import BIG, L1, SplitRig

REFUSED = {"results": [[-1, P.NOT_ENOUGH_REPLICAS, "isr of 1"]]}


def _drive(rig: Rig, for_ms: int, answer: dict, passes_max: int = 10_000) -> int:
    """Run the I/O thread's loop for ``for_ms`` of simulated time (at most ``passes_max``
    passes), the leader answering every PRODUCE with ``answer`` at once; the PRODUCE requests
    sent meanwhile."""
    clock, leader = rig.reactor.clock, rig.client(LEADER)
    end_ms, sent_before = clock.now_ms() + for_ms, len(rig.produce_requests())
    for _ in range(passes_max):
        if clock.now_ms() >= end_ms:
            break
        rig.sender.run_pass()
        rig.reactor.run_due()
        leader = rig.client(LEADER)
        while leader.unanswered:
            leader.answer_last(P.PRODUCE, answer)
        wait_ms = rig.sender.poll_wait_ms()
        rig.reactor.advance(min(wait_ms, end_ms - clock.now_ms()))
    return len(rig.produce_requests()) - sent_before


def test_a_leader_that_keeps_refusing_gets_a_retry_per_backoff_not_one_per_pass(make_sender_rig) -> None:  # noqa: ANN001
    rig = make_sender_rig(idempotent=False, delivery_timeout_ms=60_000)
    futures = rig.send("a")
    sent = _drive(rig, 2000, REFUSED)
    assert not futures[0].done()
    # 100 ms doubling to a 1000 ms cap (±20 %): at 0, ~100, ~300, ~700, ~1500 ms (2000 ms at most 6)
    assert 3 <= sent <= 6, f"{sent} PRODUCE requests in 2 s against a leader refusing each one"


def _refused_once(rig: Rig, answer: dict = REFUSED) -> list:
    """Send one batch of partition 0 and have the leader refuse it; its futures."""
    futures = rig.send("a")
    rig.sender.run_pass()
    rig.client(LEADER).answer_last(P.PRODUCE, answer)
    return futures


def _refused_three_times_then_sent_to_a_new_leader(rig: Rig) -> RecordingClient:
    """A batch of partition 0 refused three times by leader 1 (waits 50, 100, 200 ms at a
    retry_backoff_ms of 50: a fourth refusal would wait 400 ms), then sent to leader 2, which
    fresh metadata names; leader 2's client (the request unanswered)."""
    _refused_once(rig, {"results": [[-1, P.NOT_LEADER, "not the leader"]]})
    for wait_ms in (50, 100):
        rig.sender.run_pass()
        rig.reactor.advance(wait_ms)
        rig.sender.run_pass()
        rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[-1, P.NOT_LEADER, "not the leader"]]})
    rig.refresh_metadata(sender_metadata(version=2, leader=2, epoch=4))
    rig.sender.run_pass()
    return rig.client("tcp://127.0.0.1:2")


def _two_in_flight(rig: Rig) -> tuple[list, list]:
    """Producer id 7, then two batches of partition 0 sent in two requests, both in flight;
    their futures."""
    rig.sender.run_pass()
    rig.grant_producer_id(7)
    first = rig.send("a")
    rig.sender.run_pass()
    second = rig.send("b")
    rig.sender.run_pass()
    assert len(rig.produce_requests()) == 2
    return first, second


def _values(request: tuple) -> list[list[bytes]]:
    """Per batch of a recorded PRODUCE request: its record values."""
    return [[r.value for r in decode_batches("t", 0, data)] for data in request[2]]


def test_the_thread_wakes_exactly_when_the_backoff_ends_and_the_retry_goes_then(make_sender_rig) -> None:  # noqa: ANN001
    rig = make_sender_rig(idempotent=False, retry_backoff_ms=60, delivery_timeout_ms=60_000)
    timers = rig.reactor.pending
    _refused_once(rig)
    assert rig.reactor.pending == timers, "a wake-up timer per retry (the I/O thread's wait plans the retry)"
    assert rig.sender.poll_wait_ms() == 0  # the answer was read outside a pass: one at once
    rig.sender.run_pass()
    assert len(rig.produce_requests()) == 1
    assert rig.sender.poll_wait_ms() == 60, "the wait ends when the backoff does"
    rig.reactor.advance(59)
    rig.sender.run_pass()
    assert len(rig.produce_requests()) == 1 and rig.sender.poll_wait_ms() == 1
    rig.reactor.advance(1)
    rig.sender.run_pass()
    assert len(rig.produce_requests()) == 2


def test_the_backoff_doubles_per_attempt_up_to_its_cap(make_sender_rig) -> None:  # noqa: ANN001
    rig = make_sender_rig(idempotent=False, retry_backoff_ms=100, retry_backoff_max_ms=1000, delivery_timeout_ms=60_000)
    rig.send("a")
    sent_at: list[int] = []
    clock = rig.reactor.clock
    for _ in range(200):
        if len(sent_at) == 7:
            break
        rig.sender.run_pass()
        if rig.client(LEADER).unanswered:
            sent_at.append(clock.now_ms())
            rig.client(LEADER).answer_last(P.PRODUCE, REFUSED)
        rig.reactor.advance(rig.sender.poll_wait_ms())
    assert [b - a for a, b in zip(sent_at, sent_at[1:])] == [100, 200, 400, 800, 1000, 1000]


def test_a_new_batch_starts_at_the_base_backoff(make_sender_rig) -> None:  # noqa: ANN001
    rig = make_sender_rig(idempotent=False, retry_backoff_ms=50, retry_backoff_max_ms=1000, delivery_timeout_ms=60_000)
    first = _refused_once(rig)
    for wait_ms in (50, 100, 200):  # refused three times: the next wait would be 400 ms
        rig.sender.run_pass()
        rig.reactor.advance(wait_ms)
        rig.sender.run_pass()
        rig.client(LEADER).answer_last(P.PRODUCE, REFUSED if wait_ms < 200 else {"results": [[10, 0, ""]]})
    assert first[0].result(0).offset == 10
    _refused_once(rig)
    rig.sender.run_pass()
    assert rig.sender.poll_wait_ms() == 50, "the backoff is the batch's, not the partition's"


def test_the_batches_behind_a_backing_off_batch_wait_and_go_after_it(make_sender_rig) -> None:  # noqa: ANN001
    rig = make_sender_rig(idempotent=False, retry_backoff_ms=80, delivery_timeout_ms=60_000)
    first = _refused_once(rig)
    later = rig.send("b")  # during the backoff
    rig.sender.run_pass()
    rig.reactor.advance(40)
    later += rig.send("c")
    rig.sender.run_pass()
    assert len(rig.produce_requests()) == 1, "a later batch of the partition overtook the one backing off"
    rig.reactor.advance(40)
    rig.sender.run_pass()
    [retry] = rig.produce_requests()[1:]
    assert _values(retry) == [[b"a0", b"a1"]], "the batch sent again goes first"
    rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[0, 0, ""]]})
    rig.sender.run_pass()  # (the later records filled their open batch meanwhile)
    [after] = rig.produce_requests()[2:]
    assert _values(after) == [[b"b0", b"b1", b"c0", b"c1"]]
    rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[2, 0, ""]]})
    assert [f.result(0).offset for f in first + later] == [0, 1, 2, 3, 4, 5]


def test_other_partitions_are_not_held_back_by_one_backing_off(make_sender_rig) -> None:  # noqa: ANN001
    rig = make_sender_rig(idempotent=False, retry_backoff_ms=80, delivery_timeout_ms=60_000)
    rig.metadata.update(sender_metadata(version=2, partitions=2))
    _refused_once(rig)
    rig.sender.run_pass()
    other = rig.send("x", partition=1)
    rig.sender.run_pass()
    [_, request] = rig.produce_requests()
    assert [p[:2] for p in request[1]["parts"]] == [["t", 1]]
    rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[7, 0, ""]]})
    assert other[0].result(0).offset == 7
    rig.sender.run_pass()
    assert rig.sender.poll_wait_ms() == 80 and len(rig.produce_requests()) == 2


def test_a_batch_whose_delivery_timeout_ends_during_its_backoff_fails_then(make_sender_rig) -> None:  # noqa: ANN001
    rig = make_sender_rig(idempotent=False, retry_backoff_ms=500, delivery_timeout_ms=70)
    futures = _refused_once(rig)
    rig.sender.run_pass()
    assert rig.sender.poll_wait_ms() == 70, "woken for the delivery timeout, not the backoff's end"
    rig.reactor.advance(70)
    rig.sender.run_pass()
    error = futures[0].exception(0)
    assert isinstance(error, DeliveryTimeoutError) and error.code == P.NOT_ENOUGH_REPLICAS
    assert len(rig.produce_requests()) == 1


def test_a_retry_goes_at_once_when_the_metadata_names_a_new_leader(make_sender_rig) -> None:  # noqa: ANN001
    rig = make_sender_rig(idempotent=False, retry_backoff_ms=500, delivery_timeout_ms=60_000)
    futures = _refused_once(rig, {"results": [[-1, P.NOT_LEADER, "not the leader"]]})
    assert rig.metadata.wanted
    rig.refresh_metadata(sender_metadata(version=2, leader=1, epoch=3))  # the same leader: it waits
    rig.sender.run_pass()
    assert len(rig.produce_requests()) == 1
    rig.refresh_metadata(sender_metadata(version=3, leader=2, epoch=4))
    rig.sender.run_pass()
    [(_, header, _, _)] = rig.client("tcp://127.0.0.1:2").of(P.PRODUCE)
    assert header["parts"][0][2] == 4
    rig.client("tcp://127.0.0.1:2").answer_last(P.PRODUCE, {"results": [[3, 0, ""]]})
    assert futures[0].result(0).offset == 3


def test_pipelined_batches_sent_again_keep_their_order_and_sequences_after_the_backoff(make_sender_rig) -> None:  # noqa: ANN001
    rig = make_sender_rig(max_in_flight=2, retry_backoff_ms=80, delivery_timeout_ms=60_000)
    first, second = _two_in_flight(rig)
    leader = rig.client(LEADER)
    leader.sent[leader.unanswered[0]][3]({"results": [[-1, P.NOT_ENOUGH_REPLICAS, "isr of 1"]]}, [], None)
    leader.answer_last(P.PRODUCE, {"results": [[-1, P.OUT_OF_ORDER_SEQUENCE, "gap"]]})
    rig.sender.run_pass()
    assert len(rig.produce_requests()) == 2 and rig.sender.poll_wait_ms() == 80
    rig.reactor.advance(80)
    rig.sender.run_pass()
    [retry] = rig.produce_requests()[2:]
    assert [B.parse_header(d).base_sequence for d in retry[2]] == [0, 2]
    assert _values(retry) == [[b"a0", b"a1"], [b"b0", b"b1"]]
    leader.answer_last(P.PRODUCE, {"results": [[0, 0, ""], [2, 0, ""]]})
    assert [f.result(0).offset for f in first + second] == [0, 1, 2, 3]


def test_the_backoff_is_jittered_within_its_bounds_and_capped() -> None:
    assert retry_backoff_ms(1, 100, 1000, 0.2, lambda lo, hi: lo) == 80
    assert retry_backoff_ms(1, 100, 1000, 0.2, lambda lo, hi: hi) == 120
    assert retry_backoff_ms(4, 100, 1000, 0.2, lambda lo, hi: hi) == 960
    assert retry_backoff_ms(5, 100, 1000, 0.2, lambda lo, hi: hi) == 1000  # capped after the jitter too
    assert retry_backoff_ms(5, 100, 1000, 0.2, lambda lo, hi: lo) == 800
    assert retry_backoff_ms(10_000, 100, 1000, 0.0) == 1000
    assert retry_backoff_ms(3, 0, 0, 0.2) == 0  # no backoff
    for attempts in range(1, 12):
        for _ in range(50):
            ms = retry_backoff_ms(attempts, 100, 1000, 0.2)
            term = min(1000, 100 << (attempts - 1))
            assert int(term * 0.8) <= ms <= min(1000, int(term * 1.2))


def test_the_producer_passes_its_backoff_settings_on_and_refuses_bad_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    p = driven_producer(monkeypatch, retry_backoff_ms=7, retry_backoff_max_ms=70)
    try:
        assert (p.sender.settings.retry_backoff_ms, p.sender.settings.retry_backoff_max_ms) == (7, 70)
    finally:
        p.sender.stop()
    d = driven_producer(monkeypatch)
    try:
        assert (d.sender.settings.retry_backoff_ms, d.sender.settings.retry_backoff_max_ms) == (100, 1000)
    finally:
        d.sender.stop()
    for bad in (dict(retry_backoff_ms=-1), dict(retry_backoff_ms=1.5), dict(retry_backoff_ms=True),
                dict(retry_backoff_max_ms=None), dict(retry_backoff_ms=500, retry_backoff_max_ms=100),
                dict(retry_backoff_max_ms=10**9)):
        with pytest.raises(FabricError):
            Producer(NOWHERE, **bad)  # type: ignore[arg-type]


def test_a_refusal_by_a_new_leader_starts_the_backoff_over(make_sender_rig) -> None:  # noqa: ANN001
    """Attempts counted against a leader that went away do not make the new one's first
    refusal (not yet taken over when the metadata named it) wait the grown backoff."""
    rig = make_sender_rig(idempotent=False, retry_backoff_ms=50, delivery_timeout_ms=60_000)
    new_leader = _refused_three_times_then_sent_to_a_new_leader(rig)
    new_leader.answer_last(P.PRODUCE, {"results": [[-1, P.NOT_LEADER, "not yet"]]})
    rig.sender.run_pass()
    assert rig.sender.poll_wait_ms() == 50  # (not 400, nor the idle wait it would be capped at)


def test_batches_refused_out_of_order_behind_one_failed_for_good_go_at_once() -> None:
    """Batches that may be in the log (their reply lost) of a producer the leader forgot: the
    first is refused for good (unknown_producer_id: it cannot be told from one in the log), each
    behind it out of order -- a refusal that says nothing of the cluster, only that a batch
    ahead of it failed. They go again at once, as the batches numbered again behind such a
    batch do; they used to back off as if refused, the backoff growing per round to its cap:
    one batch of the partition failed per retry_backoff_max_ms (4 batches: 1.5 s), everything
    behind them held as long."""
    rig = SplitRig(batch_records_max=1, retry_backoff_ms=100, retry_backoff_max_ms=1000, retry_jitter=0.0)
    futures = [rig.send("t", b"v%d" % i) for i in range(4)]
    rig.grant_pid()
    _write_prefix_then_lose_reply(rig, L1, 4)  # all four written, the reply lost: sent again after 100 ms
    _forget_producers(rig, "t")
    clock, start_ms = rig.clock, rig.clock.now_ms()
    while not all(f.done() for f in futures) and clock.now_ms() - start_ms < 5000:
        rig.grant_pid()
        if rig.unanswered(L1, P.PRODUCE):  # answered as the leader does, its flags read in full
            _, header, payloads, _ = rig.clients[L1].of(P.PRODUCE)[-1]
            results, _ = rig.parts["t"].append_as_leader(payloads, BIG, [part[3] for part in header["parts"]])
            rig.clients[L1].answer_last(P.PRODUCE, {"results": [list(r) for r in results]})
            continue
        clock.advance(max(1, rig.sender.poll_wait_ms()))
        rig.reactor.run_due()
    assert all(isinstance(f.exception(0), RemoteError) for f in futures)
    assert all(MAY_HAVE_BEEN_WRITTEN in str(f.exception(0)) for f in futures)
    assert clock.now_ms() - start_ms == 100, "the retry's backoff, then no more waiting"
    assert rig.log() == [b"v0", b"v1", b"v2", b"v3"]


def test_a_batch_numbered_again_behind_one_failed_for_good_does_not_wait_out_an_old_backoff(make_sender_rig) -> None:  # noqa: ANN001
    """A batch sent again with the batch ahead of it, before its own backoff ended (it is sent
    with the batches put back ahead of it), and then refused out of order behind that batch,
    failed for good: numbered again under the next producer id, it goes at once -- it used to
    wait for the rest of its old backoff, at the head of its partition's queue."""
    rig = make_sender_rig(max_in_flight=2, retry_backoff_ms=100, delivery_timeout_ms=60_000)
    first, second = _two_in_flight(rig)
    leader = rig.client(LEADER)
    leader.sent[leader.unanswered[0]][3]({"results": [[-1, P.NOT_ENOUGH_REPLICAS, "isr of 1"]]}, [], None)
    rig.reactor.advance(50)  # the second answer later: its batch backs off 50 ms longer
    leader.answer_last(P.PRODUCE, {"results": [[-1, P.OUT_OF_ORDER_SEQUENCE, "gap"]]})
    rig.reactor.advance(50)
    rig.sender.run_pass()
    assert len(rig.produce_requests()) == 3  # both again, in one request, when the first's backoff ended
    leader.answer_last(P.PRODUCE, {"results": [[-1, P.INVALID_RECORD, "bad"], [-1, P.OUT_OF_ORDER_SEQUENCE, "gap"]]})
    assert isinstance(first[0].exception(0), RemoteError)
    rig.sender.run_pass()  # a new producer id
    rig.grant_producer_id(8)
    rig.sender.run_pass()
    assert len(rig.produce_requests()) == 4, f"held {rig.sender.poll_wait_ms()} ms more"
    [(_, header, payloads, _)] = rig.produce_requests()[3:]
    assert B.parse_header(payloads[0]).producer_id == 8 and B.parse_header(payloads[0]).base_sequence == 0
    leader.answer_last(P.PRODUCE, {"results": [[0, 0, ""]]})
    assert second[0].result(0).offset == 0


def test_the_pieces_of_a_split_batch_refused_by_a_new_leader_start_the_backoff_over(make_sender_rig) -> None:  # noqa: ANN001
    """A batch refused three times by a leader that went away, then as too large by the new
    one: a piece the new leader refuses waits the base backoff, as the batch would have. The
    pieces took their batch's attempts but not the leader that counted them, and went on
    doubling from there (400 ms)."""
    rig = make_sender_rig(idempotent=False, retry_backoff_ms=50, delivery_timeout_ms=60_000)
    new_leader = _refused_three_times_then_sent_to_a_new_leader(rig)
    new_leader.answer_last(P.PRODUCE, {"results": [[-1, P.RECORD_TOO_LARGE, "too large"]]})
    rig.sender.run_pass()  # its pieces, at once
    [(_, header, _, _)] = new_leader.of(P.PRODUCE)[1:]
    new_leader.answer_last(P.PRODUCE, {"results": [[-1, P.NOT_ENOUGH_REPLICAS, "isr of 1"]] * len(header["parts"])})
    rig.sender.run_pass()
    assert rig.sender.poll_wait_ms() == 50


def test_a_batch_failed_because_another_partitions_leader_moved_goes_again_at_once(make_sender_rig) -> None:  # noqa: ANN001
    """One request to leader 1 carries partitions 0 and 1; fresh metadata moves partition 0 to
    leader 2 alone. The sender fails the requests in flight to leader 1 locally (nothing was
    refused: ``_reroute_in_flight``), so partition 1's batch -- whose leader did not move --
    goes again at once, as partition 0's does, and counts no attempt (it waited a whole backoff,
    and its next real refusal a doubled one)."""
    rig = make_sender_rig(idempotent=False, retry_backoff_ms=500, delivery_timeout_ms=60_000)
    rig.metadata.update(sender_metadata(version=2, partitions=2))
    moved, stayed = rig.send("a", partition=0), rig.send("b", partition=1)
    rig.sender.run_pass()
    [request] = rig.produce_requests()
    assert sorted(p[1] for p in request[1]["parts"]) == [0, 1]
    md = sender_metadata(version=3, partitions=2).to_wire()
    md["topics"]["t"]["partitions"][0] = [2, 4, [1, 2], [1, 2]]  # partition 0 to leader 2
    rig.refresh_metadata(ClusterMetadata.from_wire(md))
    rig.sender.run_pass()
    assert rig.sender.poll_wait_ms() > 0
    to_leader_1 = [r for r in rig.client(LEADER).of(P.PRODUCE)[1:]]
    assert [[p[1] for p in r[1]["parts"]] for r in to_leader_1] == [[1]], "partition 1 waited out a backoff"
    assert [[p[1] for p in r[1]["parts"]] for r in rig.client("tcp://127.0.0.1:2").of(P.PRODUCE)] == [[0]]
    rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[-1, P.NOT_ENOUGH_REPLICAS, "isr of 1"]]})
    [head] = rig.sender._queues[("t", 1)]
    assert head.attempts == 1, "its first real refusal waits the first backoff, not a doubled one"
    assert head.retry_at_ms == rig.reactor.clock.now_ms() + 500
    assert not moved[0].done() and not stayed[0].done()
