"""``loom alerts`` (and the monitor's part of ``loom status``) with the monitor's port refusing
the connection: said at once, as every other command says a node is down."""

from __future__ import annotations

import time
from pathlib import Path

from click.testing import CliRunner

from nodes.cli import main
from tests.harness import make_config


def test_alerts_with_the_monitor_down_says_its_port_refused_at_once(tmp_path: Path) -> None:
    # it waited its 3 s timeout and said "no reply from tcp://…:19010 within 3000 ms", where
    # `loom topic list` at the same moment said at once that every node refused the connection
    config_path = make_config(tmp_path, 1, extra_nodes=("monitor",))  # nothing runs: every port refuses
    start = time.monotonic()
    result = CliRunner().invoke(main, ["alerts", "-c", str(config_path)])
    took_s = time.monotonic() - start
    assert result.exit_code == 1, result.output
    assert "the monitor does not answer" in result.output and "refused the connection" in result.output, result.output
    assert took_s < 2.5, took_s
