"""A ``ServiceProducer`` given several producer services and no ``is_down`` (a library user's):
a call that timed out at one service is not sent elsewhere (it may have been written), but the
calls after it must not keep going to that service first -- they went to the dead first
endpoint and timed out, every one, for good."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from fabric import wire
from fabric.client.services import ServiceDown, ServiceProducer, ServiceRecord, pack_rows, unpack_rows
from fabric.errors import RequestTimeout

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
