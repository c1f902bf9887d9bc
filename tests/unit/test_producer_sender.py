"""The producer's sender, built from its real parts: a ``RecordAccumulator``, a ``MetadataCache``
and ``SenderSettings``, with RPC clients that record requests (tests/unit/fakes.py) and a fake
reactor on a ManualClock. Each test sends through the accumulator, drives ``run_pass`` and
answers the recorded requests as brokers and the coordinator would."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engines.api import EngineConfig
from engines.memory import MemoryEngine
from fabric import protocol as P
from fabric.errors import ClientError, DeliveryTimeoutError, ProducerClosedError, RemoteError, RequestTimeout
from nodes.broker.partition import Partition
from tests.unit.builders_sender import BATCH_BYTES_MAX, COORDINATOR, LEADER, Rig, sender_metadata
from tests.unit.fakes import RecordingClient


@pytest.fixture
def rig(make_sender_rig: Callable[..., Rig]) -> Rig:
    return make_sender_rig()


def test_the_sender_waits_for_a_producer_id_then_numbers_batches_from_zero(rig: Rig) -> None:
    futures = rig.send("a")
    rig.sender.run_pass()
    assert not rig.produce_requests(), "an idempotent batch went out before the producer id"
    rig.grant_producer_id(7)
    rig.sender.run_pass()
    [(command, header, payloads, _)] = rig.produce_requests()
    assert header["acks"] == -1 and header["parts"] == [["t", 0, 3, 0]] and len(payloads) == 1
    rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[40, 0, ""]]})
    assert [f.result(0).offset for f in futures] == [40, 41]
    assert rig.accumulator.buffered_bytes == 0


def test_terminal_failure_of_a_sequenced_batch_does_not_wedge_the_partition(rig: Rig) -> None:
    leader = Partition("t", 0, 1, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_BYTES_MAX)), None)
    leader.become_leader(1, [1], [1], now_ms=0)

    def deliver() -> tuple[int, int, str]:
        payloads = rig.produce_requests()[-1][2]
        result = leader.append_as_leader(payloads, BATCH_BYTES_MAX)[0][0]
        rig.client(LEADER).answer_last(P.PRODUCE, {"results": [list(result)]})
        return result
    rig.send("a")
    rig.sender.run_pass()
    rig.grant_producer_id(7)
    rig.sender.run_pass()
    assert deliver()[1] == 0
    failed = rig.send("b", n=1)  # one record: too large on its own, it is not split but fails
    rig.sender.run_pass()
    rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[-1, P.RECORD_TOO_LARGE, "too large"]]})
    assert failed[0].exception(0).code == P.RECORD_TOO_LARGE
    after = rig.send("c")
    rig.sender.run_pass()  # the producer starts over under a new id: sequence 1 would never land
    rig.grant_producer_id(8)
    rig.sender.run_pass()
    base, code, _ = deliver()
    assert code == 0, P.error_name(code)
    assert after[0].result(0).offset == base


def test_duplicate_sequence_is_an_error_not_a_delivery_with_a_made_up_offset(rig: Rig) -> None:
    # an unremembered old duplicate is not proof that this batch is in the log (before the
    # sequence wrap fix, every batch after 2**31 records got this answer and was dropped)
    futures = rig.send("a")
    rig.sender.run_pass()
    rig.grant_producer_id(7)
    rig.sender.run_pass()
    rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[-1, P.DUPLICATE_SEQUENCE, "old duplicate"]]})
    with pytest.raises(RemoteError) as e:
        futures[1].result(0)
    assert e.value.code == P.DUPLICATE_SEQUENCE


def test_a_retriable_error_is_retried_and_its_code_reported_when_the_delivery_times_out(make_sender_rig) -> None:  # noqa: ANN001
    rig = make_sender_rig(idempotent=False)
    futures = rig.send("a")
    rig.sender.run_pass()
    rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[-1, P.NOT_ENOUGH_REPLICAS, "isr of 1"]]})
    assert not futures[0].done()
    rig.reactor.advance(100)  # the retry backoff
    rig.sender.run_pass()
    rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[-1, P.NOT_ENOUGH_REPLICAS, "isr of 1"]]})
    assert not futures[0].done()
    rig.reactor.advance(1000)  # past delivery_timeout_ms
    rig.sender.run_pass()
    error = futures[0].exception(0)
    assert len(rig.produce_requests()) == 2
    assert isinstance(error, DeliveryTimeoutError) and isinstance(error, ClientError)
    assert not isinstance(error, RemoteError), "a local timeout is not a node's answer"
    assert error.code == P.NOT_ENOUGH_REPLICAS and "isr of 1" in error.message
    assert error.last_error is not None and error.last_error.code == P.NOT_ENOUGH_REPLICAS
    assert not error.possibly_written and "may have been written" not in error.message, "refused unwritten"


def test_acks_0_sends_one_way_and_finishes_without_offsets(make_sender_rig) -> None:  # noqa: ANN001
    rig = make_sender_rig(acks=0)
    futures = rig.send("a")
    rig.sender.run_pass()
    [(command, header, payloads)] = rig.client(LEADER).oneway
    assert command == P.PRODUCE and header["acks"] == 0 and not rig.produce_requests()
    assert [f.result(0).offset for f in futures] == [-1, -1]


def test_acks_0_finishes_a_batch_only_once_its_request_left_for_the_broker(make_sender_rig) -> None:  # noqa: ANN001
    """acks=0 promises nothing of the broker, but a flush or close must not end while the
    request still waits to be written (not connected yet): the close dropped it, and the
    records were lost although the application was told they were sent."""
    rig = make_sender_rig(acks=0)
    client = rig.clients.setdefault(LEADER, RecordingClient())
    client.hold_oneway = True  # the connection is not up yet: the request waits
    futures = rig.send("a")
    rig.sender.run_pass()
    assert len(client.oneway) == 1 and not any(f.done() for f in futures)
    rig.sender.run_pass()
    assert not any(f.done() for f in futures)
    client.write_oneway()  # connected: written to the kernel
    rig.sender.run_pass()
    assert [f.result(0).offset for f in futures] == [-1, -1]


def test_acks_0_sends_again_a_request_its_client_refused_to_queue(make_sender_rig) -> None:  # noqa: ANN001
    """A full send queue refused the one-way request: it was counted and dropped, and its
    records reported sent."""
    rig = make_sender_rig(acks=0)
    client = rig.clients.setdefault(LEADER, RecordingClient())
    client.refuse_oneway = True
    futures = rig.send("a")
    rig.sender.run_pass()
    assert not client.oneway and not any(f.done() for f in futures), "a request never queued was reported sent"
    client.refuse_oneway = False
    rig.sender.run_pass()
    assert len(client.oneway) == 1 and [f.result(0).offset for f in futures] == [-1, -1]


def test_acks_0_fails_a_batch_whose_request_could_not_leave_within_the_delivery_timeout(make_sender_rig) -> None:  # noqa: ANN001
    rig = make_sender_rig(acks=0, delivery_timeout_ms=1000)
    rig.clients.setdefault(LEADER, RecordingClient()).hold_oneway = True  # a leader that never accepts the connection
    futures = rig.send("a")
    rig.sender.run_pass()
    rig.reactor.clock.advance(1001)
    rig.sender.run_pass()
    error = futures[0].exception(0)
    assert isinstance(error, DeliveryTimeoutError) and error.possibly_written


def test_a_leader_move_reroutes_the_request_in_flight_to_the_new_leader(make_sender_rig) -> None:  # noqa: ANN001
    rig = make_sender_rig(idempotent=False)
    futures = rig.send("a")
    rig.sender.run_pass()
    assert len(rig.produce_requests()) == 1
    rig.metadata.want_refresh()
    rig.sender.run_pass()
    rig.client(COORDINATOR).answer_last(P.METADATA, {"metadata": sender_metadata(version=2, leader=2).to_wire()})
    assert rig.metadata.current.version == 2
    rig.reactor.advance(100)  # the retry backoff
    rig.sender.run_pass()
    [(_, _, _, _)] = rig.client("tcp://127.0.0.1:2").of(P.PRODUCE)
    rig.client("tcp://127.0.0.1:2").answer_last(P.PRODUCE, {"results": [[5, 0, ""]]})
    assert futures[1].result(0).offset == 6


def test_a_leader_reelected_on_the_same_endpoint_gets_the_request_again_at_its_new_epoch(make_sender_rig) -> None:  # noqa: ANN001
    """The leader was SIGKILLed with our request in it and restarted: the metadata names the same
    endpoint at a new epoch. Nobody will answer the old request (its process is gone): it is
    failed at once and sent again, not left to its request timeout."""
    rig = make_sender_rig(idempotent=False, request_timeout_ms=30_000)
    futures = rig.send("a")
    rig.sender.run_pass()
    [first] = rig.produce_requests()
    assert first[1]["parts"][0][2] == 3
    rig.metadata.want_refresh()
    rig.sender.run_pass()
    rig.client(COORDINATOR).answer_last(P.METADATA, {"metadata": sender_metadata(version=2, leader=1, epoch=5).to_wire()})
    rig.reactor.advance(100)  # the retry backoff
    rig.sender.run_pass()
    requests = rig.produce_requests()
    assert len(requests) == 2 and requests[1][1]["parts"][0][2] == 5
    rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[5, 0, ""]]})
    assert futures[1].result(0).offset == 6


def test_a_request_that_got_no_reply_is_reported_as_the_local_condition_it_was(make_sender_rig) -> None:  # noqa: ANN001
    rig = make_sender_rig(idempotent=False)
    futures = rig.send("a")
    rig.sender.run_pass()
    rig.client(LEADER).answer_last(P.PRODUCE, None, err=RequestTimeout(f"no reply from {LEADER}"))
    assert not futures[0].done(), "a request without a reply is retried"
    rig.reactor.advance(1000)  # past delivery_timeout_ms
    rig.sender.run_pass()
    error = futures[0].exception(0)
    assert isinstance(error, DeliveryTimeoutError) and error.code == P.REQUEST_TIMED_OUT
    assert isinstance(error.last_error, RequestTimeout), f"re-wrapped as {type(error.last_error).__name__}"
    assert not isinstance(error.last_error, RemoteError), "no node answered"
    assert error.possibly_written and "may have been written" in error.message, "the request may have arrived"


def test_batches_waiting_for_a_producer_id_expire_at_the_delivery_timeout(rig: Rig) -> None:
    """A coordinator that does not answer INIT_PRODUCER_ID (down, cut off, or unreachable after
    a producer-id reset): the batches waiting for an id fail at delivery_timeout_ms, as every
    other batch does, instead of making the application wait for as long as it lasts."""
    futures = rig.send("a")
    rig.sender.run_pass()  # asks the coordinator for an id
    for _ in range(15):    # 1.5 s without an answer: past delivery_timeout_ms (1 s)
        if rig.client(COORDINATOR).unanswered:
            rig.client(COORDINATOR).answer_last(P.INIT_PRODUCER_ID, None, err=RequestTimeout("no reply"))
        rig.reactor.advance(100)
        rig.sender.run_pass()
    assert all(f.done() for f in futures), "past delivery_timeout_ms the records still wait for a producer id"
    assert isinstance(futures[0].exception(0), DeliveryTimeoutError)
    later = rig.send("b")  # the coordinator is back: the next records go out, numbered from 0
    for _ in range(20):
        if rig.produce_requests():
            break
        if rig.client(COORDINATOR).unanswered:
            rig.grant_producer_id(7)
        rig.reactor.advance(100)
        rig.sender.run_pass()
    [(_, header, _, _)] = rig.produce_requests()
    assert header["parts"] == [["t", 0, 3, 0]]
    rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[40, 0, ""]]})
    assert [f.result(0).offset for f in later] == [40, 41]


def test_a_request_in_flight_when_the_producer_stops_completes_its_records(rig: Rig) -> None:
    """``close(timeout)`` whose flush timed out stops the sender with a request in flight: its
    records are failed ("producer closed") like every queued one, instead of never completing
    (an application waiting on them, or on their delivery callbacks, waited forever)."""
    futures = rig.send("a")
    rig.sender.run_pass()
    rig.grant_producer_id(7)
    rig.sender.run_pass()
    assert rig.produce_requests() and rig.client(LEADER).unanswered, "a request in flight"
    rig.sender.stop()
    assert all(f.done() for f in futures), "records of the request in flight never completed"
    error = futures[0].exception(0)
    # and whether it may be in the log: the request went out and got no answer
    assert isinstance(error, ProducerClosedError) and error.possibly_written, error
    assert "may have been written" in str(error)
    assert rig.client(LEADER).closed



def test_records_never_sent_when_the_producer_stops_are_failed_as_not_written(rig: Rig) -> None:
    futures = rig.send("a")
    rig.sender.stop()  # no producer id yet: nothing went out
    error = futures[0].exception(0)
    assert isinstance(error, ProducerClosedError) and not error.possibly_written, error
    assert str(error) == "producer closed"


def test_a_retry_refused_for_good_says_an_earlier_send_may_have_been_written(rig: Rig) -> None:
    """A batch whose first send got no reply (it may be in the log) and whose retry is refused
    for good (a broker that forgot the producer: unknown_producer_id) failed with the broker's
    words alone: the producer service relays the message per record, and a REST client read a
    failure that did not say the record may be in the log (the timeout's did)."""
    futures = rig.send("a")
    rig.sender.run_pass()
    rig.grant_producer_id(7)
    rig.sender.run_pass()
    rig.client(LEADER).answer_last(P.PRODUCE, None, err=RequestTimeout(f"no reply from {LEADER}"))
    rig.reactor.advance(100)  # the retry backoff
    rig.sender.run_pass()
    assert len(rig.produce_requests()) == 2, "the batch is sent again"
    rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[-1, P.UNKNOWN_PRODUCER_ID, "the broker forgot the producer"]]})
    error = futures[0].exception(0)
    assert error.code == P.UNKNOWN_PRODUCER_ID and "the broker forgot the producer" in str(error)
    assert "may have been written" in str(error), str(error)


