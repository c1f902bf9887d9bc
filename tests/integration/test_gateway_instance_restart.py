"""A consumer instance's request in flight when its consumer service is SIGKILLed and started
again on its endpoint (as the supervisor of ``make up`` does): the gateway sees the request's
connection end and makes the instance again at once, instead of waiting out the request's
timeout (a fetch's ``timeout`` plus 10 s) for a reply the killed process took along. A REST long
poll is answered, and a ``/ws/consume`` stream goes on (``{"ready": false}``, then records),
well before that; in both, nothing committed is delivered again and no committed offset goes
back. And a service paused until the gateway sees it down: the instance made again elsewhere
leaves nothing behind there to hold partitions once the service resumes."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from fabric.client.services import CALL_TIMEOUT_MS
from tests.gateway_client import GATEWAY_NODES, ROLE_KEYS, Http, consumer_host, gateway_overrides
from tests.harness import Cluster, wait_until

pytestmark = pytest.mark.timeout(120)

# one cluster for the module (tests/conftest.py: module_cluster)
CLUSTER_OPTIONS = {"brokers": 1, "extra_nodes": GATEWAY_NODES, "overrides": gateway_overrides()}
LONG_POLL_MS = 1000
# what the request in flight waited before anything was done about it: its timeout, and the
# consumer-service call's 10 s on top of a fetch's own wait
OLD_WAIT_S = (LONG_POLL_MS + CALL_TIMEOUT_MS) / 1000
# the answer must come well before that; the margin up to it is for a slow machine (the
# instance is made again once the service is back or seen down: ~1-2 s, then a fetch)
SOON_S = OLD_WAIT_S - 4
SESSION = {"session.timeout.ms": "1500"}  # the killed member leaves its group soon


@pytest.fixture(scope="module")
def http(module_cluster: Cluster) -> Http:
    return Http(module_cluster.raw["nodes"]["gateway"]["port"])


def make_topic(http: Http, name: str, partitions: int = 3) -> None:
    http.ok("POST", "/v3/clusters/test/topics", {"topic_name": name, "partitions_count": partitions,
                                                 "replication_factor": 1})
    wait_until(lambda: all(p["leader"] is not None for p in
                           http.ok("GET", f"/v3/clusters/test/topics/{name}/partitions")["data"]), 20,
               what=f"{name} to have leaders")


def committed(http: Http, group: str) -> dict[tuple[str, int], int]:
    return {(r["topic_name"], r["partition_id"]): r["current_offset"]
            for r in http.ok("GET", f"/v3/clusters/test/consumer-groups/{group}/lags")["data"]}


def fetches(cluster: Cluster, node: str) -> int:
    return cluster.stats(node)["counters"].get("instance_fetch", 0)


def kill_with_a_fetch_in_flight(cluster: Cluster, host: str, before: int) -> float:
    """SIGKILL ``host`` once a fetch after the ``before``-th has reached it, and start it again
    on its endpoint without waiting (the supervisor's restart); the time of the kill."""
    wait_until(lambda: fetches(cluster, host) > before, 10, what="a fetch in flight at the consumer service")
    cluster.kill(host)
    killed = time.monotonic()
    cluster.start_node(host, wait=False)
    return killed


def never_back(before: dict, after: dict) -> None:
    assert all(after.get(tp, -1) >= o for tp, o in before.items()), f"a committed offset went back: {before} -> {after}"


def test_a_long_poll_in_flight_when_its_service_is_killed_is_answered_soon(cluster: Cluster, http: Http) -> None:
    make_topic(http, "inflight")
    http.ok("POST", "/topics/inflight", {"records": [{"key": i, "value": i} for i in range(30)]})
    http.ok("POST", "/consumers/g-inflight", {"name": "lp", "format": "json", "auto.offset.reset": "earliest",
                                              "auto.commit.enable": "false", **SESSION})
    base = "/consumers/g-inflight/instances/lp"
    http.ok("POST", base + "/subscription", {"topics": ["inflight"]})
    seen: list[dict] = []
    wait_until(lambda: seen.extend(http.ok("GET", base + "/records", timeout=500)) or len(seen) >= 30, 20,
               what="the 30 records")
    http.ok("POST", base + "/offsets", {})
    before = committed(http, "g-inflight")
    assert sum(before.values()) == 30

    host = consumer_host(cluster, group="g-inflight")
    answer: dict[str, Any] = {}

    def long_poll() -> None:
        r = http("GET", base + "/records", timeout=LONG_POLL_MS)
        answer.update(status=r.status_code, body=r.json(), at=time.monotonic())
    poll = threading.Thread(target=long_poll, daemon=True)
    count = fetches(cluster, host)
    poll.start()
    killed = kill_with_a_fetch_in_flight(cluster, host, count)
    poll.join(OLD_WAIT_S + 20)
    assert answer.get("status") == 200, answer
    elapsed = answer["at"] - killed
    assert elapsed < SOON_S, f"answered {elapsed:.1f} s after the kill (the lost request's timeout: {OLD_WAIT_S} s)"
    seen += answer["body"]  # nothing after the commit: empty, as a long poll that found nothing

    http.ok("POST", "/topics/inflight", {"records": [{"key": i, "value": 100 + i} for i in range(10)]})
    later: list[dict] = []
    wait_until(lambda: later.extend(http.ok("GET", base + "/records", timeout=500)) or len(later) >= 10, 30,
               what="the records produced after the restart")
    seen += later
    assert sorted(r["value"] for r in later) == [100 + i for i in range(10)], "resumes at the committed offsets"
    keys = [(r["partition"], r["offset"]) for r in seen]
    assert len(keys) == len(set(keys)), "a committed record was delivered again"
    http.ok("POST", base + "/offsets", {})
    after = committed(http, "g-inflight")
    never_back(before, after)
    assert sum(after.values()) == 40
    http.ok("DELETE", base)


def test_a_ws_consume_stream_whose_service_is_killed_goes_on_soon(cluster: Cluster, http: Http) -> None:
    import websocket

    make_topic(http, "wsinflight")
    http.ok("POST", "/topics/wsinflight", {"records": [{"key": i, "value": i} for i in range(20)]})
    port = cluster.raw["nodes"]["gateway"]["port"]
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{port}/ws/consume?topic=wsinflight&group=g-wsin&from=beginning&auto_commit=false",
        header=[f"Authorization: Bearer {ROLE_KEYS['consume']}"], timeout=30)
    try:
        seen: list[dict] = []

        def read_until(done: Any) -> dict:
            while True:
                msg = json.loads(ws.recv())
                seen.extend(msg.get("records", []))
                if done(msg):
                    return msg
        read_until(lambda _: len(seen) >= 20)
        ws.send(json.dumps({"commit": "all"}))
        assert read_until(lambda m: "committed" in m)["committed"] is True
        before = committed(http, "g-wsin")
        assert sum(before.values()) == 20

        host = consumer_host(cluster, group="g-wsin")
        killed = kill_with_a_fetch_in_flight(cluster, host, fetches(cluster, host))
        # the stream goes on with the instance made again and says so: ready false while it
        # joins its group (ready true if already positioned) -- records follow once the group
        # has let the killed member go (its session timeout), which no gateway can hurry
        read_until(lambda m: "ready" in m)
        elapsed = time.monotonic() - killed
        assert elapsed < SOON_S, f"the stream went on {elapsed:.1f} s after the kill (the lost fetch's timeout: 10.5 s)"
        http.ok("POST", "/topics/wsinflight", {"records": [{"key": i, "value": 100 + i} for i in range(10)]})
        read_until(lambda _: sum(r["value"] >= 100 for r in seen) >= 10)
        keys = [(r["partition"], r["offset"]) for r in seen]
        assert len(keys) == len(set(keys)), "a committed record was delivered again"
        assert sorted(r["value"] for r in seen) == list(range(20)) + [100 + i for i in range(10)]
        ws.send(json.dumps({"commit": "all"}))
        assert read_until(lambda m: "committed" in m)["committed"] is True
        after = committed(http, "g-wsin")
        never_back(before, after)
        assert sum(after.values()) == 30
    finally:
        ws.close()


