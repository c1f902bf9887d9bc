"""webui/ws_guard.py's lingering close on real sockets: after the gateway's close frame the
socket stops writing (FIN), drops what its client still sends, and shuts down once the client
has closed its side (the descriptor is gunicorn's to close) -- so the client never meets a reset that would throw away the close frame it
has not read yet (tests/integration/test_gateway_ws.py sees that through a real gateway). A
client that neither answers nor closes is cut within two lingers of the route's end."""

from __future__ import annotations

import inspect
import socket
import struct
import threading
import time
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any, Callable

import pytest
import simple_websocket
from wsproto.connection import ConnectionState

from webui import ws_guard
from webui.ws_guard import InboxGate
from nodes.local_cluster import wait_until

LINGER_S = 0.3


@pytest.fixture(autouse=True)
def short_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ws_guard, "LINGER_S", LINGER_S)


def closing_ws(server: socket.socket) -> tuple[SimpleNamespace, InboxGate]:
    """A WebSocket whose route has sent its close frame, with simple_websocket's reader loop:
    read while connected (so once more, here), then close the socket (``ws.sock``: the gate)."""
    ws = SimpleNamespace(sock=server, connected=False, input_buffer=[],
                         ws=SimpleNamespace(state=ConnectionState.LOCAL_CLOSING))
    gate = InboxGate(ws)
    ws.sock = gate

    def reader() -> None:
        try:
            while ws.sock.recv(4096) and ws.connected:
                pass
        except OSError:
            pass
        ws.sock.close()
    ws.thread = threading.Thread(target=reader, daemon=True)
    ws.thread.start()
    return ws, gate


def test_the_clients_bytes_are_drained_until_it_closes_its_side(socket_pair) -> None:
    server, client = socket_pair
    ws, gate = closing_ws(server)
    client.sendall(b"x" * 200_000)  # sent on after the close frame: would be reset by a plain close
    client.settimeout(5)
    assert client.recv(10) == b"", "the gateway's side ended writing (FIN), and no reset"
    client.shutdown(socket.SHUT_WR)  # the client closes its side
    started = time.monotonic()
    gate.route_ended()
    assert not ws.thread.is_alive() and time.monotonic() - started < LINGER_S, "shut down at the client's end"
    assert server.fileno() != -1, "the descriptor is the server's to close"


def test_a_client_that_neither_answers_nor_closes_is_cut(socket_pair) -> None:
    server, client = socket_pair
    ws, gate = closing_ws(server)
    started = time.monotonic()
    gate.route_ended()
    took = time.monotonic() - started
    assert not ws.thread.is_alive()
    assert LINGER_S * 0.9 <= took < 3 * LINGER_S + 1, took
    client.settimeout(5)
    assert client.recv(10) == b"", "the gateway's side is shut"


def test_a_route_that_did_not_close_leaves_the_socket_to_flask_sock(socket_pair) -> None:
    server, client = socket_pair
    ws, gate = closing_ws(server)
    ws.ws.state = ConnectionState.OPEN
    gate.route_ended()
    client.sendall(b"still open")
    assert ws.thread.is_alive() and server.fileno() != -1
    client.close()
    ws.thread.join(5)


def test_gunicorn_gets_the_socket_back_open_and_counts_it_once(socket_pair) -> None:
    """The socket is gunicorn's: once the route is done it closes it (27 lingering too) and
    counts the connection gone. A socket the gate had closed already made that close raise
    (a closed socket's ``setblocking``), and gunicorn counted the connection gone twice, so
    its count of open connections drifted below zero, one per WebSocket: its
    ``worker_connections`` bound and its graceful stop (it waits while the count is above 0)
    no longer saw the sockets still open."""
    gthread = pytest.importorskip("gunicorn.workers.gthread")
    from gunicorn.config import Config
    if list(inspect.signature(gthread.ThreadWorker.finish_request).parameters) != ["self", "conn", "fs"]:
        pytest.skip("gunicorn before 23 closes its connections elsewhere")
    server, client = socket_pair
    conn = gthread.TConn(Config(), server, ("127.0.0.1", 1), ("127.0.0.1", 2))
    server.setblocking(True)  # as gunicorn's handle() does before the request
    ws, gate = closing_ws(server)
    gate.route_ended()  # a client that neither answers nor closes: cut
    assert not ws.thread.is_alive()
    client.settimeout(5)
    assert client.recv(10) == b"", "the gateway's side is shut"
    worker = SimpleNamespace(nr_conns=1, alive=True)
    done: Future = Future()
    done.set_result(False)  # the request's connection is not kept alive
    started = time.monotonic()
    gthread.ThreadWorker.finish_request(worker, conn, done)
    assert worker.nr_conns == 0
    assert server.fileno() == -1 and time.monotonic() - started < LINGER_S, "closed by gunicorn, at once"


def client_frame(payload: bytes) -> bytes:
    """A client's text frame (masked, with a zero mask: the payload as is)."""
    head = bytes([0x81, 0x80 | len(payload)]) if len(payload) < 126 else b"\x81\xfe" + struct.pack("!H", len(payload))
    return head + b"\0\0\0\0" + payload


def test_a_client_sending_on_after_the_close_frame_leaves_no_reader_behind(socket_pair) -> None:
    """simple_websocket's reader (the real one) sets ``connected`` back to True at each message
    it reads after the route's close frame; the messages piled up that no route would take, and
    the gate held the reader back until one did: it slept in that wait for ever."""
    server, client = socket_pair
    environ = {"gunicorn.socket": server, "HTTP_HOST": "gw", "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade",
               "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==", "HTTP_SEC_WEBSOCKET_VERSION": "13"}
    ws = simple_websocket.Server(environ, ping_interval=25)
    ws.sock = gate = InboxGate(ws)
    client.settimeout(10)
    sender = threading.Thread(target=lambda: suppress_os_error(client.sendall, client_frame(b"x" * 2000) * 200),
                              daemon=True)
    sender.start()
    try:
        assert ws.receive(timeout=5) is not None
        ws.close(1008, "refused")
        route_done = threading.Thread(target=gate.route_ended, daemon=True)
        route_done.start()
        sender.join(10)
        client.shutdown(socket.SHUT_WR)  # the client has read the close frame and closes its side
        wait_until(lambda: not ws.thread.is_alive(), 3 * LINGER_S + 1, what="the reader thread's end")
        route_done.join(5)
    finally:
        ws.connected = False  # releases a reader held in the gate's wait


def suppress_os_error(f: Callable[..., Any], *args: Any) -> None:
    try:
        f(*args)
    except OSError:
        pass


def test_closing_a_socket_the_server_closes_meanwhile_raises_nothing() -> None:
    """The server (gunicorn) may close the descriptor under the reader's close, between its
    shutdown and its wait for the client's end: registering fd -1 with a poller raised
    ValueError, which ``except OSError`` let through, and the reader thread died with it."""
    shut: list[int] = []
    closed_meanwhile = SimpleNamespace(shutdown=shut.append, fileno=lambda: -1)
    gate = InboxGate(SimpleNamespace(sock=closed_meanwhile, connected=False, input_buffer=[]))
    gate.close()
    assert shut == [socket.SHUT_WR, socket.SHUT_RDWR]
