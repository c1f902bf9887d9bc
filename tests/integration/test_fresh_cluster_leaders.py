"""A topic made as soon as a cluster is started is led by its preferred replicas.

A started coordinator leads new partitions only by brokers it has heard (nodes/coordinator/topics.py
``place_partitions``); a broker answers PING before its registration lands (it retries every
200 ms while the coordinator is not up), so "every node answers PING" is not "ready". The
harness's ``start`` and ``loom up`` (nodes/launcher.py) wait until the coordinator has heard every
broker that runs. Here the brokers start first, so that their registrations are being retried
when the coordinator comes up: without that wait, the topic is led by the brokers heard first,
and the preferred-leader check moves leadership seconds later."""

from __future__ import annotations

from pathlib import Path

from fabric.client import Admin
from tests.harness import Cluster, make_config

BROKERS = ["broker-1", "broker-2", "broker-3"]


def test_a_topic_made_right_after_the_start_is_led_by_its_preferred_replicas(tmp_path: Path) -> None:
    c = Cluster(make_config(tmp_path))
    try:
        c.start(BROKERS)  # registering against a coordinator that is not up yet
        c.start(["coordinator"])
        assert c.stats("coordinator")["brokers_heard"] == [1, 2, 3]
        with Admin(c.bootstrap) as admin:
            admin.create_topic("t", 6, 3)
            parts = admin.metadata().topics["t"].partitions
            assert [p.leader for p in parts] == [p.replicas[0] for p in parts]
            assert {p.leader for p in parts} == {1, 2, 3}
    finally:
        c.stop_all()
