"""One connection cannot make a node allocate without bound: a raw ZMTP DEALER sends frames of
one multipart message and never the last one, far past the request limit, to a real broker and
to the real coordinator. Each node's resident memory stays within the request limit (plus a
margin) while it happens, the node goes on serving, and when the message finally ends the peer
is answered ``request_too_large``."""

from __future__ import annotations

import pytest

from fabric import protocol as P
from fabric.client import Producer
from tests.harness import Cluster
from tests.zmtp_peer import RawDealer, rss_bytes

pytestmark = pytest.mark.timeout(120)

FRAME_BYTES = 1024 * 1024
SENT_BYTES = 5 * P.REQUEST_BYTES_MAX              # 320 MiB of one unfinished message
RSS_MARGIN_BYTES = 48 * 1024 * 1024               # interpreter, libzmq buffers, allocator slack
RSS_SAMPLE_EVERY_FRAMES = 16

CLUSTER_OPTIONS = {"brokers": 1}  # one cluster for the module (tests/conftest.py)


@pytest.fixture(scope="module", autouse=True)
def _prepared(module_cluster: Cluster) -> None:
    module_cluster.create_topic("t")


def flood_unfinished_message(cluster: Cluster, name: str) -> tuple[int, int, RawDealer]:
    """Send SENT_BYTES of frames of one message to ``name`` without ending it. Returns the
    node's RSS before and the largest RSS seen while sending, and the open connection."""
    pid = cluster.procs[name].pid
    before = rss_bytes(pid)
    peer = RawDealer("127.0.0.1", cluster.raw["nodes"][name]["port"])
    peer.start_request()
    frame, peak = b"\xab" * FRAME_BYTES, before
    for i in range(SENT_BYTES // FRAME_BYTES):
        peer.send_frames([frame], last_has_more=True)
        if i % RSS_SAMPLE_EVERY_FRAMES == 0:
            peak = max(peak, rss_bytes(pid))
    return before, max(peak, rss_bytes(pid)), peer


@pytest.mark.parametrize("name", ["broker-1", "coordinator"])
def test_an_unfinished_multipart_message_cannot_grow_a_node(cluster: Cluster, name: str) -> None:
    before, peak, peer = flood_unfinished_message(cluster, name)
    try:
        grown = peak - before
        assert grown <= P.REQUEST_BYTES_MAX + RSS_MARGIN_BYTES, \
            f"{name} grew by {grown / 2**20:.0f} MiB for one unfinished request of {SENT_BYTES / 2**20:.0f} MiB"
        assert cluster.ping(name)["node"] == name  # still serving while the message is open
        with Producer(cluster.bootstrap, acks="all", delivery_timeout_ms=10_000) as producer:
            assert producer.send("t", b"after the flood").result(timeout=10).offset >= 0
        peer.send_frames([b"end"], last_has_more=False)
        reply = peer.read_reply()
        assert reply["error"] == P.REQUEST_TOO_LARGE and reply["id"] == 4242, reply
    finally:
        peer.close()
