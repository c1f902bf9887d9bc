"""A topic made as soon as a cluster is started is led by its preferred replicas.

A started coordinator leads new partitions only by brokers it has heard (nodes/coordinator/topics.py
``place_partitions``); a broker answers PING before its registration lands (it retries every
200 ms while the coordinator is not up), so "every node answers PING" is not "ready". The
harness's ``start`` and ``loom up`` (nodes/launcher.py) wait until the coordinator has heard every
broker that runs. Here the brokers start first, so that their registrations are being retried
when the coordinator comes up: without that wait, the topic is led by the brokers heard first,
and the preferred-leader check moves leadership seconds later.

A topic made while the cluster is still starting all the same (a second terminal, a script that
does not wait for `loom up`, the gateway's auto-create) is led by the brokers heard then, and
each partition moves to its preferred replica as soon as the coordinator hears that broker
(nodes/coordinator/broker_liveness.py ``_on_broker_up``) -- not at the periodic check, up to
``replication.preferred_leader_check_ms`` later (5 s by default; a minute here, so that it
cannot be what moves them)."""

from __future__ import annotations

from pathlib import Path

from fabric.client import Admin
from tests.harness import Cluster, make_config, wait_until

BROKERS = ["broker-1", "broker-2", "broker-3"]
MOVED_S = 1.5  # from the coordinator hearing the brokers: far below any periodic check


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


def test_a_topic_made_while_the_cluster_starts_moves_to_its_preferred_replicas_as_they_are_heard(tmp_path: Path) -> None:
    c = Cluster(make_config(tmp_path, overrides={"replication": {"preferred_leader_check_ms": 60_000}}))
    try:
        c.start(["coordinator", "broker-1"])  # the cluster is starting: broker 1 is heard, 2 and 3 are not yet
        with Admin(c.bootstrap) as admin:
            admin.create_topic("t", 3, 3)
            parts = admin.metadata().topics["t"].partitions
            assert [p.replicas[0] for p in parts] == [1, 2, 3]  # spread preferred replicas...
            assert [p.leader for p in parts] == [1, 1, 1]  # ...led by the only broker heard
            c.start(["broker-2", "broker-3"], wait=False)
            c.wait_heard(["broker-2", "broker-3"])

            def leaders() -> list[int]:
                return [p.leader for p in admin.metadata().topics["t"].partitions]
            wait_until(lambda: leaders() == [1, 2, 3], MOVED_S, what="each partition led by its preferred replica")
            c.wait_topic_ready(admin, "t")  # and the brokers lead what the metadata says
    finally:
        c.stop_all()
