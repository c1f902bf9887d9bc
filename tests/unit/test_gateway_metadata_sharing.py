"""The gateway's request threads share one metadata fetch at a time and one view of a silent
coordinator. Each thread asked the cluster on its own: N concurrent requests made N fetches
at once, and with the coordinator's process dead every request thread waited for it (1 s) on
its first fetch, one thread after the other (test_faults_gateway_produce: seconds with nothing
acknowledged). Through the real ``GatewayAgent``: with scripted Admins whose fetches the test
holds, and with real ZeroMQ sockets for a coordinator that never answers."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import zmq

from fabric import wire
from fabric.client import coordinator_silence
from fabric.config import load_config
from fabric.errors import RequestTimeout
from fabric.metadata import ClusterMetadata
import nodes.gateway.agent as agent_mod
from nodes.gateway.agent import GatewayAgent
from nodes.gateway.metadata_flight import MetadataFlight
from nodes.local_cluster import GATEWAY_NODES, make_config, wait_until
from tests.unit.fakes import metadata_of
from webui.errors import ClusterError

THREADS = 6
WAIT_S = 10  # how long a test waits for a condition (deadline, not a sleep)


class _Cluster:
    """What every request thread's Admin asks: counts the fetches, and holds each one until the
    test lets it go (``hold``) -- the fetch in flight of the tests. Thread-safe."""

    def __init__(self, topics: dict[str, int]) -> None:
        self.topics = dict(topics)
        self.lock = threading.Lock()
        self.started = 0
        self.in_flight = 0
        self.in_flight_max = 0
        self.hold = threading.Event()
        self.hold.set()
        self.error: Exception | None = None

    def fetch(self) -> ClusterMetadata:
        with self.lock:
            self.started += 1
            self.in_flight += 1
            self.in_flight_max = max(self.in_flight_max, self.in_flight)
            topics, n, error = dict(self.topics), self.started, self.error
        try:
            assert self.hold.wait(WAIT_S), "a fetch was held past the test"
            if error is not None:
                raise error
            return dataclasses.replace(metadata_of(topics), version=n)  # the version says which fetch answered
        finally:
            with self.lock:
                self.in_flight -= 1


class _Admin:
    def __init__(self, cluster: _Cluster) -> None:
        self.cluster = cluster

    def metadata(self) -> ClusterMetadata:
        return self.cluster.fetch()


class _Service:
    def produce_rows(self, topic: str, records: list, acks: Any, is_down: Any = None) -> tuple:
        return tuple((0, 7, 0, "") for _ in records)


@pytest.fixture
def rig(tmp_path: Path) -> tuple[GatewayAgent, _Cluster]:
    cluster = _Cluster({"t": 1})
    agent = GatewayAgent(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))),
                         make_admin=lambda: _Admin(cluster), make_producer=_Service)
    return agent, cluster


class _Requests:
    """Request threads, each calling ``call`` once; what each got (an answer or an error)."""

    def __init__(self, call: Callable[[], Any], n: int) -> None:
        self.got: list[Any] = [None] * n
        self.threads = [threading.Thread(target=self._run, args=(call, i), daemon=True) for i in range(n)]

    def _run(self, call: Callable[[], Any], i: int) -> None:
        try:
            self.got[i] = call()
        except Exception as e:  # noqa: BLE001 - what the request was answered is the test's subject
            self.got[i] = e

    def start(self) -> "_Requests":
        for t in self.threads:
            t.start()
        return self

    def join(self) -> list[Any]:
        for t in self.threads:
            t.join(WAIT_S)
            assert not t.is_alive(), "a request thread still waits"
        return self.got


def _held_first(agent: GatewayAgent, started: Callable[[], int], gate: threading.Event,
                call: Callable[[], Any]) -> tuple[list[Any], _Requests]:
    """One request whose fetch is in flight (held until ``gate`` is set; ``started``: the count
    of fetches begun), then THREADS more calling ``call``, each either waiting for that fetch or
    (as each thread did on its own) fetching itself; returns (what the first got, the rest)."""
    gate.clear()
    first = _Requests(call, 1).start()
    wait_until(lambda: started() == 1, WAIT_S, what="the first fetch in flight")
    rest = _Requests(call, THREADS).start()
    # the unchanged code: every thread fetched on its own
    wait_until(lambda: started() == 1 + THREADS or agent.metadata_waiting() == THREADS, WAIT_S,
               what="every request waiting for the fetch in flight")
    gate.set()
    return first.join(), rest


def test_concurrent_requests_make_one_fetch_at_a_time_and_those_that_came_later_share_one(rig: Any) -> None:
    """An answer fetched before a request began is not fresh for it (a topic made just before
    must be seen): those that came while a fetch was in flight share the next one."""
    agent, cluster = rig
    got = _held_first(agent, lambda: cluster.started, cluster.hold, agent.metadata)[1].join()
    assert (cluster.started, cluster.in_flight_max) == (2, 1), \
        f"{cluster.started} fetches, {cluster.in_flight_max} at once, for {THREADS + 1} requests"
    assert {md.version for md in got} == {2}, "a request was answered with a fetch begun before it"


def test_concurrent_produce_requests_share_the_fetch_in_flight(rig: Any) -> None:
    """Produce trusts metadata up to PRODUCE_METADATA_MAX_AGE_MS old: a fetch in flight that
    began that recently is as good, and every request takes its answer."""
    agent, cluster = rig
    got = _held_first(agent, lambda: cluster.started, cluster.hold,
                      lambda: agent.produce("t", [(None, b"v", None, None)], "all"))[1].join()
    assert got == [[(0, 7, None, False)]] * THREADS
    assert cluster.started == 1, f"{cluster.started} fetches for {THREADS + 1} produce requests"


def test_a_produce_takes_the_fetch_in_flight_however_long_ago_it_began(rig: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fetch still in flight past the max age (one waiting out a dead coordinator and then a
    dead broker) answers with metadata newer than any the produce would trust: waiting for it
    and then fetching again held every produce twice as long."""
    agent, cluster = rig
    monkeypatch.setattr(agent_mod, "PRODUCE_METADATA_MAX_AGE_MS", 50)
    cluster.hold.clear()
    first = _Requests(agent.metadata, 1).start()
    wait_until(lambda: cluster.started == 1, WAIT_S, what="the fetch in flight")
    began_s = time.monotonic()
    wait_until(lambda: time.monotonic() - began_s > 0.1, WAIT_S, what="the fetch older than the max age")
    produce = _Requests(lambda: agent.produce("t", [(None, b"v", None, None)], "all"), 1).start()
    wait_until(lambda: cluster.started == 2 or agent.metadata_waiting() == 1, WAIT_S, what="the produce waiting")
    cluster.hold.set()
    first.join()
    assert produce.join() == [[(0, 7, None, False)]]
    assert cluster.started == 1, "the produce fetched again after the fetch in flight"


