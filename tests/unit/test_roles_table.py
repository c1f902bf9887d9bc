"""One table of node roles (fabric/roles.py), read by the config, the runner and the launcher.

Before, three lists said the same thing: the config's ``ZMQ_ROLES`` (which roles bind PUB),
``nodes/run.py``'s ``ROLE_CLASSES`` and the launcher's ``ROLE_MODULES``; a role added to one
and not the others was accepted by the config and then refused, or its ports not checked."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from fabric.config import ConfigError, NodeConfig, load_config
from fabric.roles import HTTP, PUB, ROLES, ROUTER, RoleSpec
from nodes import launcher, run

CLUSTER = {
    "coordinator": {"role": "coordinator", "port": 19004},
    "broker-1": {"role": "broker", "broker_id": 1, "port": 19001},
}


def _node(role: str, port: int = 18000) -> dict:
    return {"role": role, "port": port, **({"broker_id": 9} if role == "broker" else {})}


@pytest.mark.parametrize("role", list(ROLES))
def test_the_runner_and_the_launcher_find_each_role_of_the_table(role: str) -> None:
    spec = ROLES[role]
    assert launcher.role_available(role)
    cls = run.node_class(role)
    assert cls is getattr(importlib.import_module(spec.module), spec.class_name)
    assert NodeConfig(**_node(role)).role == role


def test_a_role_not_in_the_table_is_refused_everywhere() -> None:
    with pytest.raises(ValueError, match="role"):
        NodeConfig(**_node("relay"))
    assert not launcher.role_available("relay")
    with pytest.raises(ConfigError, match="no node implementation"):
        run.node_class("relay")


def test_a_role_the_table_names_but_this_build_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ROLES, "relay", RoleSpec("relay", "nodes.no_such_relay:Relay", (ROUTER, PUB)))
    assert not launcher.role_available("relay")
    with pytest.raises(ConfigError, match="not available in this build"):
        run.node_class("relay")


def _sockets(role: str, port: int) -> dict[str, int]:
    """The port each socket of a ``role`` node on ``port`` binds, by kind."""
    n = NodeConfig(**_node(role, port))
    spec = ROLES[role]
    out = {ROUTER: n.rpc_port, PUB: n.publish_port}
    if HTTP in spec.binds:
        out[HTTP] = n.port if spec.port_serves == HTTP else n.http_metrics_port
    return out


@pytest.mark.parametrize("role, kind", [(r, k) for r, s in ROLES.items() for k in s.binds])
def test_every_socket_a_role_binds_is_checked_for_clashes(tmp_path: Path, role: str, kind: str) -> None:
    taken = _sockets(role, 18000)[kind]
    nodes = {**CLUSTER, "x": _node(role, 18000), "clash": {"role": "producer", "port": taken, "pub_port": 17000}}
    if role == "coordinator":
        del nodes["coordinator"]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"nodes": nodes}))
    with pytest.raises(ConfigError, match=f"port {taken} of .* also used by"):
        load_config(path, environ={})


def test_the_table_imports_no_node() -> None:
    source = Path(importlib.import_module("fabric.roles").__file__).read_text()  # type: ignore[arg-type]
    assert "import nodes" not in source and "from nodes" not in source and "import zmq" not in source
