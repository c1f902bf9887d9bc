"""The monitor against real processes (no supervisor): /metrics in Prometheus' format with
produce counters that add up, a consumer-lag alert that fires and resolves, webhooks that get
firing and resolved alerts while a webhook that never answers delays nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest
import zmq

from fabric import protocol as P
from fabric import wire
from fabric.client import Admin, Producer
from fabric.client.group_admin import GroupAdmin
from fabric.client.monitor import MonitorClient
from tests.harness import Cluster, wait_until
from tests.integration.monitor_support import alert, monitor_config, scrape

pytestmark = pytest.mark.timeout(120)
RECORDS = 500
LAG_THRESHOLD = 50


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Receiver.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, int, MonitorClient]]:
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    black_hole = socket.socket()  # accepts connections (backlog) and never answers
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(16)
    webhooks = [{"url": f"http://127.0.0.1:{black_hole.getsockname()[1]}/hook", "timeout_ms": 30_000, "retries": 5},
                {"url": f"http://127.0.0.1:{receiver.server_port}/hook", "timeout_ms": 2000}]
    path, port = monitor_config(tmp_path_factory.mktemp("monitor"), extra_nodes=("producer",), monitor={
        "webhooks": webhooks, "slow_response_ms": 5000,
        "alerts": {"consumer_lag": {"threshold": LAG_THRESHOLD, "for_ms": 1000}}})
    cluster = Cluster(path)
    client = MonitorClient(cluster.endpoint("monitor"))
    try:
        cluster.start()
        yield cluster, port, client
    finally:
        client.close()
        cluster.stop_all()
        receiver.shutdown()
        black_hole.close()


def _records_in(port: int, topic: str) -> float:
    fam = scrape(port).get("loom_broker_records_in")
    return sum(s.value for s in fam.samples if s.labels.get("topic") == topic) if fam else 0.0


def _topic_with_records(cluster: Cluster, topic: str, partitions: int, records: int) -> Admin:
    """Create ``topic`` and produce ``records`` with acks=all; returns an open Admin."""
    admin = Admin(cluster.bootstrap)
    admin.create_topic(topic, partitions=partitions)
    cluster.wait_topic_ready(admin, topic)
    producer = Producer(cluster.bootstrap, acks=-1)
    for i in range(records):
        producer.send(topic, b"value-%d" % i, key=b"k%d" % (i % 11))
    producer.flush()
    producer.close()
    return admin


def test_metrics_parse_and_produce_counters_add_up(env: tuple[Cluster, int, MonitorClient]) -> None:
    cluster, port, client = env

    def polled_brokers() -> set[str]:
        fam = scrape(port).get("loom_process_cpu_seconds")
        return {s.labels["node"] for s in fam.samples} if fam else set()
    # a rate needs two polls of a counter: records produced before the monitor's first poll of
    # their broker are counted in /metrics but give no point in the history
    wait_until(lambda: polled_brokers() >= set(cluster.broker_names()), 15, what="a first poll of every broker")
    admin = _topic_with_records(cluster, "counted", 3, RECORDS)
    wait_until(lambda: _records_in(port, "counted") == RECORDS, 15, what=f"{RECORDS} records in /metrics")
    families = scrape(port)
    produce = [s for s in families["loom_request_duration_seconds"].samples
               if s.labels.get("command") == "PRODUCE" and s.name.endswith("_count")]
    assert produce and all(s.labels["node"].startswith("broker-") for s in produce)
    assert families["loom_cluster_partitions"].samples[0].value >= 3
    assert {s.labels["node"] for s in families["loom_node_up"].samples if s.value == 1} >= {"coordinator", "broker-1"}
    text, content_type = client.metrics_text()  # the gateway's path: the same text over RPC
    assert b"loom_broker_records_in_total" in text and content_type.startswith("text/plain")
    wait_until(lambda: any(client.history(["records_in_per_s"])["series"].get("records_in_per_s", ())), 10,
               what="records/s in the history")
    admin.close()


def test_consumer_lag_alert_fires_and_resolves(env: tuple[Cluster, int, MonitorClient]) -> None:
    cluster, port, client = env
    admin = _topic_with_records(cluster, "lagged", 1, 2 * LAG_THRESHOLD)
    groups = GroupAdmin(admin)
    # the group consumed nothing past offset 0 and stopped: it lags by everything produced
    groups.execute_reset("slow-group", groups.plan_reset("slow-group", "lagged", to_earliest=True))
    firing = wait_until(lambda: alert(client, "consumer_lag", "slow-group", "firing"), 20, what="the lag alert")
    assert firing["value"] == 2 * LAG_THRESHOLD
    groups.execute_reset("slow-group", groups.plan_reset("slow-group", "lagged", to_latest=True))  # caught up
    wait_until(lambda: alert(client, "consumer_lag", "slow-group", "resolved"), 20, what="the lag alert to resolve")
    lag = scrape(port)["loom_consumer_group_lag_records"]
    assert [s.value for s in lag.samples if s.labels["group"] == "slow-group"] == [0]
    admin.close()


def test_webhooks_get_firing_and_resolved_and_a_dead_one_delays_nothing(env: tuple[Cluster, int, MonitorClient]) -> None:
    cluster, port, client = env
    interval_s = 0.3
    sub = zmq.Context.instance().socket(zmq.SUB)  # what the gateway's /ws/events listens to
    sub.setsockopt(zmq.SUBSCRIBE, P.TOPIC_EVENT)
    sub.connect(f"tcp://127.0.0.1:{cluster.raw['nodes']['monitor']['pub_port']}")
    before = client.status()["checks"]
    t0 = time.monotonic()
    cluster.kill("broker-3")  # no supervisor here: the monitor reports it, nobody restarts it
    fired = wait_until(lambda: alert(client, "node_down", "broker-3", "firing"), 10, what="broker-3 down alert")
    cluster.start_node("broker-3")
    wait_until(lambda: alert(client, "node_down", "broker-3", "resolved"), 20, what="broker-3 down alert to resolve")
    elapsed_s = time.monotonic() - t0
    checks = client.status()["checks"] - before
    # the black-hole webhook holds one POST for 30 s per try: had it run on the check path,
    # hardly any check would have happened
    assert checks >= 0.5 * elapsed_s / interval_s, (checks, elapsed_s)
    assert fired["message"].startswith("broker-3 (broker) is down")

    def delivered(state: str) -> bool:
        return any(m["event"].get("rule") == "node_down" and m["event"].get("subject") == "broker-3"
                   and m["event"].get("state") == state for m in _Receiver.received)
    wait_until(lambda: delivered("firing") and delivered("resolved"), 10, what="webhook deliveries")
    hooks = cluster.stats("monitor")["webhooks"]
    assert hooks[0]["delivered"] == 0 and hooks[1]["delivered"] >= 2
    published = []
    while sub.poll(0):
        frames = sub.recv_multipart()
        assert frames[0] == P.TOPIC_EVENT and frames[2] == P.PUB_EVENT
        published.append(wire.unpack(frames[3]))
    sub.close(0)
    assert any(e.get("rule") == "node_down" and e.get("subject") == "broker-3" and e.get("state") == "firing"
               for e in published)


def test_a_node_no_supervisor_runs_is_reported_never_killed(env: tuple[Cluster, int, MonitorClient]) -> None:
    cluster, port, client = env
    pid = cluster.procs["producer"].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: alert(client, "node_unresponsive", "producer", "firing"), 15, what="unresponsive alert")
        event = wait_until(lambda: [e for e in client.events()["events"]
                                    if e.get("action") == "not_restarted" and e.get("node") == "producer"], 10,
                           what="the monitor to report it")[0]
        assert "no supervisor runs it" in event["reason"]
        assert cluster.procs["producer"].poll() is None  # still there, still stopped
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: alert(client, "node_unresponsive", "producer", "resolved"), 15, what="the alert to resolve")