def test_a_produce_right_after_a_topic_is_made_finds_it_while_an_older_fetch_is_in_flight(rig: Any) -> None:
    agent, cluster = rig
    cluster.hold.clear()
    first = _Requests(agent.metadata, 1).start()
    wait_until(lambda: cluster.started == 1, WAIT_S, what="the fetch in flight")
    cluster.topics["new"] = 1
    produce = _Requests(lambda: agent.produce("new", [(None, b"v", None, None)], "all"), 1).start()
    wait_until(lambda: agent.metadata_waiting() == 1, WAIT_S, what="the produce waiting")
    cluster.hold.set()
    first.join()
    assert produce.join() == [[(0, 7, None, False)]], "the topic made just before was not found"


def test_a_produce_after_a_topic_is_deleted_here_does_not_take_a_fetch_begun_before(tmp_path: Path) -> None:
    """With auto-create on, a produce after the delete makes the topic again; taking the answer
    of a fetch begun before the delete, it went to the service and was refused 404."""
    cluster = _Cluster({"t": 1})
    config = make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES, overrides={"gateway": {"auto_create_topics": True}})
    agent = GatewayAgent(load_config(str(config)), make_admin=lambda: _Admin(cluster), make_producer=_Service)
    made: list[str] = []
    agent.create_topic = lambda name, *a: (made.append(name), cluster.topics.__setitem__(name, 1))  # type: ignore[method-assign]
    agent.admin().delete_topic = lambda name: cluster.topics.pop(name)  # type: ignore[attr-defined]
    cluster.hold.clear()
    first = _Requests(agent.metadata, 1).start()
    wait_until(lambda: cluster.started == 1, WAIT_S, what="the fetch in flight")
    agent.delete_topic("t")
    produce = _Requests(lambda: agent.produce("t", [(None, b"v", None, None)], "all"), 1).start()
    wait_until(lambda: agent.metadata_waiting() == 1, WAIT_S, what="the produce waiting")
    cluster.hold.set()
    first.join()
    assert produce.join() == [[(0, 7, None, False)]]
    assert made == ["t"], "the produce did not make the deleted topic again"