def test_the_delivery_timeout_counts_from_the_send_not_from_when_the_sender_took_the_batch(rig: Rig) -> None:
    """``delivery_timeout_ms`` bounds the time from ``send()`` to the record's success or failure
    (Kafka's ``delivery.timeout.ms`` counts from the batch's creation too): a record sent while
    its partition had a request in flight waited in its open batch, and its clock started only
    when the sender took that batch -- up to twice the timeout before the application heard."""
    first = rig.send("a")
    rig.sender.run_pass()
    rig.grant_producer_id(7)
    rig.sender.run_pass()
    assert len(rig.produce_requests()) == 1 and rig.client(LEADER).unanswered, "a request in flight"
    rig.reactor.advance(100)
    later = rig.send("b")  # its partition is busy: the batch stays open behind the request in flight
    for _ in range(12):    # 1.2 s more: the request answered only past the later records' timeout (1 s)
        rig.reactor.advance(100)
        rig.sender.run_pass()
    assert not any(f.done() for f in later), "expired while its partition had a request in flight"
    rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[40, 0, ""]]})
    rig.sender.run_pass()
    assert [f.result(0).offset for f in first] == [40, 41]
    assert all(f.done() for f in later), "1.2 s after send() the records still wait: the timeout began when taken"
    error = later[0].exception(0)
    assert isinstance(error, DeliveryTimeoutError) and not error.possibly_written, "never sent"
    assert len(rig.produce_requests()) == 1, "an expired batch was sent"
