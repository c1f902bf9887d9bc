"""SERVICE_PRODUCE's ``values`` form: records with neither key nor headers, all for one
partition (or none), travel as one array of values, and their results, when every one was
delivered, come back as ``columns`` ([partitions, offsets]) -- no array per record either way.
Checked at both ends: the producer service's intake and answer (real JobSender, real producer
driven by the test) and the blocking client against a scripted service."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgpack
import pytest

from fabric import protocol as P
from fabric import wire
from fabric.client.services import (COLUMNS_FORM, VALUES_FORM, ProduceResult, ServiceProducer, ServiceRecord,
                                    pack_rows, unpack_columns, unpack_rows)
from fabric.errors import MalformedFrame
from nodes.producer import RECORD_OVERHEAD_BYTES, ProduceIntake
from tests.unit.builders_producer_service import assert_refused_keeping_nothing
from tests.unit.fakes import request


def _values(values: list, partition: Any = None, count: int | None = None, frame: bytes | None = None) -> wire.Request:
    return request(P.SERVICE_PRODUCE, [pack_rows(values) if frame is None else frame], topic="t", acks="all",
                   count=len(values) if count is None else count, form=VALUES_FORM, partition=partition)


def test_a_values_request_is_admitted_as_the_records_it_stands_for() -> None:
    intake = ProduceIntake(1 << 20, Counter())
    job = intake.admit(_values([b"a", b"bc"], partition=2))
    assert job.values_form and job.framed
    assert list(job.records) == [(None, b"a", None, 2), (None, b"bc", None, 2)]
    assert intake.buffered_bytes == 3 + 2 * RECORD_OVERHEAD_BYTES  # as the same records in rows


@pytest.mark.parametrize("req, code", [
    (_values([b"v"], count=2), P.MALFORMED_REQUEST),                     # count disagrees
    (_values([b"v"], frame=b"\xc1"), P.MALFORMED_REQUEST),               # not msgpack
    (_values([b"v"], frame=msgpack.packb({"a": b"v"})), P.MALFORMED_REQUEST),  # not an array
    (_values([b"v", "text"]), P.INVALID_RECORD),                         # a value that is not bytes
    (_values([b"v", None]), P.INVALID_RECORD),
    (_values([b"v"], partition=-1), P.MALFORMED_REQUEST),
    (_values([b"v"], partition=True), P.MALFORMED_REQUEST),
    (_values([b"v"], partition="0"), P.MALFORMED_REQUEST),
    (_values([]), P.MALFORMED_REQUEST),                                  # no record
])
def test_a_bad_values_request_is_refused_and_leaves_nothing(req: wire.Request, code: int) -> None:
    assert_refused_keeping_nothing(req, code)


def test_a_delivered_values_job_is_answered_in_columns_and_one_with_a_failure_in_rows(make_rig) -> None:  # noqa: ANN001
    rig = make_rig()
    intake = ProduceIntake(1 << 20, Counter())
    good = intake.admit(_values([b"a", b"b", b"c"], partition=1))
    rig.sender.send(good)
    rig.deliver()
    assert rig.answered == [good]
    header, payloads = good.reply()
    assert header == {"topic": "t", "count": 3, "form": COLUMNS_FORM}
    assert unpack_columns(payloads[0], 3) == ([1, 1, 1], [1000, 1001, 1002])

    bad = intake.admit(_values([b"a", b"x" * 300], partition=1))  # the rig's producer refuses > 200 bytes
    rig.sender.send(bad)
    rig.deliver()
    header, payloads = bad.reply()
    assert "form" not in header
    rows = unpack_rows(payloads[0], 2, 4)
    assert rows[0][:3] == (1, 1000, 0) and rows[1][:3] == (-1, -1, P.RECORD_TOO_LARGE)


def test_the_client_sends_values_for_keyless_records_of_one_partition_and_reads_columns(scripted) -> None:  # noqa: ANN001
    seen: list[wire.Request] = []

    def service(req: wire.Request) -> tuple[dict, list]:
        seen.append(req)
        n = req.header["count"]
        if req.header.get("form") == VALUES_FORM:
            return {"topic": "t", "count": n, "form": COLUMNS_FORM}, [pack_rows([[2] * n, list(range(7, 7 + n))])]
        return {"topic": "t", "count": n}, [pack_rows([[0, i, 0, ""] for i in range(n)])]
    sp = ServiceProducer(scripted(service))
    try:
        got = sp.produce("t", [ServiceRecord(b"a", partition=2), (None, b"b", None, 2)])
        assert got == [ProduceResult(2, 7, 0, ""), ProduceResult(2, 8, 0, "")]
        assert seen[-1].header["form"] == VALUES_FORM and seen[-1].header["partition"] == 2
        assert msgpack.unpackb(seen[-1].payloads[0]) == [b"a", b"b"]
        for records in ([ServiceRecord(b"a", key=b"k")], [(None, b"a", [["h", None]], None)],
                        [(None, b"a", None, 1), (None, b"b", None, 2)]):
            sp.produce("t", records)  # a key, headers, two partitions: rows
            assert "form" not in seen[-1].header and unpack_rows(seen[-1].payloads[0], 2, 4)
    finally:
        sp.close()


@pytest.mark.parametrize("frame", [b"\xc1", pack_rows([[0], [1]]), pack_rows([[0, 0]]), pack_rows([[0, 0], [1, 2], [3]])])
def test_a_bad_columns_frame_is_malformed(scripted, frame: bytes) -> None:  # noqa: ANN001
    sp = ServiceProducer(scripted(lambda req: ({"topic": "t", "count": 2, "form": COLUMNS_FORM}, [frame])))
    try:
        with pytest.raises(MalformedFrame):
            sp.produce("t", [ServiceRecord(b"a"), ServiceRecord(b"b")])
    finally:
        sp.close()
