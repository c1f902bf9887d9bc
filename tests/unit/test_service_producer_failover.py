"""A ``ServiceProducer`` given several producer services and no ``is_down`` (a library user's):
a call that timed out at one service is not sent elsewhere (it may have been written), but the
calls after it must not keep going to that service first -- they went to the dead first
endpoint and timed out, every one, for good."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from fabric import wire
from fabric.client.services import ServiceProducer, ServiceRecord, pack_rows, unpack_rows
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
