"""A request is handed on exactly once. If the code the request port hands a message to
raises an operating error (the node's reactor logs it and goes on; a bug stops the node), the bytes of that message are already
consumed, so the same request is not parsed and executed again when the connection's next
bytes arrive (a produce would be appended twice); the requests that arrived after it are handed
on at a later pass, whether or not the peer sends anything more."""

from __future__ import annotations

import logging
import socket

import zmq

from fabric import protocol as P
from fabric import wire
from fabric.errors import FabricError
from fabric.reactor import Reactor
from fabric.zmtp import ZmtpServer
from fabric.zmtp_codec import GREETING, command, encode_frames, metadata_property
from tests.harness import free_ports

PASSES = 50
POLL_MS = 2


def _server(raising_id: int) -> tuple[Reactor, ZmtpServer, int, list[int]]:
    """A request port whose handler records each request's id and raises (an operating error,
    contained by the reactor) for the request ``raising_id``: (reactor, server, port, ids)."""
    reactor = Reactor(contain_handler_errors=True)
    port = free_ports(1)[0]
    delivered: list[int] = []

    def on_message(frames: list[bytes]) -> None:
        delivered.append(wire.unpack(frames[4])["id"])
        if delivered[-1] == raising_id:
            raise FabricError("an operating error while handling it")
    return reactor, ZmtpServer(zmq.Context.instance(), reactor, f"tcp://127.0.0.1:{port}", on_message), port, delivered


def test_a_request_whose_handler_raised_is_not_delivered_again(caplog) -> None:  # noqa: ANN001
    reactor, server, port, delivered = _server(raising_id=1)
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


def test_the_requests_after_one_whose_handler_raised_are_handed_on_with_nothing_more_sent(caplog) -> None:  # noqa: ANN001
    # the rest of the chunk waits in the connection's buffer: a peer that sent its requests at
    # once and waits for the answers must get them without sending anything more
    reactor, server, port, delivered = _server(raising_id=2)
    peer = socket.create_connection(("127.0.0.1", port))
    requests = b"".join(encode_frames(wire.encode_request(P.PING, {"id": rid}), 1 << 16)[0][0] for rid in (1, 2, 3))
    try:
        peer.sendall(GREETING + command(b"\x05READY" + metadata_property(b"Socket-Type", b"DEALER")))
        for _ in range(PASSES):  # the handshake
            reactor.run_once(POLL_MS)
        with caplog.at_level(logging.CRITICAL):
            peer.sendall(requests)  # three requests in one chunk, then nothing
            for _ in range(PASSES):
                reactor.run_once(POLL_MS)
        assert delivered == [1, 2, 3]
    finally:
        peer.close()
        server.close()
