"""A REST produce while every node of the cluster (the coordinator and the brokers) is down,
the gateway and the producer service up: answered 503 (``error_code`` 50301, "nothing was
written") at once -- every node's port refuses the connection, and the gateway does not hold a
worker thread waiting for one to come back (docs/gateway.md, "A whole-cluster outage") -- with a
message that says what happened at each node. Once the nodes are back, the next produce is
written.

Real processes on 127.0.0.1, ports picked free at run time."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from nodes.gateway.agent import PRODUCE_METADATA_MAX_AGE_MS
from tests.gateway_client import BINARY, GATEWAY_NODES, Http, b64, gateway_overrides
from tests.harness import Cluster, running_cluster, wait_until

TOPIC = "outage"
CLUSTER_NODES = ("coordinator", "broker-1")
# a request that waited for any node would take at least an ask's timeout (1 s); loopback
# refuses in well under a millisecond: this leaves a loaded machine a wide margin
AT_ONCE_S = 1.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, 1, extra_nodes=GATEWAY_NODES, overrides=gateway_overrides()) as c:
        yield c
    Http.close_all()


def _refuses(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _produce(http: Http) -> tuple[int, dict, float]:
    started = time.monotonic()
    r = http("POST", f"/topics/{TOPIC}", {"records": [{"value": b64(b"v")}]}, ctype=BINARY)
    return r.status_code, r.json(), time.monotonic() - started


def test_a_produce_during_a_whole_cluster_outage_is_refused_at_once_and_says_why(cluster: Cluster) -> None:
    http = Http(cluster.raw["nodes"]["gateway"]["port"])
    http.ok("POST", "/v3/clusters/test/topics", {"topic_name": TOPIC, "partitions_count": 1, "replication_factor": 1})
    wait_until(lambda: _produce(http)[0] == 200, 20, what="a first produce")
    for name in CLUSTER_NODES:
        cluster.kill(name)
    ports = [cluster.raw["nodes"][name]["port"] for name in CLUSTER_NODES]
    wait_until(lambda: all(map(_refuses, ports)), 10, what="the nodes' ports to refuse")
    down_s = time.monotonic()
    # every metadata fetch that could still succeed began before now: once the age the gateway
    # trusts for a produce is past, none is trusted (the first second is the producer service's)
    wait_until(lambda: time.monotonic() - down_s > PRODUCE_METADATA_MAX_AGE_MS / 1000, 5, what="stale metadata")
    for _ in range(3):  # the first, and the ones after it (no backoff turns them into waits)
        status, body, elapsed_s = _produce(http)
        assert status == 503 and body["error_code"] == 50301, (status, body)
        assert elapsed_s < AT_ONCE_S, f"a produce waited {elapsed_s:.2f} s with every node refusing"
        message = body["message"]
        assert "nothing was written" in message, message
        assert "ECONNREFUSED" in message and all(str(p) in message for p in ports), message
    print(f"\n503 in {elapsed_s * 1000:.0f} ms: {body}")
    cluster.start(list(CLUSTER_NODES))
    back_s = time.monotonic()
    wait_until(lambda: _produce(http)[0] == 200, 30, what="a produce once the nodes are back")
    print(f"\nproduce written {time.monotonic() - back_s:.2f} s after the nodes answered PING")
