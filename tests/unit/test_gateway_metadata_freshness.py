"""The gateway's look at the cluster stays as fresh as a request needs, beside the one metadata
fetch at a time and the shared view of a silent coordinator (test_gateway_metadata_sharing.py,
whose rigs these tests use): a coordinator the health watcher wrongly sees down, ``/health``
while only a broker's copy answers, the floor of metadata produce trusts after a delete, and a
fetch whose thread is stopped; ``/status/ready`` likewise."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from fabric.config import load_config
from fabric.metadata import ClusterMetadata
import nodes.gateway.agent as agent_mod
from nodes.gateway.agent import GatewayAgent
from nodes.gateway.metadata_flight import MetadataFlight
from nodes.local_cluster import GATEWAY_NODES, make_config, wait_until
from tests.unit.fakes import metadata_of
from tests.unit.test_gateway_ready import gateway as ready_gateway, get_ready
from tests.unit.test_gateway_metadata_sharing import (WAIT_S, _Admin, _Cluster, _Requests, _Service, _serve, _Silent,
                                                      silent_coordinator)

__all__ = ["silent_coordinator"]  # the fixture, shared


def test_a_coordinator_the_health_watcher_wrongly_sees_down_still_answers_a_look_for_a_topic_just_made(
        tmp_path: Path) -> None:
    """The watcher takes a node for down after one PING unanswered for 1 s (a coordinator busy
    with a long commit), until a later PING is answered. Seen down, the coordinator was asked
    after the brokers, whose copies lag its metadata (pushed after each commit): the topic a
    request had just made through it was not found by the next request (404)."""
    config = load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES)))
    coordinator, broker = config.bootstrap()

    def answer(topics: dict[str, int], version: int) -> dict:
        md = dataclasses.replace(metadata_of(topics), version=version, coordinator=coordinator, state_id="s1")
        return {"metadata": md.to_wire()}
    ctx, stop = zmq.Context.instance(), threading.Event()
    coordinator_sock, broker_sock = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER)
    coordinator_sock.bind(coordinator)
    broker_sock.bind(broker)
    fresh, stale = answer({"t": 1, "new": 2}, 4), answer({"t": 1}, 3)  # the broker's copy before "new"
    _, coordinator_thread = _serve(coordinator_sock, lambda n: stale if n == 0 else fresh, stop)
    _, broker_thread = _serve(broker_sock, lambda n: stale, stop)
    down: set[str] = set()
    try:
        agent = GatewayAgent(config, is_up=lambda endpoint: endpoint not in down)
        assert "new" not in agent.metadata().topics  # the coordinator known, seen up
        down.add(coordinator)  # a PING unanswered for 1 s; then "new" is made through it
        [t] = _Requests(lambda: agent.topic("new"), 1).start().join()
        assert not isinstance(t, Exception), f"the topic just made was not found: {t!r}"
        assert len(t.partitions) == 2
    finally:
        stop.set()
        coordinator_thread.join(5)
        broker_thread.join(5)


def test_health_says_the_coordinator_is_unreachable_while_only_a_brokers_copy_answers(
        silent_coordinator: _Silent) -> None:
    """``GET /health``: 200 while the gateway reaches the coordinator, else 503. Its look for
    metadata takes a broker's copy when the coordinator does not answer (and, once one fetch
    found it silent, asks the brokers first): the coordinator killed, /health said 200."""
    agent = silent_coordinator.agent
    if silent_coordinator.answers:
        assert agent.coordinator_reachable(), "the coordinator answered"
    for _ in range(2):  # found silent, then asked after the brokers within its backoff
        assert not agent.coordinator_reachable(), "a broker's copy taken for the coordinator's answer"


def test_ready_says_not_ready_while_only_a_brokers_copy_answers(silent_coordinator: _Silent) -> None:
    """``GET /status/ready`` through the real agent: 200 only when the coordinator answers. It
    took any metadata for the coordinator's answer: with the coordinator SIGSTOPped under
    `make up`, ready said 200 and ``"coordinator": true`` for 10 s (until the monitor called it
    unresponsive) while ``/health`` said 503."""
    gw = ready_gateway({"broker-1": "healthy", "coordinator": "healthy"}, silent_coordinator.agent)
    if silent_coordinator.answers:
        r = get_ready(gw)
        assert r.status_code == 200 and r.get_json()["coordinator"] is True, r.get_json()
    for _ in range(2):  # found silent, then asked after the brokers within its backoff
        r = get_ready(gw)
        body = r.get_json()
        assert r.status_code == 503, f"a broker's copy taken for the coordinator's answer: {body}"
        assert body["coordinator"] is False and "brokers" not in body, body


def test_the_floor_a_topic_deleted_here_sets_never_goes_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two deletes ending together: the one whose thread read the clock first and set the
    floor last put it back before the other's delete, and a produce to the topic deleted last
    took a fetch begun before that delete (refused by the service where it should have made
    the topic again)."""
    import time as real_time
    cluster = _Cluster({"t": 1, "a": 1, "b": 1})
    config = make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES, overrides={"gateway": {"auto_create_topics": True}})
    agent = GatewayAgent(load_config(str(config)), make_admin=lambda: _Admin(cluster), make_producer=_Service)
    made: list[str] = []
    agent.create_topic = lambda name, *a: (made.append(name), cluster.topics.__setitem__(name, 1))  # type: ignore[method-assign]
    slow_clock, go = threading.Event(), threading.Event()

    class _Time:
        """The module's clock: the deleting thread of "a" is held right after reading it."""
        def __getattr__(self, name: str) -> Any:
            return getattr(real_time, name)

        def monotonic(self) -> float:
            now = real_time.monotonic()
            if threading.current_thread().name == "delete-a":
                slow_clock.set()
                assert go.wait(WAIT_S)
            return now
    monkeypatch.setattr(agent_mod, "time", _Time())

    def delete(name: str) -> None:
        agent.admin().delete_topic = lambda n: cluster.topics.pop(n)  # type: ignore[attr-defined]
        agent.delete_topic(name)
    first = threading.Thread(target=delete, args=("a",), name="delete-a", daemon=True)
    first.start()
    assert slow_clock.wait(WAIT_S)
    cluster.hold.clear()
    fetch = _Requests(agent.metadata, 1).start()  # begun after "a"'s delete, before "b"'s
    wait_until(lambda: cluster.started == 1, WAIT_S, what="the fetch in flight")
    delete("b")
    go.set()
    first.join(WAIT_S)
    produce = _Requests(lambda: agent.produce("b", [(None, b"v", None, None)], "all"), 1).start()
    wait_until(lambda: agent.metadata_waiting() == 1 or cluster.started == 2, WAIT_S, what="the produce waiting")
    cluster.hold.set()
    fetch.join()
    assert produce.join() == [[(0, 7, None, False)]]
    assert made == ["b"], "the produce took a fetch begun before the topic was deleted"


def test_a_request_waiting_for_a_fetch_whose_thread_is_stopped_fetches_itself() -> None:
    """A fetch interrupted by a BaseException (its thread being stopped) has no answer of the
    cluster to share: the requests waiting for it were answered 503 (``the metadata fetch in
    flight was interrupted``) though the cluster answered and they had time to ask it."""
    flight = MetadataFlight(WAIT_S * 1000)
    gate, begun = threading.Event(), threading.Event()

    def stopped() -> ClusterMetadata:
        begun.set()
        assert gate.wait(WAIT_S)
        raise KeyboardInterrupt  # the thread being stopped

    def first() -> None:
        with pytest.raises(KeyboardInterrupt):
            flight.get(stopped, time.monotonic())
    interrupted = threading.Thread(target=first, daemon=True)
    interrupted.start()
    assert begun.wait(WAIT_S)
    waiting = _Requests(lambda: flight.get(lambda: metadata_of({"t": 1}), time.monotonic()), 1).start()
    wait_until(lambda: flight.waiting == 1, WAIT_S, what="the request waiting")
    gate.set()
    interrupted.join(WAIT_S)
    [md] = waiting.join()
    assert isinstance(md, ClusterMetadata), f"the request waiting got {md!r}"
