"""A producer- or consumer-service call that passed a service over leaves no reference cycle.

``ServiceProducer.produce`` and ``ServiceConsumer.create`` kept the error of a service they
passed over (stopping, full, timed out) in a local, ``last``, to raise it when no other service
took the request. The error's traceback holds the call's frame, whose locals hold ``last``: error
-> traceback -> frame -> error, a reference cycle that kept the frame -- the request's records
and packed frame, the caller's config, the results of a request another service took -- and
the error until a cyclic collection, which the gateway's tuned collector (``nodes/run.py``) runs
rarely. The same in ``BlockingClient._reply`` for a connection lost or refused (``raise lost``):
every frame of the call, the caller's included, was kept. Real clients, inproc and loopback
sockets; the collector is off while these run: what is not freed by reference counting stays.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

import pytest
import zmq

from fabric import protocol as P
from fabric import wire
from fabric.blocking_client import BlockingClient
from fabric.client.services import ServiceConsumer, ServiceDown, ServiceProducer, ServiceRecord
from fabric.errors import BufferFullError, CodedError, ConnectionRefused
from nodes.local_cluster import free_ports
from tests.unit.test_service_producer_failover import STOPPING, _answering

FULL = {"error": P.BUFFER_FULL, "message": "the consumer service holds its most instances: retry later"}


class Records(list):
    """A caller's records (a subclass: a list takes no weak references)."""


class Config(dict):
    """A caller's consumer config (a subclass: a dict takes no weak references)."""


def _consumer_service(served: list[str], name: str, refusal: dict | None = None) -> Callable[[wire.Request], Any]:
    def answer(req: wire.Request) -> tuple[dict, list]:
        served.append(name)
        if refusal is not None:
            return refusal, []
        return {"group": req.header["group"], "instance": "i-1", "node": name, "pid": 4242}, []
    return answer


def _failed(call: Callable[[], Any], refs: list[weakref.ref]) -> tuple[type, int, str, Any]:
    """What ``call`` raised (its type, code, message, cause), the error itself only weakly in
    ``refs``: the caller then drops it, as the gateway does once it has answered."""
    try:
        call()
    except CodedError as e:
        refs.append(weakref.ref(e))
        return type(e), e.code, e.message, e.__cause__
    raise AssertionError("the call did not fail")


def _produce(sp: ServiceProducer, refs: list[weakref.ref]) -> Callable[[], Any]:
    def call() -> Any:
        records = Records([ServiceRecord(b"a"), ServiceRecord(b"b")])
        refs.append(weakref.ref(records))
        return sp.produce("t", records, acks="all")
    return call


@pytest.mark.parametrize("sent", [True, False], ids=["refused-stopping", "none-takes-work"])
def test_a_produce_no_service_took_is_freed_without_a_collection(scripted: Any, no_collector: None, sent: bool) -> None:
    """Sent, and refused by a service stopping (``last`` a caught error); or sent to none, every
    service stopping (``last`` a ServiceDown made here)."""
    served: list[str] = []
    sp = ServiceProducer([scripted(_answering("producer-1", served, STOPPING))], timeout_ms=5000,
                         takes_work=lambda ep: sent)
    refs: list[weakref.ref] = []
    try:
        kind, code, message, cause = _failed(_produce(sp, refs), refs)
    finally:
        sp.close()
    if sent:  # as before
        assert (kind, code, cause) == (BufferFullError, P.BUFFER_FULL, None) and served == ["producer-1"]
    else:
        assert kind is ServiceDown and cause is None and served == []
    assert "stopping" in message
    assert [r() for r in refs] == [None, None], "the request and its error are kept by a reference cycle"


def test_a_produce_sent_on_after_a_stopping_refusal_is_freed_without_a_collection(scripted: Any, no_collector: None) -> None:
    served: list[str] = []
    sp = ServiceProducer([scripted(_answering("producer-1", served, STOPPING)),
                          scripted(_answering("producer-2", served))], timeout_ms=5000, takes_work=lambda ep: True)
    refs: list[weakref.ref] = []
    try:
        results = _produce(sp, refs)()
    finally:
        sp.close()
    assert [r.offset for r in results] == [0, 1] and served == ["producer-1", "producer-2"]
    del results
    assert [r() for r in refs] == [None], "the request is kept by the passed-over service's error's cycle"


def _create(sc: ServiceConsumer, refs: list[weakref.ref]) -> Callable[[], Any]:
    def call() -> Any:
        config = Config({"auto_offset_reset": "earliest"})
        refs.append(weakref.ref(config))
        return sc.create("g", config=config)
    return call


def test_a_create_every_service_refused_is_freed_without_a_collection(scripted: Any, no_collector: None) -> None:
    served: list[str] = []
    sc = ServiceConsumer([scripted(_consumer_service(served, "consumer-1", FULL)),
                          scripted(_consumer_service(served, "consumer-2", FULL))])
    refs: list[weakref.ref] = []
    try:
        kind, code, message, cause = _failed(_create(sc, refs), refs)
    finally:
        sc.close()
    assert (kind, code, message, cause) == (BufferFullError, P.BUFFER_FULL, FULL["message"], None)  # as before
    assert sorted(served) == ["consumer-1", "consumer-2"]
    assert [r() for r in refs] == [None, None], "the refused create and its error are kept by a reference cycle"


def test_a_create_made_on_the_next_service_is_freed_without_a_collection(scripted: Any, no_collector: None) -> None:
    served: list[str] = []
    sc = ServiceConsumer([scripted(_consumer_service(served, "consumer-2")),
                          scripted(_consumer_service(served, "consumer-1", FULL))])
    refs: list[weakref.ref] = []
    try:
        instance = _create(sc, refs)()  # unnamed: the round robin's first is the second endpoint
    finally:
        sc.close()
    assert served == ["consumer-1", "consumer-2"] and (instance.node, instance.pid) == ("consumer-2", 4242)
    del instance
    assert [r() for r in refs] == [None], "the create is kept by the passed-over service's error's cycle"


class Header(dict):
    """A request's header (a subclass: a dict takes no weak references)."""


def test_a_call_whose_connect_is_refused_is_freed_without_a_collection(no_collector: None) -> None:
    """``fail_on_refused``: ConnectionRefused, raised from the local the connection's end was
    judged into (``BlockingClient._reply``'s ``lost``, also ConnectionLost's way out)."""
    endpoint = f"tcp://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    client = BlockingClient(zmq.Context.instance(), endpoint, fail_on_refused=True)
    refs: list[weakref.ref] = []

    def call() -> Any:
        header = Header(asked="ping")
        refs.append(weakref.ref(header))
        return client.call(P.PING, header, timeout_ms=10_000)
    try:
        kind, _, message, cause = _failed(call, refs)
    finally:
        client.close()
    assert issubclass(kind, ConnectionRefused) and endpoint in message and cause is None
    assert [r() for r in refs] == [None, None], "the refused call and its error are kept by a reference cycle"
