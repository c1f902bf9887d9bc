"""Fault scenario: a hostile unfinished multipart message during the acks=all workload.

A raw ZMTP peer opens one request on the partition leader, a follower and the coordinator and
sends frames far past the request limit without ever ending the message, while the
idempotent acks=all workload runs. Each node's resident memory stays within the request limit
(plus a margin), the workload keeps being acknowledged, each peer is answered
``request_too_large`` when its message ends, and the Jepsen-style checker (``workload_checker.py``)
finds no acknowledged record lost or duplicated and replicas identical up to the HW.
"""

from __future__ import annotations

import pytest

from fabric import protocol as P
from tests.faults import workload_checker as J
from tests.zmtp_peer import RawDealer, rss_bytes

pytestmark = pytest.mark.faults

FRAME_BYTES = 1024 * 1024
SENT_BYTES = 3 * P.REQUEST_BYTES_MAX
RSS_MARGIN_BYTES = 48 * 1024 * 1024
RSS_SAMPLE_EVERY_FRAMES = 16


def _flood(cluster, name: str) -> RawDealer:  # noqa: ANN001 - a tests.harness.Cluster
    """One unfinished request of SENT_BYTES to ``name``; asserts its RSS stayed bounded."""
    pid = cluster.procs[name].pid
    before = peak = rss_bytes(pid)
    peer = RawDealer("127.0.0.1", cluster.raw["nodes"][name]["port"], identity=f"hostile-{name}".encode())
    peer.start_request()
    frame = b"\xcd" * FRAME_BYTES
    for i in range(SENT_BYTES // FRAME_BYTES):
        peer.send_frames([frame], last_has_more=True)
        if i % RSS_SAMPLE_EVERY_FRAMES == 0:
            peak = max(peak, rss_bytes(pid))
    grown = max(peak, rss_bytes(pid)) - before
    assert grown <= P.REQUEST_BYTES_MAX + RSS_MARGIN_BYTES, f"{name} grew by {grown / 2**20:.0f} MiB"
    return peer


def test_hostile_unfinished_multipart_messages_during_acks_all_load(cluster_factory) -> None:  # noqa: ANN001
    c = cluster_factory(3, fsync="always", overrides={"faults": {"enabled": True}})
    admin, w, obs = J.setup(c)
    peers = []
    try:
        for name in (J.leader_name(admin, 0), J.follower_name(admin, 0), "coordinator"):
            acked_before = len(w.acked)
            peers.append(_flood(c, name))
            w.wait_acks(100, timeout_s=30)  # the workload goes on while the message stays open
            assert len(w.acked) > acked_before
        for peer in peers:
            peer.send_frames([b"end"], last_has_more=False)
            reply = peer.read_reply()
            assert reply["error"] == P.REQUEST_TOO_LARGE, reply
        w.wait_acks(200, timeout_s=30)
    finally:
        for peer in peers:
            peer.close()
    J.finish(c, admin, w, obs)
