"""``loom status`` without an answering monitor: a node that does not answer PING while the
process the supervisor runs for it exists is shown unresponsive with that pid -- it was shown
"down" with pid "-" (a hung monitor, whose process was there all along)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from click.testing import CliRunner

from nodes import running_cluster
from nodes.cli_cluster import status
from nodes.local_cluster import free_ports


def test_a_silent_node_whose_process_runs_is_unresponsive_with_its_pid(tmp_path: Path) -> None:
    coordinator, broker, monitor, metrics = free_ports(4)  # nothing listens on them
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "cluster": {"data_dir": str(tmp_path / "data")},
        "nodes": {"coordinator": {"role": "coordinator", "port": coordinator},
                  "broker-1": {"role": "broker", "broker_id": 1, "port": broker},
                  "monitor": {"role": "monitor", "port": monitor, "metrics_port": metrics}}}))
    data = tmp_path / "data"
    data.mkdir()
    # the supervisor's pid file: this test's process stands in for the silent monitor's
    (data / running_cluster.PID_FILE_NAME).write_text(json.dumps({"pid": os.getpid(), "children": {"monitor": os.getpid()}}))
    result = CliRunner().invoke(status, ["-c", str(path)])
    assert result.exit_code == 1, result.output  # still counted as not up
    rows = {ln.split()[0]: ln.split() for ln in result.output.splitlines() if ln.split()}
    assert rows["monitor"][3:5] == ["unresponsive", str(os.getpid())], result.output
    assert rows["broker-1"][3:5] == ["down", "-"], result.output
