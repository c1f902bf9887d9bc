"""``ServiceConsumer.create`` over several consumer services: one that refuses with
``buffer_full`` -- it is stopping (SIGTERM, draining) or hosts its maximum of instances --
made nothing, so the instance is made on the next one instead of the call failing."""

from __future__ import annotations

from typing import Any

import pytest

from fabric import protocol as P
from fabric import wire
from fabric.client.services import ServiceConsumer
from fabric.errors import RemoteError


def _service(name: str, refuses: bool, asked: list[str]) -> Any:
    def answer(req: wire.Request) -> tuple[dict, list]:
        asked.append(name)
        if refuses:
            return {"error": P.BUFFER_FULL, "message": "the consumer service is stopping"}, []
        return {"group": req.header["group"], "instance": req.header["instance"], "node": name, "pid": 1}, []
    return answer


def test_a_refusing_service_is_passed_over_for_the_next(scripted: Any) -> None:
    asked: list[str] = []
    endpoints = [scripted(_service("consumer-1", True, asked)), scripted(_service("consumer-2", False, asked))]
    # the name hashes to a start; both orders are tried so the refusing one is asked first once
    for order in (endpoints, endpoints[::-1]):
        asked.clear()
        services = ServiceConsumer(order)
        try:
            names = [f"i{n}" for n in range(8)]
            made = [services.create("g", name) for name in names]
        finally:
            services.close()
        assert {m.node for m in made} == {"consumer-2"}
        assert "consumer-1" in asked


def test_every_service_refusing_is_the_refusal(scripted: Any) -> None:
    asked: list[str] = []
    services = ServiceConsumer([scripted(_service("consumer-1", True, asked)),
                                scripted(_service("consumer-2", True, asked))])
    try:
        with pytest.raises(RemoteError) as e:
            services.create("g", "i")
    finally:
        services.close()
    assert e.value.code == P.BUFFER_FULL and sorted(asked) == ["consumer-1", "consumer-2"]
