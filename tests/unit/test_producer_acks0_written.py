"""acks=0: a batch is done when *its own* request has been written to the kernel, and sent
again when its request was dropped unwritten with the connection.

The sender finished its acks=0 batches only once its client had no output left at all: under a
steady stream the output toward a busy broker is never empty, so batches written long before
stayed unfinished (their buffer memory held, flush waiting) until delivery_timeout_ms failed them
as not delivered; and a request dropped half-written with a lost connection emptied the output
too, so its records were reported sent. A sender rig (tests/unit/builders_sender.py) whose
recording client holds one-way messages until the test writes or loses them."""

from __future__ import annotations

from tests.unit.builders_sender import LEADER
from tests.unit.fakes import RecordingClient


def _rig(make_sender_rig, **kw):  # noqa: ANN001, ANN202
    rig = make_sender_rig(acks=0, **kw)
    client = rig.clients.setdefault(LEADER, RecordingClient())
    client.hold_oneway = True
    return rig, client


def test_a_batch_whose_request_was_written_is_done_while_later_requests_still_wait(make_sender_rig) -> None:  # noqa: ANN001
    rig, client = _rig(make_sender_rig, delivery_timeout_ms=1000)
    first = rig.send("a")
    rig.sender.run_pass()
    second = rig.send("b")
    rig.sender.run_pass()
    assert len(client.oneway) == 2
    client.write_oneway(1)  # the first request is in the kernel; the second waits for the peer
    rig.sender.run_pass()
    assert [f.result(0).offset for f in first] == [-1, -1]
    assert not any(f.done() for f in second)


def test_written_batches_do_not_expire_under_a_stream_that_keeps_the_output_busy(make_sender_rig) -> None:  # noqa: ANN001
    rig, client = _rig(make_sender_rig, delivery_timeout_ms=1000)
    done = []
    for i in range(6):  # each pass writes the request before and queues another: never idle
        futures = rig.send(f"r{i}")
        rig.sender.run_pass()
        client.write_oneway(len(client.unwritten) - 1)
        rig.reactor.clock.advance(400)
        done += futures
    rig.sender.run_pass()
    written = done[:-2]
    assert all(f.done() and f.exception(0) is None for f in written), \
        [type(f.exception(0)).__name__ for f in written if f.done()]


def test_a_request_dropped_unwritten_with_its_connection_is_sent_again(make_sender_rig) -> None:  # noqa: ANN001
    rig, client = _rig(make_sender_rig)
    futures = rig.send("a")
    rig.sender.run_pass()
    client.lose_oneway()  # the connection was lost with the request still in its outbox
    rig.sender.run_pass()
    assert not any(f.done() for f in futures), "a request dropped unwritten was reported sent"
    assert len(client.oneway) == 2 and client.oneway[1][2] == client.oneway[0][2]
    client.write_oneway()
    rig.sender.run_pass()
    assert [f.result(0).offset for f in futures] == [-1, -1]


def test_requests_dropped_together_are_sent_again_in_their_order(make_sender_rig) -> None:  # noqa: ANN001
    rig, client = _rig(make_sender_rig)
    first = rig.send("a")
    rig.sender.run_pass()
    second = rig.send("b")
    rig.sender.run_pass()
    later = rig.send("c")  # not sent yet when the connection goes
    client.lose_oneway()
    rig.sender.run_pass()
    client.write_oneway()
    rig.sender.run_pass()
    resent = [p for _, _, payloads in client.oneway[2:] for p in payloads]
    assert resent == client.oneway[0][2] + client.oneway[1][2] + resent[2:] and len(resent) >= 3
    assert all(f.done() and f.exception(0) is None for f in first + second + later)


def test_close_after_a_dropped_request_fails_it_once(make_sender_rig) -> None:  # noqa: ANN001
    rig, client = _rig(make_sender_rig)
    futures = rig.send("a")
    rig.sender.run_pass()
    rig.sender.stop()  # fails what waits; the client's close then drops the message
    client.lose_oneway()
    assert all(f.done() and f.exception(0) is not None for f in futures)
    assert len(client.oneway) == 1  # not sent again
