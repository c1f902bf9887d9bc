"""What one WebSocket client may cost the gateway: the real Flask app (webui.app) served by
werkzeug's threaded server on a loopback port, with a stub agent -- no cluster processes.

- /ws/produce messages and /ws/consume commits take tokens from the key's rate limit, as REST
  requests do (a WebSocket used to take one token when it opened, then produce without limit).
- Sockets that have not sent their key yet (the browser's first-message auth) hold a
  connection slot each: one address may hold only a quarter of the slots that way (a client
  that opened ``websockets_max`` sockets and sent nothing shut every other client out).
- What a client sends is read only as fast as its route takes it: a client sending faster is
  held back by TCP (simple_websocket's reader used to queue every message in memory, and
  /ws/events takes at most one a second).
- One key may hold at most ``gateway.websockets_per_key_max`` sockets (one key could hold
  every slot of the gateway).
"""

from __future__ import annotations

import json
import select
import socket
import struct
import threading
from typing import Any, Iterator

import pytest
import simple_websocket
from simple_websocket import ConnectionClosed
from werkzeug.serving import make_server

from fabric.apikeys import hash_key
from fabric.config import GatewayConfig, SecurityConfig
from nodes.local_cluster import wait_until
from tests.unit.fakes import KEYS, StubAgent
from webui import ws as wsmod
from webui import ws_consume as consumemod
from webui.app import create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway
from webui.events import EventHub
from webui.ws_guard import INBOX_MESSAGES_MAX

DEADLINE_S = 10.0
NO_REFILL_PER_S = 1e-6  # a bucket that does not refill while a test runs
# what a client may have sent that the gateway holds: its inbox, a message being read, the kernel's buffers
HELD_BYTES_MAX = 48 * 1024 * 1024


class ProduceAgent(StubAgent):
    """Every topic exists; every record lands at the next offset of partition 0."""

    def __init__(self) -> None:
        self.produced = 0

    def topic(self, name: str) -> None:
        return None

    def produce(self, topic: str, records: list, acks: Any, partition: int | None = None) -> list:
        self.produced += len(records)
        return [(0, self.produced - len(records) + i, None, None) for i in range(len(records))]


@pytest.fixture
def gateway() -> Iterator[Any]:
    servers = []

    def start(rate_per_s: float = 1000.0, burst: int = 2000, websockets_max: int = 24) -> tuple[str, ProduceAgent]:
        keys = KeyStore([(role, hash_key(k), [role]) for role, k in KEYS.items()])
        agent = ProduceAgent()
        gw = Gateway(agent=agent, hub=EventHub(), keys=keys, limiter=RateLimiter(rate_per_s, burst, 100),
                     settings=GatewayConfig(websockets_max=websockets_max),
                     security=SecurityConfig(rate_limit_per_s=rate_per_s, rate_limit_burst=burst), cluster_id="test")
        srv = make_server("127.0.0.1", 0, create_app(gw), threaded=True)
        threading.Thread(target=srv.serve_forever, name="test-gateway", daemon=True).start()
        servers.append(srv)
        return f"ws://127.0.0.1:{srv.server_port}", agent
    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[role]}"}


def raw_websocket(url: str, path: str, source: str = "127.0.0.1", headers: dict[str, str] | None = None) -> socket.socket:
    """A client socket past the WebSocket handshake that sends nothing by itself."""
    host, port = url.removeprefix("ws://").split(":")
    s = socket.create_connection((host, int(port)), timeout=DEADLINE_S, source_address=(source, 0))
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = s.recv(4096)
        assert chunk, "the gateway closed during the handshake"
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return s


def text_frame(payload: bytes) -> bytes:
    """One masked (client) text frame (mask key 0: the payload goes as is)."""
    n = len(payload)
    head = struct.pack("!BBH", 0x81, 0x80 | 126, n) if n < 65536 else struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


