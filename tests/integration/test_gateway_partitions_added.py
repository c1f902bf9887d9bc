"""Partitions added to a topic: a produce through the gateway that names a new partition right
away is a valid request. The gateway's fresh look has the partition; the producer service's
producer may still hold metadata from before (it refreshes every few seconds). That older view
is a transient condition: the record must be delivered, or at the least reported retriable
(Confluent's ``error_code`` 2) -- never ``error_code`` 1, which tells the client that no retry
can succeed and so loses the record."""

from __future__ import annotations

import pytest

from fabric.client import Admin
from tests.gateway_client import GATEWAY_NODES, Http, b64, gateway_overrides
from tests.harness import wait_until

pytestmark = pytest.mark.timeout(90)

BINARY = "application/vnd.kafka.binary.v2+json"
TOPIC = "grown"


def test_a_partition_added_just_now_is_not_answered_as_gone_for_good(cluster_factory) -> None:  # noqa: ANN001
    c = cluster_factory(3, extra_nodes=GATEWAY_NODES, overrides=gateway_overrides())
    http = Http(c.raw["nodes"]["gateway"]["port"])
    admin = Admin(c.bootstrap)
    try:
        admin.create_topic(TOPIC, 1, 3)
        c.wait_topic_ready(admin, TOPIC)
        body = {"records": [{"value": b64(b"v")}]}
        first = http.ok("POST", f"/topics/{TOPIC}/partitions/0", body, BINARY, acks="all")
        assert first["offsets"][0]["error_code"] is None, first  # the service's producer knows 1 partition
        admin.alter_topic(TOPIC, partitions=3)
        wait_until(lambda: len(admin.metadata().topics[TOPIC].partitions) == 3
                   and all(p.leader >= 0 for p in admin.metadata().topics[TOPIC].partitions), 20,
                   what="the added partitions to have leaders")
        r = http.ok("POST", f"/topics/{TOPIC}/partitions/2", body, BINARY, acks="all")
        outcome = r["offsets"][0]
        assert outcome["error_code"] != 1, f"a valid record reported as failed for good: {outcome}"
    finally:
        admin.close()
