"""``loom status`` right after ``loom up``: the monitor has not probed the nodes yet (every one
``unknown``, "no sign of life yet"), and its view said "cluster: down (coordinator down, brokers
up: 0)" of a cluster that was up. A view in which a node is still unknown is not shown: each
node is asked directly, as without a monitor. A view that knows every node is shown as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nodes import cli_monitor
from nodes.cli import main
from tests.harness import make_config


class FakeMonitor:
    def __init__(self, node_state: str) -> None:
        self.node_state = node_state

    def status(self) -> dict[str, Any]:
        up = self.node_state == "healthy"
        nodes = [{"node": n, "role": r, "host": "127.0.0.1", "port": 1, "state": self.node_state, "pid": None,
                  "restarts": 0, "reason": "" if up else "no sign of life yet"}
                 for n, r in (("coordinator", "coordinator"), ("broker-1", "broker"))]
        nodes.append({"node": "monitor", "role": "monitor", "host": "127.0.0.1", "port": 2, "state": "healthy",
                      "pid": 1, "restarts": 0, "reason": ""})
        return {"cluster": {"name": "test", "state": "healthy" if up else "down", "coordinator_up": up,
                            "brokers_up": int(up), "topics": 0, "partitions": 0, "under_replicated": 0, "offline": 0},
                "nodes": nodes, "rates": {"records_in_per_s": 0.0, "records_out_per_s": 0.0}, "alerts_firing": 0}

    def close(self) -> None:
        pass


def _status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, node_state: str) -> Any:
    config_path = make_config(tmp_path, 1, extra_nodes=("monitor",))  # nothing listens on its ports
    monkeypatch.setattr(cli_monitor, "_monitor_client", lambda cfg: FakeMonitor(node_state))
    return CliRunner().invoke(main, ["status", "-c", str(config_path)], env={"LOOM_CONFIG": None})


def test_a_monitor_that_has_not_heard_every_node_yet_is_not_shown(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    result = _status(tmp_path, monkeypatch, "unknown")
    assert "coordinator down, brokers up: 0" not in result.output, result.output
    assert "view of the monitor" not in result.output
    rows = {ln.split()[0]: ln.split() for ln in result.output.splitlines() if ln.split()}
    assert rows["NODE"][-2:] == ["LEADS", "ENGINE"], result.output  # every node asked directly
    assert rows["broker-1"][3] == "down" and result.exit_code == 1  # which here they are


def test_a_monitor_that_knows_every_node_is_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _status(tmp_path, monkeypatch, "healthy")
    assert "cluster: healthy (coordinator up, brokers up: 1)" in result.output and "view of the monitor" in result.output
    assert result.exit_code == 0, result.output
