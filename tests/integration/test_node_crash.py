"""A node process stops on a programmer error and keeps serving through bad input.

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
from fabric import wire
from fabric.errors import RemoteError, RequestTimeout
from nodes.run import EXIT_PROGRAMMER_ERROR
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
