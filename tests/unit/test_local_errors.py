"""A condition the client finds itself is not a node's answer.

``RequestTimeout`` (no reply in time, or the caller gave up because the peer is down) and
``RequestQueueFullError`` (a request that was never sent) are ``ClientError``s, not
``RemoteError``s: a ``RemoteError`` always means a node answered. Both keep their protocol
code (``request_timed_out``, ``buffer_full``: retriable), and every caller that handled a
timeout still does (they catch ``CodedError``, the base of both kinds). Before, both were
RemoteErrors, so "the broker refused" and "nobody answered" could not be told apart by type."""

from __future__ import annotations

import pickle

import pytest
import zmq

from fabric import protocol as P
from fabric.blocking_client import BlockingClient
from fabric.clock import ManualClock
from fabric.client.admin import Admin
from fabric.config import NodeConfig
from fabric.errors import (ClientError, CodedError, FabricError, GaveUp, RemoteError, RequestQueueFullError,
                           RequestTimeout)
from fabric.reactor import Reactor
from fabric.rpc import RpcClient
from nodes import running_cluster
from nodes.local_cluster import free_ports


@pytest.mark.parametrize("err, code", [(RequestTimeout("no reply"), P.REQUEST_TIMED_OUT),
                                       (GaveUp("it is down"), P.REQUEST_TIMED_OUT),
                                       (RequestQueueFullError("too many in flight"), P.BUFFER_FULL)])
def test_local_conditions_are_client_errors_with_their_code(err: ClientError, code: int) -> None:
    assert isinstance(err, ClientError) and isinstance(err, CodedError) and not isinstance(err, RemoteError)
    assert err.code == code and err.retriable
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err) and back.code == code and back.message == err.message


def _silent_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_ports(1)[0]}"


def test_a_blocking_call_nobody_answers_is_a_local_timeout_after_its_retries() -> None:
    client = BlockingClient(zmq.Context.instance(), _silent_endpoint())
    try:
        with pytest.raises(RequestTimeout) as e:
            client.call(P.PING, timeout_ms=50, retries=1, backoff_ms=1)
        assert not isinstance(e.value, RemoteError)
        # given up (the peer seen down) is told from a deadline's timeout: GaveUp
        with pytest.raises(GaveUp, match="it is down"):
            client.call(P.PING, timeout_ms=5000, give_up=lambda: True)
    finally:
        client.close()


def test_the_reactor_client_reports_local_conditions_as_client_errors() -> None:
    clock = ManualClock()
    reactor = Reactor(clock)
    client = RpcClient(zmq.Context.instance(), reactor, _silent_endpoint())
    errors: list = []
    try:
        for _ in range(P.IN_FLIGHT_REQUESTS_MAX + 1):
            client.request(P.PING, {}, callback=lambda h, p, err: errors.append(err), timeout_ms=10)
        assert len(errors) == 1 and type(errors[0]) is RequestQueueFullError
        clock.advance(10)
        reactor.run_once(0)
        assert len(errors) == 1 + P.IN_FLIGHT_REQUESTS_MAX
        assert all(type(e) is RequestTimeout for e in errors[1:])
    finally:
        client.close()


def test_callers_that_handled_a_timeout_still_do() -> None:
    silent = _silent_endpoint()
    port = int(silent.rsplit(":", 1)[1])
    assert running_cluster.ping(NodeConfig(role="coordinator", port=port), timeout_ms=50) is None
    admin = Admin([silent], timeout_ms=50)
    try:
        with pytest.raises(FabricError, match="no coordinator"):
            admin.coordinator_endpoint()
    finally:
        admin.close()


def test_a_cluster_that_does_not_answer_is_a_retriable_timeout_not_a_config_error() -> None:
    """The consumer and producer services pass a coded client error on with its code; an
    unreachable cluster used to be an uncoded FabricError, which they answered invalid_config."""
    from fabric.client.bootstrap import fetch_metadata
    from fabric.errors import RequestTimeout
    with pytest.raises(RequestTimeout) as e:
        fetch_metadata(zmq.Context.instance(), ["tcp://127.0.0.1:9"], timeout_ms=100)
    assert e.value.code == P.REQUEST_TIMED_OUT and e.value.retriable
    admin = Admin("127.0.0.1:9", timeout_ms=100)
    try:
        with pytest.raises(RequestTimeout):
            admin.coordinator_endpoint()
    finally:
        admin.close()


def test_a_silent_coordinator_among_answering_brokers_is_a_timeout_naming_it() -> None:
    """A coordinator paused (SIGSTOP) or hung while the brokers answer: `loom topic create` said
    "no coordinator among the bootstrap endpoints" (and REST 503 "the coordinator: no coordinator
    among the bootstrap endpoints"), as if the config named none, and the error was not
    retriable. It is a timeout that names the endpoint that did not answer."""
    import threading

    from fabric import wire
    ctx = zmq.Context.instance()
    broker = ctx.socket(zmq.ROUTER)
    broker_port = broker.bind_to_random_port("tcp://127.0.0.1")
    paused = ctx.socket(zmq.ROUTER)      # bound, never read: a stopped process's socket
    paused_port = paused.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if broker.poll(20):
                req = wire.decode_request(broker.recv_multipart())
                broker.send_multipart(wire.encode_reply(req.identity, {"id": req.id, "role": "broker", "cluster": "t"}))

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    admin = Admin([f"127.0.0.1:{paused_port}", f"127.0.0.1:{broker_port}"], timeout_ms=200)
    try:
        with pytest.raises(RequestTimeout) as e:
            admin.coordinator_endpoint()
        assert e.value.retriable
        assert f"tcp://127.0.0.1:{paused_port}" in e.value.message and "did not answer" in e.value.message
        assert f"tcp://127.0.0.1:{broker_port} (broker)" in e.value.message
    finally:
        admin.close()
        stop.set()
        server.join()
        broker.close(0)
        paused.close(0)