def test_a_topic_made_while_a_fetch_was_in_flight_is_found_by_a_request_after_it(rig: Any) -> None:
    agent, cluster = rig
    cluster.hold.clear()
    first = _Requests(agent.metadata, 1).start()
    wait_until(lambda: cluster.started == 1, WAIT_S, what="the fetch in flight")
    cluster.topics["new"] = 2  # made (e.g. by an earlier request of a client) after that fetch began
    later = _Requests(lambda: agent.topic("new"), 1).start()
    wait_until(lambda: agent.metadata_waiting() == 1, WAIT_S, what="the request waiting")
    cluster.hold.set()
    first.join()
    [t] = later.join()
    assert not isinstance(t, Exception), f"the topic made just before was not found: {t!r}"
    assert len(t.partitions) == 2


def test_a_fetch_that_fails_fails_the_requests_waiting_for_it_and_the_next_fetches_again(rig: Any) -> None:
    agent, cluster = rig
    cluster.error = RequestTimeout("no node answered")
    got = _held_first(agent, lambda: cluster.started, cluster.hold, agent.metadata)[1].join()
    assert cluster.started == 1, "the requests waiting for a failed fetch each fetched again"
    assert all(isinstance(e, ClusterError) and e.kind == "unavailable" and "no node answered" in e.message
               for e in got), got
    cluster.error = None
    assert agent.metadata().version == 2


def test_requests_waiting_for_a_hung_fetch_give_up_with_a_clear_error_and_the_next_fetches(rig: Any) -> None:
    made, cluster = rig
    agent = GatewayAgent(made.config, make_admin=lambda: _Admin(cluster), make_producer=_Service,
                         metadata_wait_ms_max=300)  # how long after a fetch began it counts as hung
    cluster.hold.clear()
    hung = _Requests(agent.metadata, 1).start()
    wait_until(lambda: cluster.started == 1, WAIT_S, what="the fetch in flight")
    [e] = _Requests(agent.metadata, 1).start().join()
    assert isinstance(e, ClusterError) and e.kind == "unavailable" and "did not end within 300 ms" in e.message, e
    got = _Requests(agent.metadata, 1)
    got.start()
    wait_until(lambda: cluster.started == 2, WAIT_S, what="a fetch beside the hung one")
    cluster.hold.set()
    assert got.join()[0].version == 2
    hung.join()


# -- one view of a silent coordinator, on real sockets ---------------------------------------

def _serve(sock: zmq.Socket, answer: Callable[[int], dict | None], stop: threading.Event) -> tuple[list[int], threading.Thread]:
    """Serve ``sock`` in a thread until ``stop``: the n-th request (from 0) is answered with
    ``answer(n)``, or taken and left unanswered when that is None; returns (the count of
    requests, the thread)."""
    got = [0]

    def serve() -> None:
        while not stop.is_set():
            if sock.poll(20):
                req = wire.decode_request(sock.recv_multipart())
                header = answer(got[0])
                got[0] += 1
                if header is not None:
                    sock.send_multipart(wire.encode_reply(req.identity, {"id": req.id, **header}, []))
        sock.close(0)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return got, thread


