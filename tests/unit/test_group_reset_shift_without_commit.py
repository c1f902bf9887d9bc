"""A reset by shift (``loom group reset-offsets --shift-by N``, REST ``"to": "shift"``) of a
group with no committed offset on some partition of the topic: it shifted those from the log
start. Kafka's tool refuses ("Cannot shift offset for partition X since there is no current
committed offset"), and so does Loom: an error naming the partitions, and nothing committed,
not for the other partitions either. Through the real GroupAdmin, GatewayAgent, Flask app and
CLI over a scripted Admin (no cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fabric import protocol as P
from fabric.client.admin import EARLIEST, LATEST
from fabric.client.group_admin import GroupAdmin
from fabric.config import load_config
from fabric.errors import FabricError
from nodes import cli_group
from nodes.cli import main as cli_main
from nodes.gateway.agent import GatewayAgent
from nodes.local_cluster import GATEWAY_NODES, make_config
from tests.unit.fakes import KEYS, gateway_test_client, metadata_of

RESET = "/v3/clusters/test/consumer-groups/g/reset-offsets"


class _GroupsAdmin:
    """The Admin calls a GroupAdmin makes: topic t of three partitions (log start 0, log end
    10), group g empty with ``committed`` (partition -> offset); its commits are recorded."""

    def __init__(self, committed: dict[int, int]) -> None:
        self.committed = committed
        self.commits: list[list] = []

    def metadata(self, refresh: bool = True) -> Any:
        return metadata_of({"t": 3})

    def list_offsets(self, topic: str, spec: int = LATEST, **kw: Any) -> dict[int, int]:
        return {p: 0 if spec == EARLIEST else 10 for p in range(3)}

    def call_coordinator(self, command: bytes, header: dict, retries: int = 3) -> dict:
        if command == P.OFFSET_FETCH:
            return {"offsets": [["t", p, o, ""] for p, o in self.committed.items()]}
        if command == P.DESCRIBE_GROUPS:
            return {"groups": [{"group": "g", "state": "Empty", "generation": 0, "assignor": "", "leader": "",
                                "members": [], "offsets": [["t", p, o] for p, o in self.committed.items()]}]}
        assert command == P.OFFSET_COMMIT, command
        self.commits.append(header["offsets"])
        return {}

    def close(self) -> None:
        pass


def test_plan_reset_refuses_to_shift_partitions_without_a_committed_offset() -> None:
    ga = GroupAdmin(_GroupsAdmin({0: 5}))  # type: ignore[arg-type]
    with pytest.raises(FabricError) as e:
        ga.plan_reset("g", "t", shift_by=-2)
    assert getattr(e.value, "partitions", None) == [("t", 1), ("t", 2)]
    assert "t-1" in str(e.value) and "t-2" in str(e.value) and "t-0" not in str(e.value)
    assert "no committed offset" in str(e.value)
    # every partition committed: shifted from there, clamped to the log
    ga = GroupAdmin(_GroupsAdmin({0: 5, 1: 1, 2: 9}))  # type: ignore[arg-type]
    assert ga.plan_reset("g", "t", shift_by=-2) == {("t", 0): (5, 3), ("t", 1): (1, 0), ("t", 2): (9, 7)}
    # the other targets need no committed offset
    assert GroupAdmin(_GroupsAdmin({})).plan_reset("g", "t", to_latest=True)[("t", 1)] == (-1, 10)  # type: ignore[arg-type]


def test_the_cli_refuses_with_one_line_and_commits_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _GroupsAdmin({0: 5})
    monkeypatch.setattr(cli_group, "_groups", lambda config, bootstrap: (GroupAdmin(fake), fake))  # type: ignore[arg-type]
    out = CliRunner().invoke(cli_main, ["group", "reset-offsets", "g", "--topic", "t", "--shift-by", "-2",
                                        "--execute", "--bootstrap", "tcp://127.0.0.1:1"])
    assert out.exit_code == 1, out.output
    assert "t-1" in out.output and "t-2" in out.output and "no committed offset" in out.output, out.output
    assert "Reset" not in out.output
    assert fake.commits == []


def test_rest_answers_422_and_commits_nothing(tmp_path: Path) -> None:
    fake = _GroupsAdmin({0: 5})
    agent = GatewayAgent(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))),
                         make_admin=lambda: fake)
    client = gateway_test_client(agent)
    auth = {"Authorization": f"Bearer {KEYS['admin']}"}
    for execute in (False, True):
        r = client.post(RESET, headers=auth, json={"topic_name": "t", "to": "shift", "shift_by": -2, "execute": execute})
        assert r.status_code == 422, r.get_json()
        assert r.get_json()["error_code"] == 42205
        assert "t-1" in r.get_json()["message"] and "t-2" in r.get_json()["message"]
    assert fake.commits == []
    fake.committed = {0: 5, 1: 1, 2: 9}
    r = client.post(RESET, headers=auth, json={"topic_name": "t", "to": "shift", "shift_by": -2, "execute": True})
    assert r.status_code == 200, r.get_json()
    assert fake.commits == [[["t", 0, 3], ["t", 1, 0], ["t", 2, 7]]]
