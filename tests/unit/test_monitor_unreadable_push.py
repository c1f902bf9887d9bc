"""A PUB message the monitor cannot read is counted, logged and dropped (it was counted only,
so nobody could tell which node sent what), and the monitor goes on."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric import protocol as P
from fabric import wire
from fabric.config import load_config
from nodes.local_cluster import make_config
from nodes.monitor import Monitor


@pytest.mark.parametrize("kind, body", [
    (P.PUB_METADATA, b"\xc1"),                                  # not msgpack
    (P.PUB_METADATA, wire.pack({"version": "x"})),              # not metadata
    (P.PUB_METADATA_VERSION, wire.pack({"no_version": 1})),
])
def test_an_unreadable_push_is_counted_and_logged(tmp_path: Path, kind: bytes, body: bytes,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monitor = Monitor(load_config(make_config(tmp_path, 1, extra_nodes=("monitor",)), environ={}), "monitor")
    try:
        monitor._on_sub([b"", P.VERSION, kind, body])
        assert monitor.counters["sub_malformed"] == 1
        assert "unreadable" in caplog.text and kind.decode() in caplog.text
        monitor._on_sub([b"", P.VERSION, P.PUB_HEARTBEAT, wire.pack({"node": "broker-1", "pid": 7})])
        assert monitor.counters["sub_malformed"] == 1
    finally:
        monitor.close()
