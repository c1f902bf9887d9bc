"""What a WebSocket client reads from the gateway is whole frames: a large message that waits
for a slow client is never cut by another frame. simple_websocket's reader thread sends pings
(``ping_interval``), pongs and close answers on the socket itself while the route's sender
thread (webui/ws_outbox.py) may be blocked in the middle of a large message; a kernel that
frees send buffer space a little at a time let the ping's two bytes in between, inside the
message's payload. The client then read a text frame that was not UTF-8 (or a frame header
out of the payload) and dropped the stream -- after the gateway had counted the message as
sent, so a ``{"commit": "all"}`` had the group skip its records. Served by werkzeug on a
loopback port with a stub agent; the client is a raw socket with a small receive buffer that
reads slowly, as a slow consumer's does."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from typing import Any, Iterator

import pytest
from werkzeug.serving import make_server

from fabric.apikeys import hash_key
from fabric.config import GatewayConfig, SecurityConfig
from tests.unit.fakes import KEYS, StubAgent
from webui.app import create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway
from webui.events import EventHub

DEADLINE_S = 20.0
RECORDS = 10_000             # the answer: ~70 bytes per record, ~700 KB in one text message
# over twice PAUSE_S: the pong of a ping sent after an answer comes after the next pause and
# the next answer's read (~0.35 s here; the gateway closes a stream whose pong is a whole interval late)
PING_INTERVAL_S = 1.5
PAUSE_S = 0.25  # the client reads nothing: the answer waits in the gateway's send, a ping may come due
ROUNDS = 16    # pings come due every few rounds, mostly while an answer waits
CLIENT_RCVBUF_BYTES = 4096
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


class OffsetsAgent(StubAgent):
    def topic(self, name: str) -> None:
        return None

    def produce(self, topic: str, records: list, acks: Any, partition: int | None = None) -> list:
        return [(0, i, None, False) for i in range(len(records))]


@pytest.fixture
def served() -> Iterator[str]:
    keys = KeyStore([(role, hash_key(k), [role]) for role, k in KEYS.items()])
    gw = Gateway(agent=OffsetsAgent(), hub=EventHub(), keys=keys, limiter=RateLimiter(1000.0, 1000, 100),
                 settings=GatewayConfig(), security=SecurityConfig(), cluster_id="test")
    app = create_app(gw)
    app.config["SOCK_SERVER_OPTIONS"] = {**app.config["SOCK_SERVER_OPTIONS"], "ping_interval": PING_INTERVAL_S}
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=srv.serve_forever, name="test-gateway", daemon=True).start()
    try:
        yield f"127.0.0.1:{srv.server_port}"
    finally:
        srv.shutdown()
        srv.server_close()


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (mask key 0: the payload goes as is)."""
    n = len(payload)
    head = struct.pack("!BB", 0x80 | opcode, 0x80 | n) if n < 126 else (
        struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n) if n < 65536 else struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n))
    return head + b"\0\0\0\0" + payload


class SlowReader:
    """Reads server frames a few KiB at a time, pausing between reads; answers pings."""

    def __init__(self, s: socket.socket) -> None:
        self.s, self.buf = s, b""

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.s.recv(CLIENT_RCVBUF_BYTES)
            assert chunk, "the gateway closed the connection"
            self.buf += chunk
            time.sleep(0.0005)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self) -> tuple[int, bool, bytes]:
        b0, b1 = self._take(2)
        assert b0 & 0x70 == 0, f"a frame with reserved bits {b0:#x}: the stream is out of step"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._take(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._take(8))
        assert not b1 & 0x80, "a masked frame from the server"
        return b0 & 0x0F, bool(b0 & 0x80), self._take(n)

    def message(self) -> bytes:
        """The next data message (its fragments joined), answering pings on the way."""
        data, started = b"", False
        while True:
            opcode, fin, payload = self.frame()
            if opcode == OP_PING:
                self.s.sendall(client_frame(OP_PONG, payload))
                continue
            assert opcode != OP_CLOSE, f"closed: {payload!r}"
            assert opcode in ((0,) if started else (OP_TEXT,)), f"opcode {opcode} in the middle of a message"
            data, started = data + payload, True
            if fin:
                return data


def test_a_large_message_to_a_slow_reader_is_not_cut_by_pings(served: str) -> None:
    host, port = served.split(":")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF_BYTES)  # fixed: no autotuning
    s.settimeout(DEADLINE_S)
    s.connect((host, int(port)))
    try:
        s.sendall((f"GET /ws/produce?topic=t&format=binary HTTP/1.1\r\nHost: {served}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {KEYS['produce']}\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        reader = SlowReader(s)
        for round_ in range(ROUNDS):
            s.sendall(client_frame(OP_TEXT, json.dumps({"id": round_, "records": [{"value": "eA=="}] * RECORDS}).encode()))
            time.sleep(PAUSE_S)
            text = reader.message()
            try:
                answer = json.loads(text.decode("utf-8"))
            except ValueError as e:
                bad = next((i for i, c in enumerate(text) if c > 0x7F), -1)
                pytest.fail(f"round {round_}: the message's payload is not its JSON ({e}); at {bad}: {text[bad - 20:bad + 20]!r}")
            assert answer["id"] == round_ and len(answer["offsets"]) == RECORDS
    finally:
        s.close()
