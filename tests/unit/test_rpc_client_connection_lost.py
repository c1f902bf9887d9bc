"""RpcClient(fail_on_disconnect=True): the requests in flight on a connection that ends fail at
once with a retriable RequestTimeout (their server died with them: no answer can come), and a
request sent afterwards waits for the next connection and is answered there. Without the flag
they wait for their deadlines, as before."""

from __future__ import annotations

import time

import pytest
import zmq

from fabric import protocol as P
from fabric import wire
from fabric.errors import RequestTimeout
from fabric.reactor import Reactor
from fabric.rpc import RpcClient

DEADLINE_S = 10.0
REQUEST_TIMEOUT_MS = 60_000  # far beyond every wait below: only the connection's end answers


def _router(port: int | None = None) -> tuple[zmq.Socket, int]:
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    if port is None:
        return sock, sock.bind_to_random_port("tcp://127.0.0.1")
    sock.bind(f"tcp://127.0.0.1:{port}")
    return sock, port


def _run_until(reactor: Reactor, condition, also=lambda: None) -> None:  # noqa: ANN001
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        reactor.run_once(5)
        also()


def _received(sock: zmq.Socket, into: list) -> None:
    while sock.poll(0):
        into.append(sock.recv_multipart())


def _answer(sock: zmq.Socket, msg: list[bytes]) -> None:
    req = wire.decode_request(msg)
    sock.send_multipart(wire.encode_reply([msg[0]], {"id": req.header["id"], "ok": True}))


@pytest.mark.parametrize("fail_on_disconnect", [True, False])
def test_requests_in_flight_fail_when_their_connection_ends(fail_on_disconnect: bool) -> None:
    reactor = Reactor()
    server, port = _router()
    client = RpcClient(zmq.Context.instance(), reactor, f"tcp://127.0.0.1:{port}", identity="t",
                       fail_on_disconnect=fail_on_disconnect)
    answers: list = []
    seen: list = []
    try:
        for n in range(2):
            client.request(P.PING, {"n": n}, callback=lambda h, _p, err: answers.append((h, err)),
                           timeout_ms=REQUEST_TIMEOUT_MS)
        _run_until(reactor, lambda: len(seen) == 2, also=lambda: _received(server, seen))
        server.close()  # the server dies with both requests unanswered
        if not fail_on_disconnect:
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                reactor.run_once(5)
            assert answers == [] and client.in_flight == 2  # until their deadlines
            return
        _run_until(reactor, lambda: len(answers) == 2)
        assert [h for h, _ in answers] == [None, None]
        assert all(isinstance(err, RequestTimeout) and err.retriable for _, err in answers)
        assert client.in_flight == 0
        # a request sent now waits for the server's next process and is answered by it
        server, _ = _router(port)
        seen.clear()
        client.request(P.PING, {"n": 2}, callback=lambda h, _p, err: answers.append((h, err)),
                       timeout_ms=REQUEST_TIMEOUT_MS)

        def serve() -> None:
            _received(server, seen)
            while seen:
                _answer(server, seen.pop())
        _run_until(reactor, lambda: len(answers) == 3, also=serve)
        assert answers[2][1] is None and answers[2][0]["ok"] is True
    finally:
        client.close()
        server.close()
