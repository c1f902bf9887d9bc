"""webui/read_deadline.py on real sockets: a request whose headers or body stop arriving is
cut at its deadline (the reading side shut, so that a thread blocked in ``recv`` gets
end-of-file at once), a body cut short is answered 408 (40802), and a request without a body,
a body read whole, or a request its thread is done with, is never cut. The gateway with real
clients: tests/integration/test_gateway_slow_clients.py."""

from __future__ import annotations

import io
import os
import socket
import threading
import time

import pytest
from gunicorn.http.errors import NoMoreData

from nodes.local_cluster import wait_until
from webui.errors import ApiError
from webui.read_deadline import BODY, BODY_MIN_BYTES_PER_S, HEADERS, ReadWatch

DEADLINE_S = 0.3


def cut_count(watch: ReadWatch) -> dict[str, float]:
    return {labels[0]: value for _, labels, value in watch.samples()}


def recv_in_thread(sock: socket.socket) -> tuple[threading.Thread, list]:
    got: list = []
    t = threading.Thread(target=lambda: got.append(sock.recv(100)), daemon=True)
    t.start()
    return t, got


def test_a_request_whose_headers_never_come_is_cut_and_its_blocked_read_ends(socket_pair) -> None:
    server, client = socket_pair
    watch = ReadWatch(DEADLINE_S)
    started = time.monotonic()
    key = watch.watch(server)
    t, got = recv_in_thread(server)
    t.join(5)
    assert not t.is_alive() and got == [b""], "the blocked recv got end-of-file"
    assert time.monotonic() - started >= DEADLINE_S * 0.9
    assert cut_count(watch) == {HEADERS: 1.0, BODY: 0.0}
    watch.unwatch(key)


def watcher_passed(watch: ReadWatch) -> None:
    """Return once the watcher has run past the deadline of every request watched so far: a
    request watched now, with a later deadline, has been cut."""
    before = cut_count(watch)[HEADERS]
    server, client = socket.socketpair()
    try:
        key = watch.watch(server)
        wait_until(lambda: cut_count(watch)[HEADERS] == before + 1, 5, what="a later request cut")
        watch.unwatch(key)
    finally:
        server.close()
        client.close()


def test_a_request_its_thread_is_done_with_is_not_cut(socket_pair) -> None:
    server, client = socket_pair
    watch = ReadWatch(DEADLINE_S)
    watch.unwatch(watch.watch(server))
    watcher_passed(watch)
    assert cut_count(watch)[HEADERS] == 1, "only the later request"
    client.sendall(b"still open")
    assert server.recv(100) == b"still open", "the first request's socket was left alone"


def app_reading(body_reads: list) -> object:
    """A WSGI app that reads its body whole (as Flask's get_data and the fast path do)."""
    def app(environ: dict, start_response: object) -> list[bytes]:
        body_reads.append(environ["wsgi.input"].read())
        return [b"ok"]
    return app


def environ_of(sock: socket.socket, body: io.BytesIO | None, length: int) -> dict:
    env = {"gunicorn.socket": sock, "REQUEST_METHOD": "POST" if length else "GET",
           "CONTENT_LENGTH": str(length) if length else ""}
    if body is not None:
        env["wsgi.input"] = body
    return env


def test_a_request_without_a_body_is_let_go_when_the_app_gets_it(socket_pair) -> None:
    """A GET, a WebSocket upgrade, a long poll: the route's own wait is not the client's."""
    server, client = socket_pair
    watch = ReadWatch(DEADLINE_S)
    key = watch.watch(server)
    seen = []
    watch.wrap(lambda env, sr: seen.append(env) or [b""])(environ_of(server, None, 0), None)
    assert seen
    watcher_passed(watch)  # the route waits past the deadline
    client.sendall(b"x")
    assert server.recv(1) == b"x" and cut_count(watch) == {HEADERS: 1.0, BODY: 0.0}, "only the later request"
    watch.unwatch(key)


def test_a_body_read_whole_ends_the_watch(socket_pair) -> None:
    server, client = socket_pair
    watch = ReadWatch(DEADLINE_S)
    key = watch.watch(server)
    reads: list = []
    watch.wrap(app_reading(reads))(environ_of(server, io.BytesIO(b"0123456789"), 10), None)
    assert reads == [b"0123456789"]
    watcher_passed(watch)
    assert cut_count(watch) == {HEADERS: 1.0, BODY: 0.0}, "only the later request"
    watch.unwatch(key)


class StalledBody:
    """``wsgi.input`` of a client that sent ``sent`` and then stopped: a read blocks on the
    socket until the deadline shuts it, then returns what came."""

    def __init__(self, sock: socket.socket, sent: bytes) -> None:
        self.sock, self.sent = sock, sent

    def read(self, size: int = -1) -> bytes:
        data = self.sent
        while chunk := self.sock.recv(100):
            data += chunk
        return data


def test_a_body_that_stops_coming_is_answered_408_40802(socket_pair) -> None:
    server, client = socket_pair
    watch = ReadWatch(DEADLINE_S)
    key = watch.watch(server)
    with pytest.raises(ApiError) as e:
        watch.wrap(app_reading([]))(environ_of(server, StalledBody(server, b"{\"rec"), 1000), None)
    assert e.value.error_code == 40802 and e.value.status == 408
    assert cut_count(watch) == {HEADERS: 0.0, BODY: 1.0}
    watch.unwatch(key)


