"""A metadata ask of a node whose port refuses the connection (its process is dead, its host
up: nothing listens there) ends at once, and ``fetch_metadata`` asks the next endpoint: a
refused connect is a definite answer that the node cannot answer now. A libzmq DEALER retries
a refused connect without a word, so the ask waited out its timeout (1 s: the gateway's window
after the coordinator's SIGKILL). A node that takes the connection and does not answer (slow,
hung) is still waited for its whole timeout.

Real sockets on 127.0.0.1: ports picked free at run time; nothing listens on the refused one,
a libzmq ROUTER that never answers is the silent one."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Iterator

import pytest
import zmq

from fabric import protocol as P
from fabric.blocking_client import BlockingClient
from fabric.client.bootstrap import _Asks, fetch_metadata
from fabric.client.coordinator_silence import COORDINATOR_SILENT_BACKOFF_MS_MIN, CoordinatorSilence
from fabric.errors import ConnectionRefused, RequestTimeout
from fabric.metadata import ClusterMetadata
from nodes.local_cluster import free_ports, wait_until
from tests.unit.tcp_endpoints import serve_until

TIMEOUT_MS = 3000
MD = dataclasses.replace(ClusterMetadata.empty(), version=7, coordinator="tcp://127.0.0.1:1", state_id="s1")
LATE_S = 0.01  # a deadline in whole ms is met up to a ms early
SOON_S = 0.5  # a refusal on loopback comes in well under a millisecond; the timeouts are 1 s and more


def _timed(fn: Any, *args: Any, **kw: Any) -> tuple[Any, float]:
    start = time.monotonic()
    try:
        out = fn(*args, **kw)
    except RequestTimeout as e:
        out = e
    return out, time.monotonic() - start


def test_an_ask_of_a_refused_endpoint_ends_at_once(refused_endpoint: str) -> None:
    client = BlockingClient(zmq.Context.instance(), refused_endpoint, fail_on_refused=True)
    try:
        error, elapsed_s = _timed(client.call, P.METADATA, {}, timeout_ms=TIMEOUT_MS)
    finally:
        client.close()
    assert isinstance(error, ConnectionRefused), error
    assert elapsed_s < SOON_S, f"waited {elapsed_s:.2f} s for a node that refused the connection"


@pytest.mark.parametrize("where, fail_on_refused", [("silent_endpoint", True), ("refused_endpoint", False)])
def test_an_ask_waits_its_timeout_for_a_silent_endpoint_or_without_the_option(
        where: str, fail_on_refused: bool, request: pytest.FixtureRequest) -> None:
    """A node that took the connection may still answer; and the client's other users keep
    libzmq's behaviour, the request waiting for a refused node to come up."""
    endpoint = request.getfixturevalue(where)
    client = BlockingClient(zmq.Context.instance(), endpoint, fail_on_refused=fail_on_refused)
    try:
        error, elapsed_s = _timed(client.call, P.METADATA, {}, timeout_ms=300)
    finally:
        client.close()
    assert type(error) is RequestTimeout, error
    assert elapsed_s >= 0.3 - LATE_S


def test_fetch_metadata_asks_the_next_endpoint_at_once_after_a_refusal(refused_endpoint: str, scripted: Any) -> None:
    live = scripted(lambda req: ({"metadata": MD.to_wire()}, []))
    (md, endpoint), elapsed_s = _timed(fetch_metadata, zmq.Context.instance(), [refused_endpoint, live], TIMEOUT_MS)
    assert (md.version, endpoint) == (MD.version, live)
    assert elapsed_s < SOON_S, f"the refused endpoint held the round {elapsed_s:.2f} s"


def test_a_round_where_every_endpoint_refused_ends_at_once_with_a_timeout(refused_endpoint: str) -> None:
    other = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    error, elapsed_s = _timed(fetch_metadata, zmq.Context.instance(), [refused_endpoint, other], TIMEOUT_MS)
    assert isinstance(error, RequestTimeout) and error.code == P.REQUEST_TIMED_OUT and error.retriable, error
    assert "no node answered" in error.message, error.message
    assert elapsed_s < SOON_S, f"a round of refusals took {elapsed_s:.2f} s"


def test_a_silent_first_endpoint_still_holds_the_round_its_timeout(silent_endpoint: str, scripted: Any) -> None:
    live = scripted(lambda req: ({"metadata": MD.to_wire()}, []))
    (md, endpoint), elapsed_s = _timed(fetch_metadata, zmq.Context.instance(), [silent_endpoint, live], 400)
    assert endpoint == live
    assert elapsed_s >= 0.4 - LATE_S


