"""Records between the gateway and the services travel in one payload frame, not in the msgpack
header: SERVICE_PRODUCE's records and results, CONSUMER_FETCH's records with ``frame: true``
(``fabric.client.services.pack_rows`` / ``unpack_rows``). Both ends are checked here: the
producer service's intake and answer, the consumer service's fetch, and the blocking clients
against a scripted service on inproc."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgpack
import pytest

from fabric import protocol as P
from fabric import wire
from fabric.client.services import (ProduceResult, ServiceConsumer, ServiceProducer, ServiceRecord, pack_rows,
                                    unpack_rows)
from fabric.errors import MalformedFrame, RemoteError
from fabric.records import Record, headers_bytes
from nodes.consumer_instance import Framed, Instance, InstanceHost, check_op_header
from nodes.producer import RECORD_OVERHEAD_BYTES, ProduceIntake
from tests.unit.builders_producer_service import assert_refused_keeping_nothing
from tests.unit.fakes import request


# -- the codec ------------------------------------------------------------------------------
def test_rows_round_trip_as_tuples() -> None:
    rows = [[b"k", b"v" * 300_000, [["h", b"x"]], 2], [None, b"", None, None]]
    assert unpack_rows(pack_rows(rows), 10, 4) == ((b"k", b"v" * 300_000, (("h", b"x"),), 2), (None, b"", None, None))


@pytest.mark.parametrize("frame, why", [
    (b"\xc1", "not msgpack"),
    (msgpack.packb({"a": 1}), "not an array"),
    (pack_rows([[1, 2, 3, 4]] * 3), "more rows than allowed"),
    (pack_rows([[1, 2, 3]]), "a row of the wrong width"),
    (pack_rows([5]), "a row that is not an array"),
])
def test_a_bad_frame_is_malformed(frame: bytes, why: str) -> None:
    with pytest.raises(MalformedFrame) as e:
        unpack_rows(frame, 2, 4)
    assert e.value.code == P.MALFORMED_REQUEST, why


# -- the producer service --------------------------------------------------------------------
def _framed(records: list, count: int | None = None, payloads: list[bytes] | None = None) -> wire.Request:
    frames = [pack_rows(records)] if payloads is None else payloads
    return request(P.SERVICE_PRODUCE, frames, topic="t", acks="all", count=len(records) if count is None else count)


def test_a_framed_request_is_admitted_and_counted_like_one_in_the_header() -> None:
    records = [[b"k", b"value", [["h", b"xyz"]], None], [None, b"v2", None, 1]]
    framed, inline = ProduceIntake(1 << 20, Counter()), ProduceIntake(1 << 20, Counter())
    job = framed.admit(_framed(records))
    old = inline.admit(request(P.SERVICE_PRODUCE, topic="t", acks="all", records=records))
    assert job.framed and not old.framed
    assert [list(r) for r in job.records] == [[b"k", b"value", (("h", b"xyz"),), None], [None, b"v2", None, 1]]
    assert framed.buffered_bytes == inline.buffered_bytes == (len(b"k" b"value" b"v2") + 2 * RECORD_OVERHEAD_BYTES
                                                               + headers_bytes([("h", b"xyz")]))


def test_the_results_go_back_in_a_frame_for_a_framed_request_and_in_the_header_otherwise() -> None:
    intake = ProduceIntake(1 << 20, Counter())
    job = intake.admit(_framed([[None, b"a", None, None], [None, b"b", None, None]]))
    assert not job.resolve(1, [2, 8, 0, ""]) and job.resolve(0, [-1, -1, P.UNKNOWN_TOPIC_OR_PARTITION, "gone"])
    header, payloads = job.reply()
    assert header == {"topic": "t", "count": 2}
    assert unpack_rows(payloads[0], 2, 4) == ((-1, -1, P.UNKNOWN_TOPIC_OR_PARTITION, "gone"), (2, 8, 0, ""))
    old = intake.admit(request(P.SERVICE_PRODUCE, topic="t", acks=1, records=[[None, b"c", None, None]]))
    old.resolve(0, [0, 3, 0, ""])
    assert old.reply() == ({"topic": "t", "results": [[0, 3, 0, ""]]}, [])


@pytest.mark.parametrize("req, code", [
    (_framed([[None, b"v", None, None]], count=2), P.MALFORMED_REQUEST),                 # count disagrees
    (_framed([[None, b"v", None, None]], payloads=[]), P.MALFORMED_REQUEST),              # no frame
    (_framed([[None, b"v", None, None]], payloads=[pack_rows([[None, b"v", None, None]])] * 2), P.MALFORMED_REQUEST),
    (_framed([[None, b"v", None, None]], payloads=[b"\xc1"]), P.MALFORMED_REQUEST),       # not msgpack
    (_framed([[None, "text", None, None]]), P.INVALID_RECORD),                            # value not bytes
    (_framed([[None, b"v", None, True]]), P.INVALID_RECORD),                              # partition a bool
    (_framed([[None, b"v", [["h", 5]], None]]), P.INVALID_RECORD),                         # header value
    (_framed([[None, b"v", None]]), P.INVALID_RECORD),                                    # three fields
    (_framed([]), P.MALFORMED_REQUEST),                                                   # no record
])
def test_a_bad_framed_request_is_refused_and_leaves_nothing(req: wire.Request, code: int) -> None:
    assert_refused_keeping_nothing(req, code)


def test_a_frame_larger_than_the_free_buffer_is_refused_before_it_is_decoded() -> None:
    intake = ProduceIntake(4096, Counter())
    with pytest.raises(RemoteError) as e:
        intake.admit(_framed([[None, b"v", None, None]] * 10, payloads=[b"\xc1" * 5000]))  # not even msgpack
    assert e.value.code == P.BUFFER_FULL and intake.counters["buffer_full"] == 1 and intake.buffered_bytes == 0


# -- the consumer service ------------------------------------------------------------------
class _PollingConsumer:
    """What an instance's GroupConsumer does for a fetch: poll (within ``max_bytes``: the records
    past it stay buffered), give records back (``seeks``: the (partition, offset) pairs given
    back; a position is past every record polled), and keep the auto-commit bounds the instance
    sets."""

    enable_auto_commit = True

    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.seeks: list[tuple[tuple[str, int], int]] = []
        self.auto_commit_bounds: dict[tuple[str, int], int] = {}

    def poll(self, timeout_ms: int, max_records: int, max_bytes: int | None = None) -> list[Record]:
        out: list[Record] = []
        size = 0
        for r in self.records[:max_records]:
            size += len(r.value) + len(r.key or b"")
            if out and max_bytes is not None and size > max_bytes:
                break
            out.append(r)
        return out

    def seek(self, tp: tuple[str, int], offset: int) -> None:
        self.seeks.append((tp, offset))

    def give_back(self, offsets: Any) -> None:
        self.seeks.extend(offsets)

    def position(self, tp: tuple[str, int]) -> int | None:
        return max((r.offset + 1 for r in self.records if (r.topic, r.partition) == tp), default=None)


def _instance(records: list[Record]) -> Instance:
    inst = Instance(InstanceHost("consumer-1", ["tcp://127.0.0.1:1"], 1000, lambda e: None), "g", "i", {}, 0)
    inst.consumer = _PollingConsumer(records)  # type: ignore[assignment]
    return inst


RECORDS = [Record("t", i % 2, i, 1000 + i, None if i % 2 else b"k%d" % i, b"v" * 100, [("h", b"x")] if i == 3 else None)
           for i in range(6)]


def test_a_fetch_with_frame_answers_its_records_in_one_frame() -> None:
    answer = _instance(RECORDS)._do("fetch", {"frame": True, "max_records": 10})
    assert isinstance(answer, Framed) and answer.header == {"count": 6} and len(answer.payloads) == 1
    assert [Record._make(r) for r in unpack_rows(answer.payloads[0], 10, 7)] == [
        r._replace(headers=tuple(r.headers) if r.headers else None) for r in RECORDS]
    assert _instance(RECORDS)._do("fetch", {"max_records": 10}) == {"records": RECORDS}  # the header form


def test_a_fetch_over_max_bytes_leaves_the_rest_buffered() -> None:
    inst = _instance(RECORDS)
    answer = inst._do("fetch", {"frame": True, "max_bytes": 250})
    assert isinstance(answer, Framed) and answer.header == {"count": 2}
    assert inst.consumer.seeks == []  # type: ignore[union-attr]  # nothing given back (fetched again)
    # auto-commits stop at the records that went out (0 and 1), not at the positions 2 and 3
    assert inst.consumer.auto_commit_bounds == {("t", 0): 0, ("t", 1): 1}


def test_frame_must_be_a_boolean() -> None:
    with pytest.raises(RemoteError) as e:
        check_op_header("fetch", {"frame": 1})
    assert e.value.code == P.MALFORMED_REQUEST


# -- the blocking clients against a scripted service ----------------------------------------
def test_the_service_producer_sends_a_frame_and_reads_the_results_frame(scripted: Any) -> None:
    seen: list[wire.Request] = []

    def service(req: wire.Request) -> tuple[dict, list]:
        seen.append(req)
        rows = unpack_rows(req.payloads[0], 10, 4)
        return {"topic": "t", "count": len(rows)}, [pack_rows([[0, i, 0, ""] for i in range(len(rows))])]
    sp = ServiceProducer(scripted(service))
    try:
        got = sp.produce("t", [ServiceRecord(b"a", key=b"k"), (None, b"b", [["h", None]], 1)], acks=1)
    finally:
        sp.close()
    assert got == [ProduceResult(0, 0, 0, ""), ProduceResult(0, 1, 0, "")] and got[0].ok
    assert seen[0].header["count"] == 2 and "records" not in seen[0].header
    assert unpack_rows(seen[0].payloads[0], 10, 4) == ((b"k", b"a", None, None), (None, b"b", (("h", None),), 1))


@pytest.mark.parametrize("reply", [
    ({"topic": "t", "count": 1}, []),                                        # no results frame
    ({"topic": "t", "count": 2}, [pack_rows([[0, 0, 0, ""], [0, 1, 0, ""]])]),  # more results than records
])
def test_a_bad_results_frame_is_malformed(scripted: Any, reply: tuple[dict, list]) -> None:
    sp = ServiceProducer(scripted(lambda req: reply))
    try:
        with pytest.raises(MalformedFrame):
            sp.produce("t", [ServiceRecord(b"a")])
    finally:
        sp.close()


def test_a_consumer_instance_fetches_its_records_in_a_frame(scripted: Any) -> None:
    seen: list[dict] = []

    def service(req: wire.Request) -> tuple[dict, list]:
        seen.append(req.header)
        return {"count": 2}, [pack_rows(RECORDS[2:4])]
    sc = ServiceConsumer(scripted(service))
    try:
        got = sc.instance("g", "i", sc.endpoints[0]).fetch(timeout_ms=10, max_records=5)
    finally:
        sc.close()
    assert seen[0]["frame"] is True and seen[0]["max_records"] == 5
    assert got == [RECORDS[2], RECORDS[3]._replace(headers=(("h", b"x"),))]
    assert isinstance(got[0], Record)
