"""A request is handed on exactly once. If the code the request port hands a message to
raises an operating error (the node's reactor logs it and goes on; a bug stops the node), the bytes of that message are already
consumed, so the same request is not parsed and executed again when the connection's next
bytes arrive (a produce would be appended twice)."""

from __future__ import annotations

import logging

import zmq

from fabric import protocol as P
from fabric import wire
from fabric.errors import FabricError
from fabric.reactor import Reactor
from fabric.zmtp import ZmtpServer
from tests.harness import free_ports

PASSES = 50
POLL_MS = 2


def test_a_request_whose_handler_raised_is_not_delivered_again(caplog) -> None:  # noqa: ANN001
    reactor = Reactor(contain_handler_errors=True)
    port = free_ports(1)[0]
    delivered: list[int] = []

    def on_message(frames: list[bytes]) -> None:
        delivered.append(wire.unpack(frames[4])["id"])
        if len(delivered) == 1:
            raise FabricError("an operating error while handling it")
    server = ZmtpServer(zmq.Context.instance(), reactor, f"tcp://127.0.0.1:{port}", on_message)
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    try:
        with caplog.at_level(logging.CRITICAL):
            for rid in (1, 2):
                dealer.send_multipart(wire.encode_request(P.PING, {"id": rid}))
                for _ in range(PASSES):
                    reactor.run_once(POLL_MS)
        assert delivered == [1, 2]
    finally:
        dealer.close()
        server.close()
