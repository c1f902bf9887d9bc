"""Where "possibly written" must be neither claimed nor missed (nodes/broker/producers.py).

1. A part in the wire form of clients from before the field ([topic, partition, leader_epoch])
   is judged as such clients were: on a broker restarted without a snapshot, whose read of the
   log's tail began past its start (it may have forgotten producers), a new idempotent
   producer's first batch is taken. Taken as
   possibly written, it was refused, the client started over under a new id, and the new id's
   first batch was refused again: such a producer could never write there.
2. A request the RPC client refused before sending it (RequestQueueFullError: "a request was not
   sent") does not make its batches possibly written: a leader that may have forgotten
   producers takes the retry (it failed a batch that never left the client).
3. The coordinator's offsets client knows an append the broker wrote may be in the log: a
   top-level buffer_full from a full parking lot (answered after the write) is not the client's
   own "never left", and an acks=all error carrying a base offset (request_timed_out) is a write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from fabric import protocol as P
from fabric.clock import ManualClock
from fabric.errors import RemoteError, RequestQueueFullError
from nodes.broker import producers as producers_module, tail_recovery
from nodes.broker.core import BrokerCore
from nodes.broker.messages import AppendRequest, ProduceInput, encode_produce_results
from nodes.coordinator.offsets_client import AppendOutcome
from tests.unit.fakes import (RecordingClient, broker_core, drop_producer_snapshots, loom_handlers, make_batch,
                              padded_batch, request)
from tests.unit.builders_sender import LEADER


def _restarted_broker_that_read_only_the_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> tuple[BrokerCore, Any]:
    """A leader whose retention deleted the log's start, restarted without a producer-state
    snapshot and reading less than its log at open: forgot_producers is set."""
    monkeypatch.setattr(tail_recovery, "PRODUCER_STATE_SCAN_RECORDS_MAX", 10)
    core = broker_core(tmp_path, 1, engine="segment")
    part = core.open_partition("t", 0, {"retention.bytes": 1})
    part.become_leader(1, [1], [1], now_ms=0)
    for i in range(30):
        [[r]] = core.append([AppendRequest(1, [ProduceInput("t", 0, 1, padded_batch(3, tag=f"o{i}-"), False)], None)])
        assert r.error == 0
    core.apply_retention()
    assert part.log_start_offset > 0
    core.close()
    drop_producer_snapshots(tmp_path)  # (a snapshot keeps the table: it forgot no producer)
    core = broker_core(tmp_path, 1, engine="segment")
    part = core.open_partition("t", 0, {"retention.bytes": 1})
    part.become_leader(2, [1], [1], now_ms=0)
    assert part.producers.forgot_producers and part.producers.forgot_below > part.log_start_offset
    return core, part


def test_a_client_sending_three_element_parts_can_still_write_its_first_batch_to_a_restarted_broker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    core, part = _restarted_broker_that_read_only_the_tail(tmp_path, monkeypatch)
    handlers, server = loom_handlers(core)
    answers = []
    try:
        for pid in (7, 8, 9):  # each refusal made such a client start over under a new producer id
            req = request(P.PRODUCE, [make_batch(2, pid=pid, epoch=0, seq=0, tag=f"p{pid}")],
                          acks=1, timeout_ms=1000, parts=[["t", 0, 2]])
            handlers.on_produce(req)
            handlers.after_pass()
            [result] = server.answer(req)["results"]
            answers.append(P.error_name(result[1]))
        assert answers == ["none"] * 3, f"first batches of new producers, never sent before: {answers}"
    finally:
        core.close()


class _RefusesFirstProduce(RecordingClient):
    """Refuses the first PRODUCE before sending it, calling back at once (as RpcClient does)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        if command == P.PRODUCE and not self.refused:
            self.refused += 1
            callback(None, [], RequestQueueFullError("send queue to tcp://127.0.0.1:1 is full"))
            return 0
        return super().request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)


def test_a_send_refused_by_the_rpc_client_before_it_left_is_not_possibly_written(
        make_sender_rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(producers_module, "PRODUCERS_MAX", 2)
    core = broker_core(tmp_path, 1)
    part = core.open_partition("t", 0, {})
    part.become_leader(3, [1, 2], [1, 2], now_ms=0)
    for other in (100, 101, 102):
        [[r]] = core.append([AppendRequest(1, [ProduceInput("t", 0, 3, make_batch(1, pid=other, epoch=0, seq=0),
                                                            False)], None)])
        assert r.error == 0
    assert part.producers.forgot_producers
    rig = make_sender_rig()
    rig.clients[LEADER] = refusing = _RefusesFirstProduce()
    futures = rig.send("a")
    rig.sender.run_pass()
    rig.grant_producer_id(7)
    rig.sender.run_pass()
    assert refusing.refused == 1 and not rig.produce_requests(), "the first send never left"
    rig.reactor.advance(100)
    rig.sender.run_pass()
    _, header, payloads, _ = rig.produce_requests()[-1]
    inputs = [ProduceInput.decode(tp, d) for tp, d in zip(header["parts"], payloads)]
    [results] = core.append([AppendRequest(header["acks"], inputs, None)])
    rig.client(LEADER).answer_last(P.PRODUCE, {"results": encode_produce_results(results)})
    try:
        assert (header["parts"], futures[0].exception(0)) == ([["t", 0, 3, 0]], None), \
            "a batch that never left the client was said possibly written, and failed"
    finally:
        core.close()


def test_the_offsets_client_knows_an_append_the_broker_wrote_may_be_in_the_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ManualClock(1_000)
    core = broker_core(tmp_path, 1, clock=clock)
    part = core.open_partition("t", 0, {})
    part.become_leader(1, [1, 2], [1, 2], now_ms=0)  # the follower does not fetch: acks=all parks
    handlers, server = loom_handlers(core)

    def append() -> Any:
        req = request(P.PRODUCE, [make_batch(1)], acks=-1, timeout_ms=5000, parts=[["t", 0]])  # the offsets client's form
        handlers.on_produce(req)
        handlers.after_pass()
        return req
    try:
        # a) parking lot full: a top-level buffer_full after the write
        with monkeypatch.context() as m:
            m.setattr(P, "PARKED_REQUESTS_MAX", 0)
            end = part.log_end_offset
            reply = server.answer(append())
        assert part.log_end_offset > end and reply["error"] == P.BUFFER_FULL, "written, then refused"
        full = AppendOutcome.from_reply(None, RemoteError(reply["error"], reply["message"]))
        # b) acks=all not met in time: request_timed_out with the base offset
        end = part.log_end_offset
        req = append()
        clock.advance(5_001)
        handlers.after_pass()
        timed_out = AppendOutcome.from_reply(server.answer(req), None)
        assert part.log_end_offset > end
        assert (full.maybe_written, timed_out.maybe_written) == (True, True), (
            f"buffer_full after the write: {full}; request_timed_out with base offset: {timed_out}")
        # and the client's own refusal before sending is in no log
        never_left = AppendOutcome.from_reply(None, RequestQueueFullError("send queue full"))
        assert never_left.retriable and not never_left.maybe_written
    finally:
        core.close()
