"""At-least-once through the gateway's consume paths under faults, with real processes (the
checker: gateway_consume_checker.py). Records with unique values go to a 3-partition topic
(replication factor 3) throughout. A ``/ws/consume`` client of a named group confirms what it
read with ``{"commit": "all", "through": SEQ}`` (again when refused) and opens another socket
whenever one ends; a REST consumer instance of the same group (auto-commit off) commits the
offsets it read and makes its instance again when the gateway lost it. One fault after the
other, each followed by more records all delivered: the consumer service hosting the stream
paused until the gateway sees it down, the REST member joining (a rebalance), the consumer
service hosting the REST instance SIGKILLed and started again at once, a partition's leader broker
SIGKILLed, the gateway's worker SIGKILLed (every socket ends, the REST instance is lost), and
the REST member leaving (another rebalance).

Checked besides the ledger's rules: every record acknowledged is delivered; at the end every
partition is committed to its log end, and a fresh stream of the group then gets exactly the
records produced after that -- nothing committed comes again, nothing after it is missing.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest
import websocket

from fabric.client import Admin
from tests.faults.gateway_consume_checker import (GROUP, PARTITIONS, TOPIC, CommitSampler, Ledger, Producer, Reader,
                                                  RestReader, committed, gateway_sees_up, goes_on, log_ends,
                                                  wait_delivered)
from tests.gateway_client import GATEWAY_NODES, ROLE_KEYS, Http, consumer_host, gateway_overrides
from tests.harness import Cluster, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]


def test_ws_consume_with_confirmed_commits_is_at_least_once_under_faults(cluster_factory) -> None:  # noqa: ANN001
    c: Cluster = cluster_factory(3, extra_nodes=GATEWAY_NODES, overrides=gateway_overrides())
    admin = Admin(c.bootstrap)
    admin.create_topic(TOPIC, PARTITIONS, 3)
    c.wait_topic_ready(admin, TOPIC)
    http = Http(c.raw["nodes"]["gateway"]["port"])
    ledger = Ledger()
    port = c.raw["nodes"]["gateway"]["port"]
    a, b = Reader(port, "a", ledger), RestReader(port, "b", ledger)
    producer, sampler = Producer(http, ledger), CommitSampler(http, ledger)
    faults: list[str] = []
    try:
        for t in (producer, a, sampler):
            t.start()
        goes_on(ledger)

        host = consumer_host(c, group=GROUP)
        c.kill(host, signal.SIGSTOP)  # until the gateway sees it down: the stream's instance moves
        try:
            wait_until(lambda: not gateway_sees_up(c, host), 15, what=f"the gateway to see {host} down")
        finally:
            c.kill(host, signal.SIGCONT)
        faults.append(f"{time.time():.3f} SIGSTOP {host} until seen down")
        goes_on(ledger)

        b.start()  # a second member mid-stream, over REST: a rebalance
        faults.append(f"{time.time():.3f} second member joins")
        goes_on(ledger)

        host = consumer_host(c, instance=b.name_)
        c.kill(host)  # its instances are made again (the stream's too, if it was there)
        c.start_node(host, wait=False)  # at once, as the supervisor does
        faults.append(f"{time.time():.3f} SIGKILL {host}")
        goes_on(ledger)

        old = admin.metadata().topics[TOPIC].partitions[0].leader
        c.kill(f"broker-{old}")
        faults.append(f"{time.time():.3f} SIGKILL broker-{old} (leader of partition 0)")
        wait_until(lambda: admin.metadata().topics[TOPIC].partitions[0].leader not in (-1, old), 20,
                   what="a new leader of partition 0")
        goes_on(ledger)
        c.start_node(f"broker-{old}")

        worker = c.ping("gateway")["worker_pid"]
        os.kill(worker, signal.SIGKILL)  # every socket ends; the readers open others
        faults.append(f"{time.time():.3f} SIGKILL the gateway worker")
        wait_until(lambda: c.ping("gateway").get("worker_pid") not in (None, worker), 30, what="a new gateway worker")
        goes_on(ledger)

        b.stop.set()  # the second member leaves: another rebalance
        b.join(10)
        faults.append(f"{time.time():.3f} second member leaves")
        goes_on(ledger)

        producer.stop.set()
        producer.join(30)
        wait_delivered(ledger)
        ends = log_ends(http)
        wait_until(lambda: committed(http) == ends, 30, what=f"every partition committed to its log end {ends}")
    finally:
        for t in (producer, a, b, sampler):
            t.stop.set()
        for t in (producer, a, b, sampler):
            if t.is_alive():
                t.join(10)
    assert not ledger.violations, (ledger.violations[:10], faults)

    try:
        after = nothing_committed_comes_again(a.url, producer)
    finally:
        admin.close()
    print(f"gateway consume hunt: {len(ledger.produced)} records acknowledged ({producer.failed} batches not), "
          f"{after} after the final commits; {ledger.messages} answers to {a.sockets} sockets and {b.sockets} REST "
          f"instances; faults {faults}; commits refused {dict(a.refused + b.refused)}; {sampler.samples} samples "
          "of the committed offsets")


def nothing_committed_comes_again(url: str, producer: Producer) -> int:
    """A fresh stream of the group gets exactly what is produced from now on (every partition
    committed to its log end); how many records that was."""
    fresh = websocket.create_connection(url, timeout=20, header=[f"Authorization: Bearer {ROLE_KEYS['consume']}"])
    got: list[Any] = []
    try:
        after = producer.batch()
        assert after, "the last batch was not acknowledged"
        while len(got) < len(after):
            got += [r["value"] for r in json.loads(fresh.recv()).get("records", [])]
    finally:
        fresh.close()
    assert sorted(got) == after, f"committed records came again: {sorted(set(got) - set(after))[:10]}"
    return len(after)
