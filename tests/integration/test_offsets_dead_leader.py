"""Offsets of a partition asked while the metadata still names its dead leader: SIGKILLed (until
the coordinator elects another, under a second) or SIGSTOPped (until its session times out).
Admin.list_offsets sent LIST_OFFSETS there with any call's first round, three tries of its whole
timeout: 30 s for the CLI's Admin, 15 s for the gateway's offsets route, whatever its
``leader_wait_ms``. A leader that does not answer is now asked again where the metadata points
then, within the wait: the new leader's offsets, or the clear error, within the bound."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import pytest

from fabric.client import Admin
from fabric.client.admin import LATEST, LIST_OFFSETS_TRY_MS_MIN
from fabric.errors import CodedError
from nodes.gateway.agent import OFFSETS_LEADER_WAIT_MS
from tests.gateway_client import BINARY, GATEWAY_NODES, Http, b64, gateway_overrides
from tests.harness import Cluster, wait_until

pytestmark = pytest.mark.timeout(120)

CLUSTER_OPTIONS = {"brokers": 3, "extra_nodes": GATEWAY_NODES, "overrides": gateway_overrides()}  # tests/conftest.py
RECORDS = 5
# one call: its wait, then a last try of at least LIST_OFFSETS_TRY_MS_MIN, plus 1.5 s for the
# metadata asked on the way and a loaded 2-core machine
CALL_BOUND_S = (OFFSETS_LEADER_WAIT_MS + LIST_OFFSETS_TRY_MS_MIN) / 1000 + 1.5
GATEWAY_BOUND_S = 2 * CALL_BOUND_S  # the route asks for the log start, then the log end


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds taken, what ``fn`` returned or raised)."""
    t0 = time.monotonic()
    try:
        out = fn()
    except CodedError as e:
        out = e
    return time.monotonic() - t0, out


def _topic_with_records(cluster: Cluster, admin: Admin, http: Http, topic: str) -> int:
    """Make ``topic`` (one partition, three replicas) with RECORDS records in; its leader, which
    the gateway and ``admin`` have both just asked for its offsets (connected to it)."""
    admin.create_topic(topic, 1, 3)
    cluster.wait_topic_ready(admin, topic)
    http.ok("POST", f"/topics/{topic}/partitions/0", {"records": [{"value": b64(b"v")}] * RECORDS}, BINARY, acks="all")
    assert admin.list_offsets(topic, LATEST) == {0: RECORDS}
    assert http.ok("GET", f"/topics/{topic}/partitions/0/offsets") == {"beginning_offset": 0, "end_offset": RECORDS}
    return admin.metadata().topics[topic].partitions[0].leader


def _ask_both(admin: Admin, http: Http, topic: str, leader_wait_ms: int) -> tuple[tuple, tuple]:
    """The Admin's and the gateway's offsets of ``topic``, asked at once: (seconds, answer) each."""
    with ThreadPoolExecutor(2) as pool:
        by_admin = pool.submit(_timed, lambda: admin.list_offsets(topic, LATEST, leader_wait_ms=leader_wait_ms))
        by_gateway = pool.submit(_timed, lambda: http("GET", f"/topics/{topic}/partitions/0/offsets"))
        return by_admin.result(), by_gateway.result()


def _check(by_admin: tuple, by_gateway: tuple) -> None:
    """Each answered the new leader's offsets or its clear, retriable error, within its bound."""
    took_s, out = by_admin
    assert took_s < CALL_BOUND_S, f"list_offsets took {took_s:.1f} s (bound {CALL_BOUND_S} s): {out!r}"
    assert out == {0: RECORDS} or (isinstance(out, CodedError) and out.retriable), out
    took_s, r = by_gateway
    assert took_s < GATEWAY_BOUND_S, f"the offsets route took {took_s:.1f} s (bound {GATEWAY_BOUND_S} s)"
    assert (r.status_code == 200 and r.json() == {"beginning_offset": 0, "end_offset": RECORDS}) or \
        r.status_code == 503, (r.status_code, r.text)


def test_offsets_while_the_metadata_names_a_killed_leader(cluster: Cluster) -> None:
    http = Http(cluster.raw["nodes"]["gateway"]["port"])
    with Admin(cluster.bootstrap) as admin:
        leader = _topic_with_records(cluster, admin, http, "killed")
        cluster.kill(f"broker-{leader}")
        try:
            by_admin, by_gateway = _ask_both(admin, http, "killed", OFFSETS_LEADER_WAIT_MS)
            _check(by_admin, by_gateway)
            # a killed leader is replaced in under a second, at the latest at its session's end
            wait_ms = cluster.raw["liveness"]["session_timeout_ms"] + OFFSETS_LEADER_WAIT_MS
            assert admin.list_offsets("killed", LATEST, leader_wait_ms=wait_ms) == {0: RECORDS}
        finally:
            cluster.start_node(f"broker-{leader}")
            wait_until(lambda: admin.metadata().brokers[leader].alive, 20, what=f"broker {leader} back")


def test_offsets_while_the_metadata_names_a_paused_leader(cluster: Cluster) -> None:
    http = Http(cluster.raw["nodes"]["gateway"]["port"])
    session_ms = cluster.raw["liveness"]["session_timeout_ms"]
    with Admin(cluster.bootstrap) as admin:
        leader = _topic_with_records(cluster, admin, http, "paused")
        cluster.kill(f"broker-{leader}", signal.SIGSTOP)
        try:
            by_admin, by_gateway = _ask_both(admin, http, "paused", OFFSETS_LEADER_WAIT_MS)
            _check(by_admin, by_gateway)
            # waiting past its session timeout, the answer comes from the leader elected then
            wait_ms = session_ms + 2 * OFFSETS_LEADER_WAIT_MS
            took_s, out = _timed(lambda: admin.list_offsets("paused", LATEST, leader_wait_ms=wait_ms))
            assert out == {0: RECORDS}, out
            assert took_s < (wait_ms + LIST_OFFSETS_TRY_MS_MIN) / 1000 + 1.5, took_s
            assert admin.metadata().topics["paused"].partitions[0].leader != leader
        finally:
            cluster.kill(f"broker-{leader}", signal.SIGCONT)