def test_an_instance_moved_off_a_paused_service_leaves_nothing_behind_there(cluster: Cluster, http: Http) -> None:
    """A consumer service paused (SIGSTOP) long enough for the gateway to see it down: the
    gateway makes the instance again on a live service. The old instance lives on in the paused
    process and, resumed, was a member of the group again -- holding partitions nobody fetches
    until its idle expiry (5 minutes): their records were not delivered meanwhile."""
    import signal

    make_topic(http, "paused", partitions=2)
    http.ok("POST", "/consumers/g-paused", {"name": "pz", "format": "json", "auto.offset.reset": "earliest",
                                            "auto.commit.enable": "false"})
    base = "/consumers/g-paused/instances/pz"
    http.ok("POST", base + "/subscription", {"topics": ["paused"]})
    http.ok("POST", "/topics/paused", {"records": [{"key": i, "value": i} for i in range(10)]})
    seen: list[dict] = []
    wait_until(lambda: seen.extend(http.ok("GET", base + "/records", timeout=500)) or len(seen) >= 10, 20,
               what="the first 10 records")
    host = consumer_host(cluster, group="g-paused")
    cluster.kill(host, signal.SIGSTOP)
    try:
        wait_until(lambda: not cluster.stats("gateway")["nodes_up"].get(host, True), 15,
                   what=f"the gateway to see {host} down")
        http.ok("GET", base + "/records", timeout=0)  # made again on the other service
    finally:
        cluster.kill(host, signal.SIGCONT)
    http.ok("POST", "/topics/paused", {"records": [{"key": i, "value": 100 + i} for i in range(20)]})
    later: list[dict] = []
    wait_until(lambda: later.extend(http.ok("GET", base + "/records", timeout=500)) or
               {r["value"] for r in later} >= {100 + i for i in range(20)}, 30,
               what="every record produced after the pause, from both partitions")
    assert {r["partition"] for r in later if r["value"] >= 100} == {0, 1}
    http.ok("DELETE", base)
