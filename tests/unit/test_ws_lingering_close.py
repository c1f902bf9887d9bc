"""webui/ws_guard.py's lingering close on real sockets: after the gateway's close frame the
socket stops writing (FIN), drops what its client still sends, and closes once the client has
closed its side -- so the client never meets a reset that would throw away the close frame it
has not read yet (tests/integration/test_gateway_ws.py sees that through a real gateway). A
client that neither answers nor closes is cut within two lingers of the route's end."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from wsproto.connection import ConnectionState

from webui import ws_guard
from webui.ws_guard import InboxGate

LINGER_S = 0.3


@pytest.fixture(autouse=True)
def short_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ws_guard, "LINGER_S", LINGER_S)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


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


def test_the_clients_bytes_are_drained_until_it_closes_its_side(pair) -> None:
    server, client = pair
    ws, gate = closing_ws(server)
    client.sendall(b"x" * 200_000)  # sent on after the close frame: would be reset by a plain close
    client.settimeout(5)
    assert client.recv(10) == b"", "the gateway's side ended writing (FIN), and no reset"
    client.shutdown(socket.SHUT_WR)  # the client closes its side
    started = time.monotonic()
    gate.route_ended()
    assert not ws.thread.is_alive() and time.monotonic() - started < LINGER_S, "closed at the client's end"
    assert server.fileno() == -1


def test_a_client_that_neither_answers_nor_closes_is_cut(pair) -> None:
    server, client = pair
    ws, gate = closing_ws(server)
    started = time.monotonic()
    gate.route_ended()
    took = time.monotonic() - started
    assert not ws.thread.is_alive() and server.fileno() == -1
    assert LINGER_S * 0.9 <= took < 3 * LINGER_S + 1, took


def test_a_route_that_did_not_close_leaves_the_socket_to_flask_sock(pair) -> None:
    server, client = pair
    ws, gate = closing_ws(server)
    ws.ws.state = ConnectionState.OPEN
    gate.route_ended()
    client.sendall(b"still open")
    assert ws.thread.is_alive() and server.fileno() != -1
    client.close()
    ws.thread.join(5)
