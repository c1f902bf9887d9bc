"""A node process stops on a programmer error (and a broker on a failed fsync), and keeps
serving through bad input.

The FAULTS command's ``programmer_error`` hook (accepted only with ``faults.enabled: true``)
raises a TypeError inside a request handler: the node must not answer it as an "internal
error" and carry on, but exit with ``EXIT_PROGRAMMER_ERROR`` so that the supervisor restarts
it from disk. Malformed input, in the same node, still gets a typed error reply.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq

from fabric import protocol as P
from fabric.client import Admin, Consumer, Producer
from fabric import wire
from fabric.errors import RemoteError, RequestTimeout
from nodes.run import EXIT_PROGRAMMER_ERROR, EXIT_STORAGE_FAILED
from tests.harness import Cluster, make_config, wait_until

pytestmark = pytest.mark.timeout(60)


def _coordinator(tmp_path: Path, faults: bool) -> Cluster:
    c = Cluster(make_config(tmp_path, 1, overrides={"faults": {"enabled": faults}}))
    c.start(["coordinator"])
    return c


def _raw_call(endpoint: str, frames: list[bytes]) -> dict:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        assert sock.poll(5000), "no reply"
        return wire.decode_reply(sock.recv_multipart())[0]
    finally:
        sock.close(0)


def test_a_handler_bug_stops_the_node_with_its_exit_code_and_bad_input_does_not(tmp_path: Path) -> None:
    c = _coordinator(tmp_path, faults=True)
    try:
        endpoint = c.endpoint("coordinator")
        assert _raw_call(endpoint, [b"", P.VERSION, P.PING, b"\xc1\xc1"])["error"] == P.MALFORMED_REQUEST
        with pytest.raises(RemoteError) as e:
            c.call("coordinator", P.FAULTS, {"block": "not-a-list"})
        assert e.value.code == P.MALFORMED_REQUEST
        assert c.ping("coordinator")["node"] == "coordinator"
        with pytest.raises(RequestTimeout):  # a bug is not answered as if it were the peer's fault
            c.call("coordinator", P.FAULTS, {"programmer_error": True}, timeout_ms=2000)
        proc = c.procs["coordinator"]
        wait_until(lambda: proc.poll() is not None, 20, what="the node to exit")
        assert proc.returncode == EXIT_PROGRAMMER_ERROR
        log = (c.log_dir / "coordinator.log").read_text()
        assert "programmer error" in log and "TypeError: fault injection" in log
        c.start(["coordinator"])  # what the supervisor does: it comes back from disk
        assert c.ping("coordinator")["node"] == "coordinator"
    finally:
        c.stop_all()


def test_the_programmer_error_hook_is_refused_without_faults_enabled(tmp_path: Path) -> None:
    c = _coordinator(tmp_path, faults=False)
    try:
        with pytest.raises(RemoteError) as e:
            c.call("coordinator", P.FAULTS, {"programmer_error": True})
        assert e.value.code == P.INVALID_CONFIG
        assert c.procs["coordinator"].poll() is None and c.ping("coordinator")["node"] == "coordinator"
    finally:
        c.stop_all()


def test_a_failed_fsync_stops_the_broker_which_restarts_from_disk_with_every_acknowledged_record(
        tmp_path: Path) -> None:
    """A broker whose fdatasync fails cannot trust its page cache to reach the disk any more
    (fsyncgate): it does not log the failure and retry the flush, it stops with
    ``EXIT_STORAGE_FAILED``; started again it recovers its log from disk and serves every
    record it acknowledged."""
    c = Cluster(make_config(tmp_path, 1, overrides={"faults": {"enabled": True}}))
    c.start()
    try:
        with Admin(c.bootstrap) as admin:
            admin.create_topic("t", partitions=1, replication_factor=1)
            c.wait_topic_ready(admin, "t")
        with Producer(c.bootstrap, acks="all") as p:
            first = [p.send("t", b"before-%d" % i) for i in range(20)]
            p.flush(timeout=20)
            assert all(f.result(timeout=0).offset == i for i, f in enumerate(first))
            c.call("broker-1", P.FAULTS, {"fail_next_fsync": True})
            # dirty data for the next interval flush (50 ms) -- unless the first records' flush
            # is the one that fails: then "after" meets a stopping broker, and the producer
            # sends it again to the broker started again (idempotent: once)
            second = p.send("t", b"after")
            proc = c.procs["broker-1"]
            wait_until(lambda: proc.poll() is not None, 20, what="the broker to stop")
            assert proc.returncode == EXIT_STORAGE_FAILED
            log = (c.log_dir / "broker-1.log").read_text()
            assert "a write to disk failed" in log and "Input/output error" in log
            c.start(["broker-1"])  # what the supervisor does
            p.flush(timeout=30)
            assert second.result(timeout=0).offset == 20
        with Consumer(c.bootstrap, auto_offset_reset="earliest") as consumer:
            consumer.assign([("t", 0)])
            got: list = []
            wait_until(lambda: got.extend(consumer.poll(timeout_ms=200)) or len(got) >= 21, 30,
                       what="every acknowledged record")
        assert [r.value for r in got] == [b"before-%d" % i for i in range(20)] + [b"after"]
    finally:
        c.stop_all()