def test_ws_produce_messages_take_tokens_from_the_keys_rate_limit(gateway: Any) -> None:
    url, agent = gateway(rate_per_s=NO_REFILL_PER_S, burst=10)
    c = simple_websocket.Client.connect(url + "/ws/produce?topic=t", headers=bearer("produce"))
    try:
        for i in range(30):
            c.send(json.dumps({"id": i, "value": "x"}))
        answers = [json.loads(c.receive(timeout=DEADLINE_S)) for _ in range(30)]
    finally:
        c.close()
    produced = [a for a in answers if "offsets" in a]
    limited = [a for a in answers if a.get("error_code") == 42901]
    assert agent.produced <= 10, f"{agent.produced} records produced past a burst of 10 requests"
    assert len(produced) + len(limited) == 30 and len(produced) == agent.produced
    assert all(a["retry_after_s"] >= 1 and isinstance(a["id"], int) for a in limited)


def test_first_message_auth_goes_through_the_rate_limit_of_its_key(gateway: Any) -> None:
    url, agent = gateway(rate_per_s=NO_REFILL_PER_S, burst=5)
    c = simple_websocket.Client.connect(url + "/ws/produce?topic=t")
    try:
        c.send(json.dumps({"api_key": KEYS["produce"]}))
        assert json.loads(c.receive(timeout=DEADLINE_S))["authenticated"] is True
        for i in range(8):
            c.send(json.dumps({"id": i, "value": "x"}))
        answers = [json.loads(c.receive(timeout=DEADLINE_S)) for _ in range(8)]
    finally:
        c.close()
    assert agent.produced == 5 and sum(a.get("error_code") == 42901 for a in answers) == 3


def test_sockets_waiting_for_their_key_cannot_take_every_slot(gateway: Any) -> None:
    url, _ = gateway(websockets_max=4)
    silent = [raw_websocket(url, "/ws/events", source="127.0.0.2") for _ in range(4)]
    try:
        c = simple_websocket.Client.connect(url + "/ws/events")
        try:
            try:
                c.send(json.dumps({"api_key": KEYS["read"]}))
                first = json.loads(c.receive(timeout=DEADLINE_S))
            except ConnectionClosed as e:
                pytest.fail(f"another address's silent sockets shut this client out: closed {e.reason} {e.message}")
            assert first["authenticated"] is True
        finally:
            c.close()
    finally:
        for s in silent:
            s.close()


def first_message_auth(url: str, path: str, role: str) -> tuple[simple_websocket.Client, dict | ConnectionClosed]:
    """A browser-style socket that sends its key first: the socket and the gateway's answer
    (``{"authenticated": true, ...}``) or how it closed."""
    c = simple_websocket.Client.connect(url + path)
    try:
        c.send(json.dumps({"api_key": KEYS[role]}))
        return c, json.loads(c.receive(timeout=DEADLINE_S))
    except ConnectionClosed as e:
        return c, e


def close_quietly(c: simple_websocket.Client) -> None:
    try:
        c.close()
    except ConnectionClosed:  # the gateway closed it first
        pass


def test_one_key_cannot_take_every_websocket_slot(gateway: Any) -> None:
    url, _ = gateway()  # the defaults: 24 slots, 8 per key
    opened = [first_message_auth(url, "/ws/events", "read") for _ in range(GatewayConfig().websockets_max)]
    try:
        authenticated = [a for _, a in opened if isinstance(a, dict) and a.get("authenticated")]
        refused = [a for _, a in opened if isinstance(a, ConnectionClosed)]
        c, other = first_message_auth(url, "/ws/events", "admin")
        close_quietly(c)
        assert isinstance(other, dict) and other.get("authenticated"), \
            f"one key's sockets shut another key out: {other.reason} {other.message}"
        assert len(authenticated) == GatewayConfig().websockets_per_key_max
        assert len(refused) == len(opened) - len(authenticated)
        assert all(e.reason == wsmod.TRY_AGAIN_LATER and "'read'" in e.message for e in refused)
    finally:
        for c, _ in opened:
            close_quietly(c)


