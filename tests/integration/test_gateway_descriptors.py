"""The gateway's descriptors under churn stay within a small bound of where they started.

A consumer instance made while a consumer service is down goes to the live ones through a
client made for that one call; the client must be closed with the call, as the one ``_make_again``
uses is. Left open, every REST consumer instance (and every /ws/consume stream) made while one
consumer service was down kept a connection to a live service and three ZeroMQ sockets in the
gateway's worker, four descriptors each, until the process ended: a few hundred instances then
ran the worker out of ZeroMQ sockets (1,023 a context by default)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.gateway_client import GATEWAY_NODES, Http, gateway_overrides
from tests.harness import Cluster, wait_until

pytestmark = pytest.mark.timeout(60)

WARM_UP_ROUNDS = 10  # the request threads' own clients are made in the first rounds
ROUNDS = 40
# what the gateway's request threads may still add after the warm-up (a thread the pool adds
# makes its own clients); a leak of four a round is 160
DESCRIPTORS_SLACK = 12


def worker_pid(cluster: Cluster) -> int:
    """The gateway's (one) gunicorn worker, whose descriptors are the cluster's side."""
    master = cluster.procs["gateway"].pid
    return int(Path(f"/proc/{master}/task/{master}/children").read_text().split()[0])


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def make_and_delete_instance(http: Http, i: int) -> None:
    group = f"g-fd-{i}"
    http.ok("POST", f"/consumers/{group}", {"name": "i", "format": "json"})
    http.ok("DELETE", f"/consumers/{group}/instances/i")


def test_instances_made_while_a_consumer_service_is_down_leave_no_descriptors_behind(cluster_factory) -> None:
    c = cluster_factory(1, extra_nodes=GATEWAY_NODES, overrides=gateway_overrides())
    http = Http(c.raw["nodes"]["gateway"]["port"])
    c.kill("consumer-2")
    wait_until(lambda: c.stats("gateway")["nodes_up"].get("consumer-2") is False, 10,
               what="the gateway to see consumer-2 down")
    for i in range(WARM_UP_ROUNDS):
        make_and_delete_instance(http, i)
    pid = worker_pid(c)
    before = descriptors(pid)
    for i in range(WARM_UP_ROUNDS, WARM_UP_ROUNDS + ROUNDS):
        make_and_delete_instance(http, i)
    wait_until(lambda: descriptors(pid) <= before + DESCRIPTORS_SLACK, 5,
               what=f"the gateway worker's descriptors back near {before} (now {descriptors(pid)})")
