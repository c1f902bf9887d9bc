"""A programmer error on a node's reactor thread stops the node; bad input does not.

A node's reactor (``contain_handler_errors=True``) logs an operating error (a ``LoomError``:
a refused request, a full disk) raised by a message handler, a per-pass hook or a timer, and
goes on serving. Anything else (an ``AssertionError``, a ``TypeError``) is a bug: it leaves the
loop, so the node process exits non-zero and the supervisor restarts it from disk
(tests/integration/test_node_crash.py checks the process). The request port answers a
``RemoteError`` / ``MalformedFrame`` with its code and never turns a bug into an "internal error"
reply.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import zmq

from fabric import protocol as P
from fabric import wire
from fabric.clock import ManualClock
from fabric.errors import FabricError, MalformedFrame, RemoteError
from fabric.reactor import Reactor
from fabric.rpc import RpcServer

_endpoints = itertools.count()


@pytest.fixture
def pipe() -> Iterator[tuple[zmq.Socket, zmq.Socket]]:
    ctx = zmq.Context.instance()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    addr = f"inproc://programmer-errors-{next(_endpoints)}"
    pull.bind(addr)
    push.connect(addr)
    yield pull, push
    pull.close(0)
    push.close(0)


def _drain_until(reactor: Reactor, done, passes_max: int = 50) -> None:  # noqa: ANN001
    for _ in range(passes_max):
        if done():
            return
        reactor.run_once(20)
    raise AssertionError("condition not reached")


@pytest.mark.parametrize("contain", [True, False])
def test_a_handler_bug_leaves_the_loop_of_any_reactor(pipe, contain: bool) -> None:  # noqa: ANN001
    pull, push = pipe
    reactor = Reactor(ManualClock(), contain_handler_errors=contain)

    def handler(frames: list[bytes]) -> None:
        raise TypeError("handler bug")
    reactor.add_socket(pull, handler)
    push.send(b"x")
    with pytest.raises(TypeError):
        for _ in range(50):
            reactor.run_once(20)


def test_a_node_reactor_logs_an_operating_error_of_a_handler_and_serves_on(pipe) -> None:  # noqa: ANN001
    pull, push = pipe
    reactor = Reactor(ManualClock(), contain_handler_errors=True)
    seen: list[bytes] = []

    def handler(frames: list[bytes]) -> None:
        seen.append(frames[0])
        if frames[0] == b"bad":
            raise FabricError("an operating error, e.g. a peer's bad message")
    reactor.add_socket(pull, handler)
    push.send(b"bad")
    push.send(b"after")
    _drain_until(reactor, lambda: len(seen) == 2)
    assert seen == [b"bad", b"after"]


def test_a_client_reactor_hands_a_handler_error_to_its_caller(pipe) -> None:  # noqa: ANN001
    pull, push = pipe
    reactor = Reactor(ManualClock())

    def handler(frames: list[bytes]) -> None:
        raise RemoteError(P.OFFSET_OUT_OF_RANGE, "for the application")
    reactor.add_socket(pull, handler)
    push.send(b"x")
    with pytest.raises(RemoteError):
        for _ in range(50):
            reactor.run_once(20)


@pytest.mark.parametrize("bug", [AssertionError("invariant"), TypeError("bad call"), KeyError("k")])
def test_a_timer_bug_leaves_the_loop(bug: Exception) -> None:
    clock = ManualClock()
    reactor = Reactor(clock, contain_handler_errors=True)

    def fire() -> None:
        raise bug
    reactor.call_later(5, fire)
    clock.advance(5)
    with pytest.raises(type(bug)):
        reactor.run_once(0)


def test_a_hook_bug_leaves_the_loop() -> None:
    reactor = Reactor(ManualClock(), contain_handler_errors=True)
    reactor.after_pass(lambda: [][1])
    with pytest.raises(IndexError):
        reactor.run_once(0)


def test_a_timer_operating_error_is_logged_and_the_timer_keeps_its_period(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    reactor = Reactor(clock, contain_handler_errors=True)
    runs: list[int] = []

    def tick() -> None:
        runs.append(clock.now_ms())
        raise FabricError("peer unreachable")
    reactor.call_every(10, tick)
    for _ in range(3):
        clock.advance(10)
        reactor.run_once(0)
    assert len(runs) == 3 and "peer unreachable" in caplog.text


# -- the request port --------------------------------------------------------------------------
@pytest.fixture
def served() -> Iterator[tuple[Reactor, RpcServer, zmq.Socket]]:
    ctx = zmq.Context.instance()
    reactor = Reactor(ManualClock(), contain_handler_errors=True)
    endpoint = f"inproc://programmer-errors-rpc-{next(_endpoints)}"
    server = RpcServer(ctx, reactor, endpoint)
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(endpoint)
    yield reactor, server, dealer
    dealer.close(0)
    server.close()


def _reply(reactor: Reactor, dealer: zmq.Socket) -> dict:
    for _ in range(50):
        reactor.run_once(20)
        if dealer.poll(0):
            return wire.decode_reply(dealer.recv_multipart())[0]
    raise AssertionError("no reply")


def test_a_handler_bug_is_not_answered_as_an_internal_error(served) -> None:  # noqa: ANN001
    reactor, server, dealer = served

    def buggy(req: wire.Request) -> dict:
        return {"n": len(None)}  # type: ignore[arg-type]
    server.route(P.PING, buggy)
    dealer.send_multipart(wire.encode_request(P.PING, {"id": 1}))
    with pytest.raises(TypeError):
        for _ in range(50):
            reactor.run_once(20)
    assert not dealer.poll(50), "a bug was answered as if it were the peer's fault"


@pytest.mark.parametrize("error, code", [
    (RemoteError(P.NOT_LEADER, "not me"), P.NOT_LEADER),
    (MalformedFrame(P.MALFORMED_REQUEST, "missing field 'x'"), P.MALFORMED_REQUEST),
])
def test_bad_input_gets_a_typed_error_reply_and_the_port_keeps_serving(served, error: Exception, code: int) -> None:  # noqa: ANN001
    reactor, server, dealer = served

    def refuse(req: wire.Request) -> dict:
        raise error
    server.route(P.STATS, refuse)
    server.route(P.PING, lambda req: {"pong": True})
    dealer.send_multipart(wire.encode_request(P.STATS, {"id": 1}))
    assert _reply(reactor, dealer)["error"] == code
    dealer.send_multipart([b"", P.VERSION, P.PING, b"\xc1"])  # not msgpack
    assert _reply(reactor, dealer)["error"] == P.MALFORMED_REQUEST
    dealer.send_multipart(wire.encode_request(P.PING, {"id": 2}))
    assert _reply(reactor, dealer) == {"id": 2, "pong": True}


def test_a_worker_threads_programmer_error_stops_the_node_at_its_next_pass(tmp_path) -> None:  # noqa: ANN001
    import threading

    from fabric.config import load_config
    from nodes.base import Node
    from tests.harness import make_config
    node = Node(load_config(make_config(tmp_path, 1), environ={}), "coordinator")
    try:
        node.reactor.run_once(0)
        worker = threading.Thread(target=node.fail_from_thread, args=(TypeError("bug in a worker"),))
        worker.start()
        worker.join()
        with pytest.raises(TypeError, match="bug in a worker"):
            node.reactor.run_once(0)
    finally:
        node.close()
