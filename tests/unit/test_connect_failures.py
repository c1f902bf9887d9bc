"""A connect that fails is reported as what happened: ``ConnectionRefused`` for ECONNREFUSED
(nothing listens on the port), ``PeerUnreachable`` for a host out of reach (EHOSTUNREACH,
ENETUNREACH, the kernel's connect timeout ETIMEDOUT...), either a ``ConnectFailed`` that fails
a fail-fast request (a metadata ask, INIT_PRODUCER_ID) at once, with the errno's name in the
message. Loopback can refuse a connect; the other errnos are given to the classification and
to the dealer's handling of a failed connect directly.

Real sockets on 127.0.0.1, ports picked free at run time."""

from __future__ import annotations

import errno
import os
import resource
import time
from typing import Any

import pytest
import zmq

from fabric import protocol as P
from fabric.client.bootstrap import _none_connected, fetch_metadata
from fabric.errors import ConnectFailed, ConnectionRefused, PeerUnreachable, RequestTimeout, connect_failed
from fabric.reactor import Reactor
from fabric.blocking_client import BlockingClient
from fabric.rpc import RpcClient
from fabric.zmtp_client_connection import connect_errno
from nodes.local_cluster import free_ports

DEADLINE_S = 10.0
ENDPOINT = "tcp://10.1.2.3:19001"


def test_a_refused_connect_is_a_refusal_named_so() -> None:
    e = connect_failed(ENDPOINT, errno.ECONNREFUSED)
    assert type(e) is ConnectionRefused and e.reason == "ECONNREFUSED"
    assert ENDPOINT in e.message and "ECONNREFUSED" in e.message and "nothing listens" in e.message


@pytest.mark.parametrize("name", ["EHOSTUNREACH", "ENETUNREACH", "ETIMEDOUT"])
def test_a_host_out_of_reach_is_no_refusal(name: str) -> None:
    e = connect_failed(ENDPOINT, getattr(errno, name))
    assert type(e) is PeerUnreachable and not isinstance(e, ConnectionRefused), type(e)
    assert isinstance(e, ConnectFailed) and isinstance(e, RequestTimeout) and e.retriable
    assert e.reason == name and name in e.message and "refused" not in e.message, e.message


def test_another_connect_errno_is_named_and_still_a_connect_failure() -> None:
    e = connect_failed(ENDPOINT, errno.EACCES)  # a firewall's reject, say
    assert type(e) is ConnectFailed and "EACCES" in e.message and e.reason == "EACCES"


def test_the_errno_survives_a_trip_through_pickle() -> None:
    import pickle
    e = pickle.loads(pickle.dumps(connect_failed(ENDPOINT, errno.EHOSTUNREACH)))
    assert type(e) is PeerUnreachable and e.reason == "EHOSTUNREACH" and "EHOSTUNREACH" in e.message


def _metadata_ask(reactor: Reactor, client: RpcClient) -> Any:
    out: list[Any] = []
    client.request(P.METADATA, {}, callback=lambda h, _p, err: out.append(err), timeout_ms=60_000)
    deadline = time.monotonic() + DEADLINE_S
    while not out:
        assert time.monotonic() < deadline, "the ask never ended"
        reactor.run_once(5)
    return out[0]


def test_an_rpc_client_names_the_refusal(refused_endpoint: str) -> None:
    reactor = Reactor()
    client = RpcClient(zmq.Context.instance(), reactor, refused_endpoint, fail_on_refused=(P.METADATA,))
    try:
        error = _metadata_ask(reactor, client)
        assert type(error) is ConnectionRefused and "ECONNREFUSED" in error.message, error
    finally:
        client.close()


