"""acks=0 on real processes: fire and forget promises nothing of the broker, but records a
producer was told it sent must have left it. A new producer's first requests wait for the
connection to its leader; its ``close()`` ended before they were written and dropped them with
the socket (``loom produce --acks 0`` of a few lines stored none of them)."""

from __future__ import annotations

import time

from fabric.client import Admin, Consumer, Producer
from tests.harness import Cluster

CLUSTER_OPTIONS: dict = {}  # one 3-broker cluster for the module (tests/conftest.py)
TRIES = 5
RECORDS = 3


def test_records_sent_with_acks_0_by_a_producer_closed_at_once_are_all_stored(cluster: Cluster) -> None:
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("acks-zero", 1)
        cluster.wait_topic_ready(admin, "acks-zero")
    for t in range(TRIES):
        with Producer(cluster.bootstrap, acks=0) as p:  # a new connection each time
            futures = [p.send("acks-zero", b"%d-%d" % (t, i)) for i in range(RECORDS)]
        assert all(f.result(0).offset == -1 for f in futures)
    got: list[bytes] = []
    with Consumer(cluster.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([("acks-zero", 0)])
        deadline = time.monotonic() + 30
        while len(got) < TRIES * RECORDS and time.monotonic() < deadline:
            got += [r.value for r in c.poll(timeout_ms=500)]
    assert sorted(got) == sorted(b"%d-%d" % (t, i) for t in range(TRIES) for i in range(RECORDS))
