"""The producer service stopped by SIGTERM, with a real cluster: it drains. A request it took
is answered with its records' offsets once the (paused) leader acknowledges them; a request
arriving meanwhile is refused at once with ``buffer_full`` saying nothing was written (and
``stopping: true``, which a full buffer's refusal lacks), and nothing of it is in the log;
PING says ``stopping``; the process exits 0. A request still unacknowledged at the drain's
deadline is answered ``request_timed_out`` saying it may have been written, not dropped.
Through the gateway: it sends a stopping service nothing new (503 / 50301) and waits for the
answer of what it sent before (200 with the offset, not 50302).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from fabric import protocol as P
from fabric.client import Admin, Consumer
from fabric.client.admin import LATEST
from fabric.client.services import ServiceProducer
from fabric.errors import RemoteError
from tests.gateway_client import BINARY, Http, b64, gateway_overrides
from tests.harness import Cluster, wait_until

TOPIC = "drain"
DRAIN_TIMEOUT_MS = 4000  # long enough for the drain tests' steps on a slow machine
# one broker (the topic's only replica, paused to hold requests in flight) whose pause of a few
# seconds stays inside its session; the producer service's drain cut short for the deadline test
CLUSTER_OPTIONS = {"brokers": 1, "extra_nodes": ("producer", "gateway"),
                   "overrides": {**gateway_overrides(), "liveness": {"session_timeout_ms": 15_000},
                                 "services": {"producer_drain_timeout_ms": DRAIN_TIMEOUT_MS}}}


@pytest.fixture(scope="module", autouse=True)
def _topic(module_cluster: Cluster) -> None:
    with Admin(module_cluster.bootstrap) as admin:
        admin.create_topic(TOPIC, 1, 1)
        module_cluster.wait_topic_ready(admin, TOPIC)


class _Produce(threading.Thread):
    """One SERVICE_PRODUCE of ``values`` on its own thread: ``rows`` or ``error`` once answered."""

    def __init__(self, endpoint: str, values: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.values = endpoint, values
        self.rows: Any = None
        self.error: Exception | None = None

    def run(self) -> None:
        sp = ServiceProducer(self.endpoint, timeout_ms=30_000)
        try:
            self.rows = sp.produce_rows(TOPIC, [(None, v, None, None) for v in self.values], acks="all")
        except Exception as e:  # noqa: BLE001 - the test asserts on it
            self.error = e
        finally:
            sp.close()


def _taken_while_leader_paused(cluster: Cluster, values: list[bytes]) -> _Produce:
    """Pause the broker, send ``values`` and wait until the service has taken them."""
    cluster.kill("broker-1", signal.SIGSTOP)
    request = _Produce(cluster.endpoint("producer"), values)
    request.start()
    wait_until(lambda: cluster.stats("producer")["buffered_bytes"] > 0, 10, what="the request taken")
    return request


def _log(cluster: Cluster) -> dict[bytes, int]:
    """value -> offset of every record in the topic's one partition."""
    with Admin(cluster.bootstrap) as admin:
        end = admin.list_offsets(TOPIC, LATEST)[0]
    c = Consumer(cluster.bootstrap, auto_offset_reset="earliest")
    try:
        c.assign([(TOPIC, 0)])
        out: dict[bytes, int] = {}
        deadline = time.monotonic() + 15
        while len(out) < end and time.monotonic() < deadline:
            out.update((r.value, r.offset) for r in c.poll(200))
        return out
    finally:
        c.close()


