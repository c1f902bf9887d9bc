"""A consumer service stopped by SIGTERM, with a real cluster: the fetch in flight on one of its
instances (a long poll) is answered, not dropped with the connection; its instances leave
their groups, so the other member takes every partition at once instead of after the
instance's session timeout (30 s here); and the service exits 0 well inside the supervisor's
SIGKILL escalation. Through the gateway: a REST long poll in flight is answered, and the
instance is made again on the other consumer service -- none of its requests is answered 404
(the instance lost) -- where it reads every record produced after the stop.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from fabric.client import Admin
from fabric.client.services import ServiceConsumer
from tests.gateway_client import GATEWAY_NODES, Http, consumer_host, gateway_overrides
from tests.harness import Cluster, wait_until

TOPIC = "cdrain"
GROUP = "cdrain-group"
SESSION_TIMEOUT_MS = 30_000  # the rebalance must not wait for it
CONFIG = {"session_timeout_ms": SESSION_TIMEOUT_MS, "heartbeat_interval_ms": 300, "auto_offset_reset": "earliest"}
CLUSTER_OPTIONS = {"brokers": 1, "extra_nodes": GATEWAY_NODES, "overrides": gateway_overrides()}


class _Fetch(threading.Thread):
    """One long CONSUMER_FETCH on its own thread: ``records`` or ``error`` once answered."""

    def __init__(self, instance: Any, timeout_ms: int) -> None:
        super().__init__(daemon=True)
        self.instance, self.timeout_ms = instance, timeout_ms
        self.records: list | None = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self.records = self.instance.fetch(timeout_ms=self.timeout_ms)
        except Exception as e:  # noqa: BLE001 - the test asserts on it
            self.error = e


def test_sigterm_answers_the_fetch_in_flight_and_its_members_leave_their_groups_at_once(cluster: Cluster) -> None:
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic(TOPIC, 2, 1)
        cluster.wait_topic_ready(admin, TOPIC)
    leaving, staying = ServiceConsumer(cluster.endpoint("consumer-1")), ServiceConsumer(cluster.endpoint("consumer-2"))
    try:
        a, b = leaving.create(GROUP, "a", CONFIG), staying.create(GROUP, "b", CONFIG)
        a.subscribe([TOPIC])
        b.subscribe([TOPIC])

        def split() -> bool:  # each member holds one partition (fetches drive their joins)
            a.fetch(timeout_ms=100)
            b.fetch(timeout_ms=100)
            return len(a.assignment()) == 1 and len(b.assignment()) == 1
        wait_until(split, 30, what="the group to give each member one partition")
        fetches = cluster.stats("consumer-1")["counters"].get("instance_fetch", 0)
        long_poll = _Fetch(a, timeout_ms=20_000)
        long_poll.start()
        wait_until(lambda: cluster.stats("consumer-1")["counters"].get("instance_fetch", 0) > fetches, 5,
                   what="the long fetch taken")
        service = cluster.procs["consumer-1"]
        stopped_at = time.monotonic()
        os.kill(service.pid, signal.SIGTERM)
        long_poll.join(10)
        assert not long_poll.is_alive() and long_poll.error is None, f"the fetch in flight: {long_poll.error!r}"
        assert long_poll.records == []

        def b_holds_both() -> bool:
            b.fetch(timeout_ms=100)
            return len(b.assignment()) == 2
        wait_until(b_holds_both, 10, what="the other member to take every partition")
        assert time.monotonic() - stopped_at < SESSION_TIMEOUT_MS / 3000, "the group waited for a session timeout"
        assert service.wait(timeout=10) == 0
    finally:
        leaving.close()
        staying.close()
    cluster.start_node("consumer-1")


def test_the_gateway_answers_a_long_poll_and_moves_the_instance_off_a_stopping_service(cluster: Cluster) -> None:
    http = Http(cluster.raw["nodes"]["gateway"]["port"])
    http.ok("POST", "/v3/clusters/test/topics", {"topic_name": "rdrain", "partitions_count": 2, "replication_factor": 1})
    wait_until(lambda: all(p["leader"] is not None for p in
                           http.ok("GET", "/v3/clusters/test/topics/rdrain/partitions")["data"]), 20, what="leaders")
    http.ok("POST", "/consumers/g-rdrain", {"name": "r", "format": "json", "auto.offset.reset": "earliest",
                                            "session.timeout.ms": str(SESSION_TIMEOUT_MS)})
    base = "/consumers/g-rdrain/instances/r"
    http.ok("POST", base + "/subscription", {"topics": ["rdrain"]})
    host = consumer_host(cluster, instance="r")
    service = cluster.procs[host]
    answer: dict[str, Any] = {}

    def long_poll() -> None:
        r = http("GET", base + "/records", timeout=20_000)
        answer.update(status=r.status_code, body=r.json())
    poll = threading.Thread(target=long_poll, daemon=True)
    count = cluster.stats(host)["counters"].get("instance_fetch", 0)
    poll.start()
    wait_until(lambda: cluster.stats(host)["counters"].get("instance_fetch", 0) > count, 10, what="the long poll taken")
    stopped_at = time.monotonic()
    os.kill(service.pid, signal.SIGTERM)
    poll.join(15)
    assert (answer.get("status"), answer.get("body")) == (200, []), answer
    assert time.monotonic() - stopped_at < 10, "the long poll waited out its timeout"
    http.ok("POST", "/topics/rdrain", {"records": [{"key": i, "value": 100 + i} for i in range(10)]})
    later: list[dict] = []

    def fetch_later() -> bool:
        r = http("GET", base + "/records", timeout=500)
        assert r.status_code in (200, 503), (r.status_code, r.text)  # 503 / 50301 until the gateway sees it stopping
        later.extend(r.json() if r.status_code == 200 else [])
        return len(later) >= 10
    wait_until(fetch_later, 30, interval_s=0.2, what="the records produced after the stop")
    assert sorted(r["value"] for r in later) == [100 + i for i in range(10)], "every record, once"
    assert service.wait(timeout=10) == 0
    other = "consumer-2" if host == "consumer-1" else "consumer-1"
    assert [i["instance"] for i in cluster.call(other, b"CI_LIST")[0]["instances"]] == ["r"]
    http.ok("DELETE", base)
    cluster.start_node(host)