@dataclasses.dataclass
class _Silent:
    agent: GatewayAgent
    asked: Callable[[], int]  # the coordinator's count of asks
    answers: int  # how many of them it answered
    down: set[str]  # endpoints the agent's health watcher (``is_up``) sees down


@pytest.fixture(params=[0, 1], ids=["silent-from-the-start", "silent-after-answering"])
def silent_coordinator(tmp_path: Path, request: Any) -> Iterator[_Silent]:
    """A gateway agent of a config whose coordinator answers metadata ``request.param`` times,
    then takes requests and answers none (killed), and whose broker answers metadata naming it."""
    config = load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES)))
    coordinator, broker = config.bootstrap()
    md = {"metadata": dataclasses.replace(metadata_of({"t": 1}), version=3, coordinator=coordinator,
                                          state_id="s1").to_wire()}
    ctx, stop, answers = zmq.Context.instance(), threading.Event(), request.param
    coordinator_sock, broker_sock = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER)
    coordinator_sock.bind(coordinator)
    broker_sock.bind(broker)
    asked, coordinator_thread = _serve(coordinator_sock, lambda n: md if n < answers else None, stop)
    _, broker_thread = _serve(broker_sock, lambda n: md, stop)
    down: set[str] = set()
    try:
        yield _Silent(GatewayAgent(config, is_up=lambda endpoint: endpoint not in down), lambda: asked[0], answers, down)
    finally:
        stop.set()
        coordinator_thread.join(5)
        broker_thread.join(5)


def test_a_request_thread_does_not_wait_for_a_coordinator_another_found_silent(
        silent_coordinator: _Silent, monkeypatch: pytest.MonkeyPatch) -> None:
    # the brokers are asked first for the backoff after a silence (1 s): on a loaded machine the
    # three requests took longer than that, and the third asked the coordinator again, rightly
    monkeypatch.setattr(coordinator_silence, "COORDINATOR_SILENT_BACKOFF_MS_MIN", 60_000)
    for _ in range(3):  # each on a thread of its own: its own Admin
        [md] = _Requests(silent_coordinator.agent.metadata, 1).start().join()
        assert getattr(md, "version", md) == 3
    unanswered = silent_coordinator.asked() - silent_coordinator.answers
    assert unanswered == 1, f"the silent coordinator was asked {unanswered} times: each request thread waited for it"


def test_a_coordinator_the_health_watcher_sees_down_is_asked_after_the_brokers(silent_coordinator: _Silent) -> None:
    """It is PINGed every health interval: seen down, a metadata fetch waited 1 s for it (or,
    at each backoff's end, 0.5 s) with every produce request behind that fetch."""
    silent_coordinator.down.add(silent_coordinator.agent.bootstrap[0])
    [md] = _Requests(silent_coordinator.agent.metadata, 1).start().join()
    assert getattr(md, "version", md) == 3
    assert silent_coordinator.asked() == 0, "the coordinator the health watcher sees down was asked first"