def test_each_byte_of_the_body_buys_time(socket_pair) -> None:
    """The deadline moves on by the bytes a read got: a large body needs only a steady rate."""
    server, client = socket_pair
    watch = ReadWatch(DEADLINE_S)
    key = watch.watch(server)
    class Trickle:
        def __init__(self) -> None:
            self.n = 0

        def read(self, size: int = -1) -> bytes:
            # the scenario: the first piece at once, each later one 1.5 deadlines after the one
            # before -- later than the deadline it would have without the 1 s each piece bought
            # (wide margins both ways: a loaded machine's stall of a few 100 ms changes nothing)
            if self.n:
                time.sleep(DEADLINE_S * 1.5)
            self.n += 1
            return b"x" * BODY_MIN_BYTES_PER_S

    body = Trickle()
    app = watch.wrap(lambda env, sr: [env["wsgi.input"].read(1) for _ in range(4)])
    app(environ_of(server, body, 4 * BODY_MIN_BYTES_PER_S), None)  # type: ignore[arg-type]
    assert body.n == 4 and cut_count(watch) == {HEADERS: 0.0, BODY: 0.0}, "4.5 deadlines long, never cut"
    client.sendall(b"x")
    assert server.recv(1) == b"x"
    watch.unwatch(key)


def test_a_socket_not_watched_is_passed_through(socket_pair) -> None:
    server, client = socket_pair
    watch = ReadWatch(DEADLINE_S)
    reads: list = []
    watch.wrap(app_reading(reads))(environ_of(server, io.BytesIO(b"abc"), 3), None)
    assert reads == [b"abc"]
    closed = socket.socket()
    closed.close()
    assert watch.watch(closed) is None
    watch.unwatch(None)


def test_a_request_done_after_its_socket_was_closed_leaves_the_next_owner_of_its_fd_watched() -> None:
    """A WebSocket's socket is closed by simple_websocket's reader thread when its client
    leaves, while its route (and so gthread's ``handle``) has not returned yet: the file
    descriptor is free, and a connection accepted meanwhile can get it. That connection's
    request is watched under the same descriptor; the WebSocket's ``unwatch``, coming after,
    must not end the new request's watch: its headers that stop coming are still cut."""
    old_server, old_client = socket.socketpair()
    watch = ReadWatch(DEADLINE_S)
    old_key = watch.watch(old_server)
    fd = old_server.fileno()
    old_server.close()  # the reader thread closes it; the route has not returned
    a, new_client = socket.socketpair()
    try:
        if a.fileno() != fd:  # the lowest free descriptor is usually the one just freed; make it so
            os.dup2(a.fileno(), fd)
            a.close()
            a = socket.socket(fileno=fd)
        new_key = watch.watch(a)
        watch.unwatch(old_key)  # the WebSocket's handle returns
        t, got = recv_in_thread(a)  # the new request's headers stop coming
        t.join(DEADLINE_S * 10)
        assert not t.is_alive() and got == [b""], "the new request's blocked read was cut at its deadline"
        watch.unwatch(new_key)
    finally:
        new_client.close()  # first: a read still blocked (the old code's) gets end-of-file
        a.close()
        old_client.close()


class StalledChunkedBody(StalledBody):
    """gunicorn's reader of a chunked body: end-of-file inside a chunk raises (NoMoreData)."""

    def read(self, size: int = -1) -> bytes:
        super().read(size)
        raise NoMoreData(b"")


def chunked_environ(server: socket.socket, sent: bytes) -> dict:
    env = environ_of(server, StalledChunkedBody(server, sent), 0)  # type: ignore[arg-type]
    env["HTTP_TRANSFER_ENCODING"] = "chunked"
    return env


def test_a_chunked_body_that_stops_coming_is_answered_408_not_a_bug(socket_pair) -> None:
    server, client = socket_pair
    watch = ReadWatch(DEADLINE_S)
    key = watch.watch(server)
    env = chunked_environ(server, b"5\r\n{\"rec\r\n")
    with pytest.raises(ApiError) as e:
        watch.wrap(app_reading([]))(env, None)
    assert e.value.error_code == 40802 and isinstance(e.value.__cause__, NoMoreData)
    watch.unwatch(key)


def test_a_chunked_body_whose_client_left_before_the_deadline_is_not_called_late(socket_pair) -> None:
    server, client = socket_pair
    watch = ReadWatch(DEADLINE_S)
    key = watch.watch(server)
    env = chunked_environ(server, b"")
    client.close()  # the client leaves: its read ends before any deadline
    with pytest.raises(ApiError) as e:
        watch.wrap(app_reading([]))(env, None)
    assert e.value.error_code == 40001, "the client's doing (400), not a bug's 500"
    assert cut_count(watch) == {HEADERS: 0.0, BODY: 0.0}
    watch.unwatch(key)


def test_time_the_app_takes_before_reading_the_body_is_not_the_clients(socket_pair) -> None:
    """The deadline runs while the app waits on the client's bytes, not while it does something
    else first (a fault hold, a route that never reads the body it was sent): a body that has all
    arrived is read whole however late the app reads it, and nothing is cut."""
    server, client = socket_pair
    watch = ReadWatch(DEADLINE_S)
    key = watch.watch(server)
    body = bytes(3 * 16 * 1024)  # more than one piece
    reads: list = []

    def late_app(environ: dict, start_response: object) -> list[bytes]:
        watcher_passed(watch)  # the app is busy past the deadline
        return app_reading(reads)(environ, start_response)  # type: ignore[operator]

    watch.wrap(late_app)(environ_of(server, io.BytesIO(body), len(body)), None)
    assert reads == [body]
    assert cut_count(watch) == {HEADERS: 1.0, BODY: 0.0}, "only the later request"
    client.sendall(b"x")
    assert server.recv(1) == b"x", "its socket was left alone"
    watch.unwatch(key)