def test_a_coordinator_that_refused_is_silent_as_one_that_timed_out(refused_endpoint: str, scripted: Any) -> None:
    """A refusal says nothing of whether the coordinator is dead or restarting: its silence
    begins as at a timeout, and the next rounds ask the brokers first for its backoff."""
    coordinator = refused_endpoint
    md = dataclasses.replace(MD, coordinator=coordinator)
    live = scripted(lambda req: ({"metadata": md.to_wire()}, []))
    silence = CoordinatorSilence()
    silence.seen(md)
    _, endpoint = fetch_metadata(zmq.Context.instance(), [coordinator, live], TIMEOUT_MS, coordinator,
                                 silence=silence)
    assert endpoint == live
    now_ms = int(time.monotonic() * 1000)
    assert silence.silent(coordinator) and silence.skips(coordinator, now_ms)
    assert not silence.skips(coordinator, now_ms + COORDINATOR_SILENT_BACKOFF_MS_MIN + 1)
    assert silence.order([coordinator, live], coordinator, now_ms) == [live, coordinator]


def test_a_refused_client_answers_again_once_its_peer_listens(refused_endpoint: str) -> None:
    """A refusal holds until a connection is made: the node started on its port is asked again."""
    client = BlockingClient(zmq.Context.instance(), refused_endpoint, fail_on_refused=True)
    service = zmq.Context.instance().socket(zmq.ROUTER)
    service.setsockopt(zmq.LINGER, 0)
    try:
        with pytest.raises(ConnectionRefused):
            client.call(P.METADATA, {}, timeout_ms=TIMEOUT_MS)
        service.bind(refused_endpoint)
        replies: list[dict] = []

        def answered() -> bool:
            try:
                replies.append(client.call(P.PING, {}, timeout_ms=TIMEOUT_MS)[0])
            except ConnectionRefused:
                return False  # the reconnect is not made yet (its interval)
            return True
        stop = threading.Event()
        # every request answered, the refused call's too: libzmq kept it for the connection
        serving = threading.Thread(target=serve_until, args=(service, stop, lambda req: {"node": "up"}), daemon=True)
        serving.start()
        try:
            wait_until(answered, 5, what="an answer once the peer listens")
        finally:
            stop.set()
            serving.join(5)
        assert replies[-1].get("node") == "up", replies
    finally:
        client.close()
        service.close(0)



def test_an_ask_cut_short_whose_node_then_refuses_is_no_longer_waited_for() -> None:
    """The node of an ask cut short (kept for its late answer) dies: its port refuses the
    reconnect, and the answer cannot come -- the request died with the process. The round's
    end stops waiting for it at once, and without polling it in a loop meanwhile."""
    service = zmq.Context.instance().socket(zmq.ROUTER)
    service.setsockopt(zmq.LINGER, 0)
    endpoint = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    service.bind(endpoint)
    asks = _Asks(None)
    try:
        assert asks.ask(zmq.Context.instance(), endpoint, 200, 3000) is None  # cut short: kept
        assert service.poll(TIMEOUT_MS), "the ask never reached the node"
        service.close(0)  # the node dies with the ask
        cpu_s, wall_s = time.thread_time(), time.monotonic()
        assert asks.late(2000) is None
        cpu_s, wall_s = time.thread_time() - cpu_s, time.monotonic() - wall_s
    finally:
        asks.close()
        service.close(0)
    assert cpu_s < 0.3 * wall_s, f"{cpu_s:.2f} s of CPU in {wall_s:.2f} s waiting for a late answer"
    assert wall_s < 1.5, f"waited {wall_s:.2f} s for the answer of a node that refuses the connection"


def test_a_coordinator_that_keeps_refusing_is_probed_again_at_the_shortest_backoff() -> None:
    """A refused probe costs nothing (it ends at once), so it does not double the backoff: a
    coordinator restarting is asked again, and seen back, within the shortest backoff of
    listening again. Doubled as after a timeout, one back 3.5 s after its kill was asked first at
    7 s (at 4.5 s when each probe waited its 0.5 s)."""
    coordinator = "tcp://127.0.0.1:9"
    silence = CoordinatorSilence()
    silence.seen(dataclasses.replace(MD, coordinator=coordinator))
    now_ms = 10_000
    for _ in range(4):
        silence.heard(coordinator, ConnectionRefused(f"{coordinator} refused the connection"), now_ms)
        assert silence.skips(coordinator, now_ms + COORDINATOR_SILENT_BACKOFF_MS_MIN - 1)
        now_ms += COORDINATOR_SILENT_BACKOFF_MS_MIN
        assert not silence.skips(coordinator, now_ms), "a refused probe lengthened the backoff"
    silence.heard(coordinator, RequestTimeout("no reply"), now_ms)  # a probe that waited: doubled as before
    assert silence.skips(coordinator, now_ms + COORDINATOR_SILENT_BACKOFF_MS_MIN)
