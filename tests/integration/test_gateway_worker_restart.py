"""What the gateway does after a bug in a request (tests/unit/test_gateway_programmer_errors.py:
answered 500, then the worker stops itself with SIGTERM): the worker stops gracefully and
gunicorn's master starts a fresh one that serves again -- the gateway node itself (the process
the supervisor watches) keeps running."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import requests

from tests.gateway_client import GATEWAY_NODES, Http, gateway_overrides
from tests.harness import Cluster, make_config, wait_until


def _workers(master_pid: int) -> set[int]:
    try:
        return set(map(int, Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()))
    except OSError:
        return set()


def _health(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _members_after_a_poll(http: Http) -> list[dict]:
    """Group g's members, once c1 has polled (a member joins, and gets its partitions, by polling)."""
    http("GET", "/consumers/g/instances/c1/records", timeout=200)
    return http.ok("GET", "/v3/clusters/test/consumer-groups/g")["members"]


def test_a_worker_stopped_by_a_bug_is_replaced_and_the_gateway_serves_again(tmp_path: Path) -> None:
    """...and the consumer instances the stopped worker made are deleted by the new one: their
    clients get 404 and make them again, under the same names (they were refused 409 while the
    old instances lived on), and the old ones no longer hold their group's partitions."""
    c = Cluster(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES, overrides=gateway_overrides()))
    try:
        c.start()
        port = c.raw["nodes"]["gateway"]["port"]
        http = Http(port)
        master = c.procs["gateway"].pid
        wait_until(lambda: _health(port), 20, what="the gateway answers")
        http.ok("POST", "/v3/clusters/test/topics", {"topic_name": "events", "partitions_count": 2})
        http.ok("POST", "/consumers/g", {"name": "c1", "format": "binary", "auto.offset.reset": "earliest"})
        http.ok("POST", "/consumers/g/instances/c1/subscription", {"topics": ["events"]})
        wait_until(lambda: len(_members_after_a_poll(http)) == 1, 30, what="c1 a member of g")
        (worker,) = wait_until(lambda: _workers(master), 10, what="the gateway's worker")
        os.kill(worker, signal.SIGTERM)  # what gateway.stop_worker does in the worker after a bug
        fresh = wait_until(lambda: _workers(master) - {worker}, 30, what="a fresh worker")
        assert worker not in fresh
        wait_until(lambda: _health(port), 30, what="the gateway answers again")
        assert c.procs["gateway"].poll() is None, "the gateway node itself stopped"
        assert http("GET", "/consumers/g/instances/c1/records").status_code == 404  # the client makes it again
        wait_until(lambda: http("POST", "/consumers/g", {"name": "c1", "format": "binary"}).status_code == 200, 30,
                   what="c1 made again under its name (409 while the old instance lived on)")
        http.ok("POST", "/consumers/g/instances/c1/subscription", {"topics": ["events"]})
        wait_until(lambda: [len(m["assignments"]) for m in _members_after_a_poll(http)] == [2], 30,
                   what="the new c1 the group's only member, with both partitions")
    finally:
        Http.close_all()  # a gateway stopping with a kept-alive connection open waits 2 s for it
        c.stop_all()