def test_sigterm_answers_every_request_taken_and_refuses_new_ones_unwritten(cluster: Cluster) -> None:
    taken = [b"taken-%d" % i for i in range(20)]
    service = cluster.procs["producer"]
    try:
        request = _taken_while_leader_paused(cluster, taken)
        os.kill(service.pid, signal.SIGTERM)
        wait_until(lambda: cluster.ping("producer").get("stopping") is True, 5, what="PING to say stopping")
        late = ServiceProducer(cluster.endpoint("producer"), timeout_ms=5000)
        try:
            with pytest.raises(RemoteError) as refused:
                late.produce(TOPIC, [(None, b"refused", None, None)], acks="all")
        finally:
            late.close()
        assert refused.value.code == P.BUFFER_FULL and "nothing of the request was written" in refused.value.message
        assert refused.value.details.get("stopping") is True  # not a full buffer: another service may take it
        assert service.poll() is None, "the service exited with a request of its unanswered"
    finally:
        cluster.kill("broker-1", signal.SIGCONT)
    request.join(20)
    assert request.error is None, f"the request taken was not answered: {request.error!r}"
    assert [r[2] for r in request.rows] == [0] * len(taken), request.rows
    assert service.wait(timeout=15) == 0
    cluster.start_node("producer")
    log = _log(cluster)
    assert {v: log.get(v) for v in taken} == {v: r[1] for v, r in zip(taken, request.rows)}
    assert b"refused" not in log


def test_a_request_unacknowledged_at_the_drain_deadline_is_answered_may_have_been_written(cluster: Cluster) -> None:
    service = cluster.procs["producer"]
    try:
        request = _taken_while_leader_paused(cluster, [b"stuck-%d" % i for i in range(5)])
        os.kill(service.pid, signal.SIGTERM)
        request.join(DRAIN_TIMEOUT_MS / 1000 + 10)
        assert request.error is None, f"the request taken was not answered: {request.error!r}"
        assert {(r[1], r[2]) for r in request.rows} == {(-1, P.REQUEST_TIMED_OUT)}, request.rows
        assert all("may have been written" in r[3] for r in request.rows), request.rows
        assert service.wait(timeout=15) == 0
    finally:
        cluster.kill("broker-1", signal.SIGCONT)
    cluster.start_node("producer")


class _Post(threading.Thread):
    """One REST produce of ``value`` on its own thread: ``answer`` (status, body) once answered."""

    def __init__(self, http: Http, value: bytes) -> None:
        super().__init__(daemon=True)
        self.http, self.value = http, value
        self.answer: tuple[int, Any] | None = None

    def run(self) -> None:
        self.answer = _post(self.http, self.value)


def _post(http: Http, value: bytes) -> tuple[int, Any]:
    r = http("POST", f"/topics/{TOPIC}", {"records": [{"value": b64(value)}]}, ctype=BINARY, timeout_s=60)
    return r.status_code, r.json()


def test_the_gateway_sends_a_stopping_service_nothing_new_and_waits_for_what_it_took(cluster: Cluster) -> None:
    http = Http(cluster.raw["nodes"]["gateway"]["port"])
    wait_until(lambda: _post(Http(cluster.raw["nodes"]["gateway"]["port"]), b"warm-up")[0] == 200, 20,
               what="the gateway to produce")
    service = cluster.procs["producer"]
    refused: list[bytes] = []

    def refused_by_the_gateway() -> bool:  # its health watcher has seen PING say stopping
        refused.append(b"late-%d" % len(refused))
        status, body = _post(http, refused[-1])
        assert (status, body["error_code"]) == (503, 50301), body
        return "down or stopping" in body["message"]
    cluster.kill("broker-1", signal.SIGSTOP)
    try:
        taken = _Post(Http(cluster.raw["nodes"]["gateway"]["port"]), b"gw-taken")
        taken.start()
        wait_until(lambda: cluster.stats("producer")["buffered_bytes"] > 0, 10, what="the request taken")
        os.kill(service.pid, signal.SIGTERM)
        wait_until(refused_by_the_gateway, 10, interval_s=0.1, what="the gateway to see the service stopping")
        assert taken.is_alive(), f"answered before its record was acknowledged: {taken.answer}"
    finally:
        cluster.kill("broker-1", signal.SIGCONT)
    taken.join(20)
    assert taken.answer is not None and taken.answer[0] == 200, taken.answer
    offset = taken.answer[1]["offsets"][0]
    assert offset.get("error_code") is None, offset
    assert service.wait(timeout=15) == 0
    cluster.start_node("producer")
    log = _log(cluster)
    assert log.get(b"gw-taken") == offset["offset"]
    assert not set(refused) & set(log), "a request refused 50301 was written"