def test_an_rpc_client_fails_fast_on_a_host_out_of_reach_and_says_so(refused_endpoint: str) -> None:
    """The dealer's connect failed with EHOSTUNREACH (given it here: loopback cannot): the ask
    ends at once as at a refusal, as a ``PeerUnreachable`` naming the errno."""
    reactor = Reactor()
    client = RpcClient(zmq.Context.instance(), reactor, refused_endpoint, fail_on_refused=(P.METADATA,))
    try:
        out: list[Any] = []
        client.request(P.METADATA, {}, callback=lambda h, _p, err: out.append(err), timeout_ms=60_000)
        client.transport._connect_failed(errno.EHOSTUNREACH)  # type: ignore[union-attr]
        assert client.transport.connect_error == errno.EHOSTUNREACH  # type: ignore[union-attr]
        reactor.run_once(0)
        assert out and type(out[0]) is PeerUnreachable and "EHOSTUNREACH" in out[0].message, out
    finally:
        client.close()


def test_a_blocking_client_names_the_refusal(refused_endpoint: str) -> None:
    client = BlockingClient(zmq.Context.instance(), refused_endpoint, fail_on_refused=True)
    try:
        with pytest.raises(ConnectionRefused) as caught:
            client.call(P.METADATA, timeout_ms=60_000)
        assert "ECONNREFUSED" in caught.value.message and caught.value.reason == "ECONNREFUSED", caught.value
    finally:
        client.close()


def test_a_metadata_round_no_node_took_the_connection_of_names_each_node(refused_endpoint: str) -> None:
    other = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    with pytest.raises(ConnectionRefused) as caught:
        fetch_metadata(zmq.Context.instance(), [refused_endpoint, other], timeout_ms=5000)
    message = caught.value.message
    assert f"{refused_endpoint} (ECONNREFUSED)" in message and f"{other} (ECONNREFUSED)" in message, message
    assert "every one refused" in message and caught.value.reason == "ECONNREFUSED", message


def test_a_round_of_refusals_and_hosts_out_of_reach_says_none_could_be_connected_to() -> None:
    error = _none_connected({"tcp://a:1": connect_failed("tcp://a:1", errno.ECONNREFUSED),
                             "tcp://b:1": connect_failed("tcp://b:1", errno.EHOSTUNREACH)})
    assert type(error) is ConnectFailed and "none could be connected to" in error.message, error
    assert "tcp://a:1 (ECONNREFUSED)" in error.message and "tcp://b:1 (EHOSTUNREACH)" in error.message
    error = _none_connected({"tcp://b:1": connect_failed("tcp://b:1", errno.ENETUNREACH)})
    assert type(error) is PeerUnreachable and "none could be reached" in error.message, error


def test_the_probe_of_a_blocking_client_finds_the_errno_or_a_listener(
        refused_endpoint: str, silent_endpoint: str) -> None:
    """libzmq's monitor says a connect failed, not why: ``connect_errno`` connects once to find
    it; one that is taken means the node listens again (the call then waits for libzmq's next
    connect, not failed as refused)."""
    assert connect_errno(refused_endpoint, 1000) == errno.ECONNREFUSED
    assert connect_errno(silent_endpoint, 1000) == 0
    assert connect_errno("tcp://127.0.0.1:notaport", 1000) == errno.EINVAL


def test_the_probe_works_in_a_process_holding_more_than_a_thousand_descriptors(
        refused_endpoint: str, silent_endpoint: str) -> None:
    """A busy process (a gateway with many clients) holds descriptors past select's FD_SETSIZE
    (1024): the probe's own socket is one of them and is still waited on (it raised ValueError,
    'filedescriptor out of range in select()')."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the descriptor limit ({hard}) leaves no room past 1024")
    if soft != resource.RLIM_INFINITY and soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    held: list[int] = []
    try:
        base = os.open(os.devnull, os.O_RDONLY)
        held.append(base)
        while held[-1] < 1100:
            held.append(os.dup(base))
        assert connect_errno(silent_endpoint, 1000) == 0
        assert connect_errno(refused_endpoint, 1000) == errno.ECONNREFUSED
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