def test_many_threads_asking_at_random_get_fresh_enough_answers_one_fetch_at_a_time() -> None:
    """MetadataFlight under concurrent calls of both kinds (a route's: begun after the call; a
    produce's: begun within 20 ms, or in flight), some fetches failing: every answer is as
    fresh as its caller asked, and no two fetches ever run at once."""
    flight, lock = MetadataFlight(wait_ms_max=5000), threading.Lock()
    state = {"in_flight": 0, "most": 0, "fetches": 0}
    problems: list[str] = []

    def fetch() -> float:
        began = time.monotonic()
        with lock:
            state["in_flight"] += 1
            state["most"] = max(state["most"], state["in_flight"])
            state["fetches"] += 1
            n = state["fetches"]
        threading.Event().wait(0.002)  # a fetch's round trip
        with lock:
            state["in_flight"] -= 1
        if n % 7 == 0:
            raise RequestTimeout("no node answered")
        return began

    def caller(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(40):
            called = time.monotonic()
            strict = rng.random() < 0.5
            try:
                began = flight.get(fetch, called if strict else called - 0.02, None if strict else float("-inf"))
            except RequestTimeout:
                continue
            if strict and began < called:
                problems.append(f"an answer fetched {called - began:.4f} s before a call that needed a fresh one")
    threads = [threading.Thread(target=caller, args=(seed,), daemon=True) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
        assert not t.is_alive()
    assert not problems, problems[:3]
    assert state["most"] == 1, f"{state['most']} fetches ran at once"
    assert state["fetches"] < 8 * 40, "every call fetched"


# -- the Admin's own fetches (offsets: Admin.list_offsets) share the gateway's one fetch ----------

class _HeldNode:
    """A node answering METADATA on ``endpoint`` (a thread): requests are counted as they come,
    and answered only once ``release`` is set."""

    def __init__(self, endpoint: str, md: ClusterMetadata) -> None:
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.bind(endpoint)
        self.md, self.got, self.release, self.stop = md, 0, threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        held: list[wire.Request] = []
        while not self.stop.is_set():
            if self.sock.poll(10):
                held.append(wire.decode_request(self.sock.recv_multipart()))
                self.got += 1
            while held and self.release.is_set():
                req = held.pop(0)
                self.sock.send_multipart(wire.encode_reply(req.identity, {"id": req.id, "metadata": self.md.to_wire()}, []))
        self.sock.close(0)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[GatewayAgent, _HeldNode]]:
    """A gateway agent whose coordinator holds its metadata answers (``_HeldNode``); its broker
    answers none."""
    config = load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES)))
    coordinator, _ = config.bootstrap()
    node = _HeldNode(coordinator, dataclasses.replace(metadata_of({"t": 1}), version=3, coordinator=coordinator))
    try:
        yield GatewayAgent(config), node
    finally:
        node.close()


def test_concurrent_offsets_requests_make_one_metadata_fetch_at_a_time(held: Any) -> None:
    """Admin.list_offsets (a partition's offsets, the records browser, reset-offsets) fetches
    metadata through the request thread's Admin, within the call's deadline: each fetched on
    its own."""
    agent, node = held

    def fetch() -> ClusterMetadata:
        return agent.admin().metadata(deadline_s=time.monotonic() + WAIT_S)
    first, rest = _held_first(agent, lambda: node.got, node.release, fetch)
    got = first + rest.join()
    assert all(getattr(md, "version", md) == 3 for md in got), got
    assert node.got == 2, f"{node.got} fetches for {THREADS + 1} requests"


def test_a_request_with_a_shorter_deadline_than_the_fetch_in_flight_stops_waiting_at_it(held: Any) -> None:
    agent, node = held
    first = _Requests(agent.metadata, 1).start()
    wait_until(lambda: node.got == 1, WAIT_S, what="the fetch in flight")
    [e] = _Requests(lambda: agent.admin().metadata(deadline_s=time.monotonic() + 0.2), 1).start().join()
    assert isinstance(e, RequestTimeout) and "deadline" in e.message, e
    node.release.set()
    assert first.join()[0].version == 3


def test_a_fetch_that_timed_out_at_its_shorter_deadline_is_tried_again_by_a_request_with_more_time() -> None:
    flight, ran = MetadataFlight(wait_ms_max=5000), threading.Event()

    def short() -> str:
        ran.set()
        assert go.wait(WAIT_S)
        raise RequestTimeout("no node answered by the deadline")
    go = threading.Event()
    leader = _Requests(lambda: flight.get(short, time.monotonic(), deadline_s=time.monotonic() + 1), 1).start()
    assert ran.wait(WAIT_S)
    waiter = _Requests(lambda: flight.get(lambda: "answered", time.monotonic()), 1).start()
    wait_until(lambda: flight.waiting == 1, WAIT_S, what="the request waiting")
    go.set()
    assert isinstance(leader.join()[0], RequestTimeout)
    assert waiter.join() == ["answered"], "a request with no deadline took the error of a fetch cut short by another's"

