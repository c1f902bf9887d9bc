"""Real tcp:// endpoints on 127.0.0.1 for the unit tests of connection failures: a libzmq ROUTER
on a port picked free at run time, and a loop that answers its requests until told to stop."""

from __future__ import annotations

import threading
from typing import Callable

import zmq

from fabric import wire
from nodes.local_cluster import free_ports


def tcp_router() -> tuple[zmq.Socket, str]:
    """A ROUTER bound on a free port, and its endpoint; the caller closes it."""
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    endpoint = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    sock.bind(endpoint)
    return sock, endpoint


def serve_until(sock: zmq.Socket, stop: threading.Event, answer: Callable[[wire.Request], dict]) -> None:
    """Answer every request on ``sock`` with ``answer(request)`` until ``stop`` is set (the
    socket's own thread while it runs)."""
    while not stop.is_set():
        if sock.poll(50):
            req = wire.decode_request(sock.recv_multipart())
            sock.send_multipart(wire.encode_reply(req.identity, {"id": req.id, **answer(req)}))
