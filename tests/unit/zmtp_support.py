"""What the ZmtpDealer tests (``test_zmtp_client*.py``) share: a dealer on a reactor of its own
and a raw TCP server that accepts it and writes whatever a test wants, both on loopback. The
fixtures that close them at the end (``dealer_client``, ``raw_server``) are in ``conftest.py``.
Every wait has a deadline (``DEADLINE_S``)."""

from __future__ import annotations

import socket
import time
from collections import Counter
from typing import Callable

from fabric.reactor import Reactor
from fabric.zmtp import READY
from fabric.zmtp_codec import GREETING
from fabric.zmtp_client import ZmtpDealer

DEADLINE_S = 10.0
POLL_MS = 5


class ReactorLoop:
    """A test's reactor (``self.reactor``) run until a condition holds, or for a while."""

    reactor: Reactor

    def run_until(self, condition: Callable[[], object], publish: Callable[[], object] | None = None) -> None:
        """Run the reactor until ``condition()``, calling ``publish()`` each pass (a PUB drops what
        it sends before the subscription reaches it: ZeroMQ's slow joiner)."""
        deadline = time.monotonic() + DEADLINE_S
        while not condition():
            assert time.monotonic() < deadline, "condition not reached"
            if publish is not None:
                publish()
            self.reactor.run_once(POLL_MS)

    def run_for(self, seconds: float) -> None:
        """For the checks that something does NOT arrive: run the reactor this long."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.reactor.run_once(POLL_MS)


class DealerClient:
    """A ZmtpDealer to ``127.0.0.1:port`` on its own reactor, noting the messages it receives
    (``got``) and its counters. ``contain_handler_errors``: a node's reactor, not a client's."""

    def __init__(self, port: int, identity: bytes | None = b"dealer-1", *,
                 contain_handler_errors: bool = False) -> None:
        self.reactor = Reactor(contain_handler_errors=contain_handler_errors)
        self.got: list[list[bytes]] = []
        self.counters: Counter[str] = Counter()
        self.dealer = ZmtpDealer(self.reactor, f"tcp://127.0.0.1:{port}", self.got.append, identity=identity,
                                 counters=self.counters)

    def run_until(self, condition: Callable[[], object], also: Callable[[], None] | None = None) -> None:
        """Run the reactor (and ``also`` after each pass) until ``condition()``."""
        deadline = time.monotonic() + DEADLINE_S
        while not condition():
            assert time.monotonic() < deadline, "condition not reached"
            self.reactor.run_once(POLL_MS)
            if also is not None:
                also()


MakeClient = Callable[..., DealerClient]  # the ``dealer_client`` fixture: arguments as DealerClient's


class RawServer:
    """A listening socket that accepts one dealer and lets a test write whatever it wants."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.listener.settimeout(DEADLINE_S)
        self.conn: socket.socket | None = None

    def accept(self, client: DealerClient) -> socket.socket:
        self.listener.setblocking(False)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                self.conn, _ = self.listener.accept()
                break
            except BlockingIOError:
                assert time.monotonic() < deadline
                client.reactor.run_once(POLL_MS)
        self.conn.settimeout(DEADLINE_S)
        return self.conn

    def handshake(self, client: DealerClient, ready: bytes = READY) -> bytes:
        """Greeting and READY both ways; returns what the dealer sent."""
        conn = self.accept(client)
        conn.sendall(GREETING + ready)
        got = b""
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < 66 or len(got) < 66 + got[65]:
            assert time.monotonic() < deadline
            client.reactor.run_once(POLL_MS)
            try:
                conn.setblocking(False)
                got += conn.recv(4096)
            except BlockingIOError:
                pass
        return got

    def connect(self, client: DealerClient) -> None:
        """The handshake, then the dealer run until it counts itself connected."""
        self.handshake(client)
        client.run_until(lambda: client.dealer.connected)

    def read_until(self, client: DealerClient, condition: Callable[[bytes], bool]) -> bytes:
        """Run the dealer's reactor and read what it sends until ``condition(bytes so far)``."""
        conn = self.conn
        assert conn is not None
        conn.setblocking(False)
        got = bytearray()

        def read() -> None:
            try:
                got.extend(conn.recv(4096))
            except BlockingIOError:
                pass
        client.run_until(lambda: condition(bytes(got)), also=read)
        return bytes(got)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()
