"""A peer that sends small requests and never reads the replies: what may a node buffer for it?

A FETCH request of ~100 bytes gets a reply of up to ``fetch_bytes_max`` (16 MiB), so a peer
that pipelines FETCHes and never reads could make a broker hold every reply (with a libzmq
socket as the request port, whose send queue is bounded in messages, 10,000 x 16 MiB from one
connection). The request port bounds waiting output in bytes (``fabric.tcp_port``: 16 MiB per
connection, replies past it refused whole): 24 such requests (~2.4 KB sent, ~384 MiB of
replies) leave the broker within its bound."""

from __future__ import annotations

import time

import pytest

from fabric import protocol as P
from fabric import wire
from fabric.client import Producer
from tests.harness import Cluster, wait_until
from tests.zmtp_peer import RawDealer, rss_bytes

pytestmark = pytest.mark.timeout(120)

RECORD_BYTES = 60_000
RECORDS = 300                       # ~18 MiB in the partition: every FETCH reply is full
FETCH_BYTES = 16 * 1024 * 1024
UNREAD_FETCHES = 24                 # ~384 MiB of replies for ~2.4 KB of requests
RSS_BOUND_BYTES = P.REQUEST_BYTES_MAX + 48 * 1024 * 1024
SETTLE_S = 3.0

CLUSTER_OPTIONS = {"brokers": 1}  # one cluster for the module (tests/conftest.py)


@pytest.fixture(scope="module", autouse=True)
def _prepared(module_cluster: Cluster) -> None:
    module_cluster.create_topic("t")
    with Producer(module_cluster.bootstrap, acks=1) as producer:
        for f in [producer.send("t", b"v" * RECORD_BYTES, partition=0) for _ in range(RECORDS)]:
            f.result(timeout=30)


def test_a_peer_that_never_reads_its_replies_cannot_grow_a_broker(cluster: Cluster) -> None:
    pid = cluster.procs["broker-1"].pid
    before = rss_bytes(pid)
    peer = RawDealer("127.0.0.1", cluster.raw["nodes"]["broker-1"]["port"])
    try:
        for i in range(UNREAD_FETCHES):
            peer.send_frames([b"", P.VERSION, P.FETCH, wire.pack(
                {"id": i + 1, "max_bytes": FETCH_BYTES, "parts": [["t", 0, 0, FETCH_BYTES]]})], last_has_more=False)
        wait_until(lambda: cluster.ping("broker-1")["node"] == "broker-1", what="broker answers")
        peak, end = before, time.monotonic() + SETTLE_S
        while time.monotonic() < end:  # bounded: the broker answers the fetches within this
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.1)
        grown = peak - before
        assert grown <= RSS_BOUND_BYTES, \
            f"broker grew by {grown / 2**20:.0f} MiB holding {UNREAD_FETCHES} unread replies"
    finally:
        peer.close()
