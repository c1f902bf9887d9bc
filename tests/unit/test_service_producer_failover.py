"""A ``ServiceProducer`` given several producer services and no ``is_down`` (a library user's):
a call that timed out at one service is not sent elsewhere (it may have been written), but the
calls after it must not keep going to that service first -- they went to the dead first
endpoint and timed out, every one, for good."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from fabric import protocol as P
from fabric import wire
from fabric.client.services import ServiceDown, ServiceProducer, ServiceRecord, pack_rows, unpack_rows
from fabric.errors import CodedError, RequestTimeout
from nodes.gateway.translate import translated
from webui.errors import KIND_CODES, ClusterError

DEADLINE_S = 10.0


def test_calls_after_a_timeout_go_to_the_other_service_first(scripted: Any) -> None:
    hung = threading.Event()
    served: list[str] = []

    def service(name: str, hangs: bool) -> Any:
        def answer(req: wire.Request) -> tuple[dict, list]:
            rows = unpack_rows(req.payloads[0], 10, None)
            served.append(name)
            if hangs:
                hung.wait(DEADLINE_S)  # a service that stopped answering
            return {"topic": "t", "count": len(rows)}, [pack_rows([[0, i, 0, ""] for i in range(len(rows))])]
        return answer
    first, second = scripted(service("producer-1", True)), scripted(service("producer-2", False))
    sp = ServiceProducer([first, second], timeout_ms=300)
    try:
        with pytest.raises(RequestTimeout):
            sp.produce("t", [ServiceRecord(b"a")], acks="all")
        results = sp.produce("t", [ServiceRecord(b"b")], acks="all")
        assert [r.ok for r in results] == [True]
    finally:
        hung.set()
        sp.close()
    assert served == ["producer-1", "producer-2"], served


def test_a_stopping_service_is_sent_nothing_new_and_the_request_goes_to_another(scripted: Any) -> None:
    """``takes_work`` False (the gateway saw its PING say ``stopping``): skipped, not sent --
    nothing written there -- and with no other service the call fails ServiceDown (not written)."""
    served: list[str] = []

    def service(name: str) -> Any:
        def answer(req: wire.Request) -> tuple[dict, list]:
            rows = unpack_rows(req.payloads[0], 10, None)
            served.append(name)
            return {"topic": "t", "count": len(rows)}, [pack_rows([[0, i, 0, ""] for i in range(len(rows))])]
        return answer
    first, second = scripted(service("producer-1")), scripted(service("producer-2"))
    stopping = {first}
    sp = ServiceProducer([first, second], timeout_ms=2000, takes_work=lambda ep: ep not in stopping)
    try:
        assert [r.ok for r in sp.produce("t", [ServiceRecord(b"a")], acks="all")] == [True]
        stopping.add(second)
        with pytest.raises(ServiceDown) as e:
            sp.produce("t", [ServiceRecord(b"b")], acks="all")
        assert not e.value.may_have_arrived and "stopping" in e.value.message
    finally:
        sp.close()
    assert served == ["producer-2"], served


def _answering(name: str, served: list[str], refusal: dict | None = None) -> Any:
    """A producer service that writes every record (offsets 0, 1, ...), or refuses every request
    with ``refusal`` (an error header); ``served`` gets its name for each request it took."""
    def answer(req: wire.Request) -> tuple[dict, list]:
        served.append(name)
        if refusal is not None:
            return refusal, []
        rows = unpack_rows(req.payloads[0], 10, None)
        return {"topic": "t", "count": len(rows)}, [pack_rows([[0, i, 0, ""] for i in range(len(rows))])]
    return answer


STOPPING = {"error": P.BUFFER_FULL, "message": "the producer service is stopping: nothing of the request was written",
            "stopping": True}


def test_a_request_refused_by_a_stopping_service_goes_to_another_that_takes_work(scripted: Any) -> None:
    """A service that began draining before the gateway's health watcher saw it (PING says
    ``stopping`` within half a second) refuses the request saying it is stopping: nothing was
    written, so it goes once to the next service that takes work -- not answered 503 / 50301
    while that one is there. The stopping one is asked last from then on."""
    served: list[str] = []
    first = scripted(_answering("producer-1", served, STOPPING))
    second = scripted(_answering("producer-2", served))
    sp = ServiceProducer([first, second], timeout_ms=2000, takes_work=lambda ep: True)
    try:
        assert [r.ok for r in sp.produce("t", [ServiceRecord(b"a")], acks="all")] == [True]
        assert [r.ok for r in sp.produce("t", [ServiceRecord(b"b")], acks="all")] == [True]
    finally:
        sp.close()
    assert served == ["producer-1", "producer-2", "producer-2"], served


def test_a_stopping_refusal_with_no_other_service_taking_work_is_answered_as_refused(scripted: Any) -> None:
    served: list[str] = []
    first = scripted(_answering("producer-1", served, STOPPING))
    second = scripted(_answering("producer-2", served))
    sp = ServiceProducer([first, second], timeout_ms=2000, takes_work=lambda ep: ep == first)
    try:
        with pytest.raises(CodedError) as e:
            sp.produce("t", [ServiceRecord(b"a")], acks="all")
    finally:
        sp.close()
    assert "stopping" in e.value.message, e.value
    with pytest.raises(ClusterError) as c, translated("the producer service"):
        raise e.value
    assert KIND_CODES[c.value.kind] == 50301  # the gateway's answer: nothing written, retry later
    assert served == ["producer-1"], served


def test_a_full_buffer_is_not_sent_elsewhere(scripted: Any) -> None:
    """A refusal that does not say the service is stopping (its buffer is full) is the
    service's back-pressure, answered as it is."""
    served: list[str] = []
    full = {"error": P.BUFFER_FULL, "message": "the producer service buffer (1 bytes) is full: retry later"}
    first = scripted(_answering("producer-1", served, full))
    second = scripted(_answering("producer-2", served))
    sp = ServiceProducer([first, second], timeout_ms=2000, takes_work=lambda ep: True)
    try:
        with pytest.raises(CodedError) as e:
            sp.produce("t", [ServiceRecord(b"a")], acks="all")
    finally:
        sp.close()
    assert e.value.code == P.BUFFER_FULL
    assert served == ["producer-1"], served
