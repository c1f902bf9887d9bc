"""``BlockingClient(fail_on_disconnect=True)``: a call whose connection ends before its reply
fails at once with ``ConnectionLost`` (a ``RequestTimeout``) instead of at its deadline -- the
peer killed with the request took it along, so no reply can come. The gateway's consumer-service
calls use it: a long poll in flight when its consumer service was SIGKILLed waited out its whole
timeout (10.5 s) before the instance was made again.

Real sockets on 127.0.0.1: a libzmq ROUTER plays the service, and closing it is the kill."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import zmq

from fabric import protocol as P
from fabric import wire
from fabric.blocking_client import BlockingClient
from fabric.errors import ConnectionLost, RequestTimeout
from nodes.local_cluster import free_ports

CALL_TIMEOUT_MS = 10_000
SOON_S = 3.0  # far below CALL_TIMEOUT_MS: the loss is seen when the connection ends


class Service:
    """A ROUTER on ``endpoint`` that takes requests and answers them when told."""

    def __init__(self, endpoint: str) -> None:
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.bind(endpoint)

    def take(self, timeout_ms: int = 5000) -> wire.Request:
        assert self.sock.poll(timeout_ms), "the request never arrived"
        return wire.decode_request(self.sock.recv_multipart())

    def answer(self, req: wire.Request, header: dict) -> None:
        self.sock.send_multipart(wire.encode_reply(req.identity, {"id": req.header["id"], **header}))

    def die(self, linger_ms: int = 0) -> None:
        self.sock.close(linger_ms)


def _call_in_thread(client: BlockingClient) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        start = time.monotonic()
        try:
            out["reply"] = client.call(P.PING, {}, timeout_ms=CALL_TIMEOUT_MS)[0]
        except RequestTimeout as e:
            out["error"] = e
        out["elapsed_s"] = time.monotonic() - start
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


@pytest.fixture
def endpoint() -> str:
    return f"tcp://127.0.0.1:{free_ports(1)[0]}"


def test_a_call_in_flight_when_its_peer_dies_fails_at_once_and_the_next_goes_out_again(endpoint: str) -> None:
    service = Service(endpoint)
    client = BlockingClient(zmq.Context.instance(), endpoint, fail_on_disconnect=True)
    try:
        t, out = _call_in_thread(client)
        service.take()  # in flight: the service holds it
        service.die()
        t.join(CALL_TIMEOUT_MS / 1000 + 5)
        assert isinstance(out.get("error"), ConnectionLost), out
        assert out["elapsed_s"] < SOON_S, f"waited {out['elapsed_s']:.1f} s for a reply that could not come"
        # the service back on its endpoint: the next call goes out on the new connection (the
        # disconnect seen before it was sent does not fail it)
        service = Service(endpoint)
        t, out = _call_in_thread(client)
        service.answer(service.take(), {"node": "back"})
        t.join(CALL_TIMEOUT_MS / 1000 + 5)
        assert out.get("reply", {}).get("node") == "back", out
    finally:
        client.close()
        service.die()


def test_a_reply_that_came_before_the_connection_ended_is_returned(endpoint: str) -> None:
    service = Service(endpoint)
    client = BlockingClient(zmq.Context.instance(), endpoint, fail_on_disconnect=True)
    try:
        t, out = _call_in_thread(client)
        service.answer(service.take(), {"node": "last words"})
        service.die(linger_ms=1000)  # the reply is flushed, then the connection ends
        t.join(CALL_TIMEOUT_MS / 1000 + 5)
        assert out.get("reply", {}).get("node") == "last words", out
    finally:
        client.close()


def test_a_late_reply_read_before_the_connection_ended_does_not_hide_its_end(endpoint: str) -> None:
    """The answer to an earlier, timed-out call comes, then the peer dies with the current
    call: the late answer is dropped and the current call still fails at once."""
    service = Service(endpoint)
    client = BlockingClient(zmq.Context.instance(), endpoint, fail_on_disconnect=True)
    try:
        with pytest.raises(RequestTimeout):
            client.call(P.PING, {}, timeout_ms=200)
        earlier = service.take()
        t, out = _call_in_thread(client)
        service.take()
        service.answer(earlier, {"node": "late"})
        service.die(linger_ms=1000)
        t.join(CALL_TIMEOUT_MS / 1000 + 5)
        assert isinstance(out.get("error"), ConnectionLost), out
        assert out["elapsed_s"] < SOON_S
    finally:
        client.close()


def test_without_it_a_call_waits_for_its_deadline_as_before(endpoint: str) -> None:
    service = Service(endpoint)
    client = BlockingClient(zmq.Context.instance(), endpoint)
    try:
        start = time.monotonic()
        rid_seen = threading.Event()

        def kill_when_taken() -> None:
            service.take()
            rid_seen.set()
            service.die()
        threading.Thread(target=kill_when_taken, daemon=True).start()
        with pytest.raises(RequestTimeout) as e:
            client.call(P.PING, {}, timeout_ms=1500)
        assert rid_seen.is_set() and not isinstance(e.value, ConnectionLost)
        assert time.monotonic() - start >= 1.4
    finally:
        client.close()


def test_the_service_clients_retry_their_connection_at_least_every_half_second(endpoint: str) -> None:
    """A producer or consumer service back from an outage is reached within
    SERVICE_RECONNECT_IVL_MAX_MS: the gateway's connections to it, kept through the outage,
    retried only every P.RECONNECT_IVL_MAX_MS (5 s) by then, and the first produce accepted
    after the outage waited that long for its connection."""
    from fabric.client.services import SERVICE_RECONNECT_IVL_MAX_MS, ServiceConsumer, ServiceProducer

    assert SERVICE_RECONNECT_IVL_MAX_MS <= 500 < P.RECONNECT_IVL_MAX_MS
    producer = ServiceProducer(endpoint)
    consumer = ServiceConsumer(endpoint)
    service = Service(endpoint)
    try:
        t = threading.Thread(target=lambda: consumer.call(endpoint, P.PING, {}), daemon=True)
        t.start()
        service.answer(service.take(), {"node": "c"})
        t.join(10)
        for client in (producer._client(endpoint), consumer._clients.get(endpoint)):
            assert client.sock.getsockopt(zmq.RECONNECT_IVL_MAX) == SERVICE_RECONNECT_IVL_MAX_MS
    finally:
        producer.close()
        consumer.close()
        service.die()
