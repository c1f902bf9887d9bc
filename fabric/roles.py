"""The node roles: one table read by the config (which ports a node of each role binds), the
runner (``nodes/run.py``: which class implements it) and the supervisor (``nodes/launcher.py``:
whether this build has it).

Each role names the class that implements it as ``"module:Class"``, imported only when that
role runs, and the sockets it binds: ``ROUTER`` (the request port), ``PUB`` (its publisher)
and ``HTTP``. ``port_serves`` says which of them a node's ``port`` is: the request port for
every role but the gateway, whose ``port`` is its HTTP API (its ROUTER is ``control_port``).
A new role is one line here, its class, and its commands in ``fabric/protocol.py``.

Standard library only: the config and the launcher read it without importing any node.
Immutable; thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass

ROUTER = "ROUTER"
PUB = "PUB"
HTTP = "HTTP"


@dataclass(frozen=True, slots=True)
class RoleSpec:
    name: str
    implementation: str  # "package.module:Class"
    binds: tuple[str, ...]  # of ROUTER, PUB, HTTP
    port_serves: str = ROUTER  # what the node's ``port`` is

    @property
    def module(self) -> str:
        return self.implementation.partition(":")[0]

    @property
    def class_name(self) -> str:
        return self.implementation.partition(":")[2]


ROLES: dict[str, RoleSpec] = {spec.name: spec for spec in (
    RoleSpec("broker", "nodes.broker.node:Broker", (ROUTER, PUB)),
    RoleSpec("coordinator", "nodes.coordinator.node:Coordinator", (ROUTER, PUB)),
    RoleSpec("producer", "nodes.producer:ProducerService", (ROUTER, PUB)),
    RoleSpec("consumer", "nodes.consumer:ConsumerService", (ROUTER, PUB)),
    RoleSpec("monitor", "nodes.monitor:Monitor", (ROUTER, PUB, HTTP)),  # HTTP: metrics_port
    RoleSpec("gateway", "nodes.gateway:Gateway", (HTTP, ROUTER, PUB), port_serves=HTTP),
)}
ROLE_NAMES: tuple[str, ...] = tuple(ROLES)