def test_a_client_that_sends_faster_than_its_route_reads_is_held_back(gateway: Any) -> None:
    url, _ = gateway()
    s = raw_websocket(url, "/ws/events", headers=bearer("read"))
    frame = text_frame(b"x" * 60_000)
    sent = 0
    pending = memoryview(b"")
    s.setblocking(False)
    try:
        while sent <= HELD_BYTES_MAX:
            if not pending:
                pending = memoryview(frame)
            _, writable, _ = select.select([], [s], [], 1.0)
            if not writable:
                break  # the gateway stopped reading: held back
            try:
                n = s.send(pending)
            except BlockingIOError:
                continue
            sent += n
            pending = pending[n:]
    finally:
        s.close()
    assert sent <= HELD_BYTES_MAX, f"the gateway read {sent} bytes of messages that /ws/events never takes"


def test_a_produce_client_that_sends_ahead_is_held_back_and_gets_every_answer(
        gateway: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that sends its produce messages without waiting for the answers is held back
    by TCP once 65 wait, as any route's (docs/gateway.md). /ws/produce closed it instead, 1008
    "more than 64 messages unanswered", at its next message once that many waited: the record
    under way was written and its answer never came (the close went out first), and the
    messages after it were dropped."""
    gates: list[wsmod.InboxGate] = []

    class WatchedGate(wsmod.InboxGate):
        def __init__(self, ws: Any) -> None:
            super().__init__(ws)
            gates.append(self)
    monkeypatch.setattr(wsmod, "InboxGate", WatchedGate)
    url, agent = gateway()
    release = threading.Event()
    produce = agent.produce

    def held_produce(*args: Any, **kwargs: Any) -> list:
        release.wait(DEADLINE_S)  # the first message's records wait while the others pile up
        return produce(*args, **kwargs)
    agent.produce = held_produce  # type: ignore[method-assign]
    count = 100
    c = simple_websocket.Client.connect(url + "/ws/produce?topic=t", headers=bearer("produce"))
    try:
        for i in range(count):
            c.send(json.dumps({"id": i, "value": "x"}))
        wait_until(lambda: gates and len(gates[0]._ws.input_buffer) > INBOX_MESSAGES_MAX, DEADLINE_S,
                   what="more than INBOX_MESSAGES_MAX messages waiting for the route")
        release.set()
        answers = []
        try:
            while len(answers) < count:
                answers.append(json.loads(c.receive(timeout=DEADLINE_S)))
        except ConnectionClosed as e:
            pytest.fail(f"closed {e.reason} {e.message!r} after {len(answers)} answers, {agent.produced} written")
    finally:
        close_quietly(c)
    assert [a["id"] for a in answers] == list(range(count)) and agent.produced == count
    assert [a["offsets"][0]["offset"] for a in answers] == list(range(count))


def test_ws_consume_commit_commands_take_tokens_too() -> None:
    class Socket:
        def __init__(self) -> None:
            self.inbox = [json.dumps({"commit": "all"})] * 3

        def receive(self, timeout: float | None = None) -> str | None:
            return self.inbox.pop(0) if self.inbox else None

    class Out:
        def __init__(self) -> None:
            self.sent: list[dict] = []

        def put(self, message: dict, mark: Any = None) -> None:
            self.sent.append(message)

    class Delivered:
        commits = 0
        named = True

        def commit(self, through: int | None = None) -> None:
            self.commits += 1

    tokens = [None, {"error_code": 42901, "message": "over", "retry_after_s": 1}, None]
    out, delivered = Out(), Delivered()
    consumemod.consume_commands(Socket(), out, None, delivered, lambda: tokens.pop(0))
    assert delivered.commits == 2
    assert out.sent == [{"committed": True}, {"committed": False, "error_code": 42901, "message": "over",
                                               "retry_after_s": 1}, {"committed": True}]
