"""What the group coordinator and the committed-offsets store need from the node that hosts
them: the one named interface between ``nodes.coordinator.groups`` / ``offsets`` /
``offsets_loader`` and ``nodes.coordinator.node.Coordinator`` (which satisfies it as is).

Tests hand in ``tests.unit.fakes.FakeGroupContext`` instead: a fake reactor on a manual
clock, a recording server, a cluster state and a broker table, nothing else.

Not thread-safe: everything behind it runs on the coordinator's reactor.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Mapping, Protocol

from fabric import wire
from fabric.clock import Clock
from fabric.metadata import BrokerInfo
from nodes.coordinator.store import ClusterState

ReplyCallback = Callable[[dict | None, list, Any], None]


class Timers(Protocol):
    """The reactor's timer API (``fabric.reactor.Reactor``): callbacks run on its thread."""

    clock: Clock

    def call_later(self, delay_ms: int, fn: Callable[[], Any]) -> Any: ...

    def call_every(self, interval_ms: int, fn: Callable[[], Any]) -> Any: ...


class RequestRoutes(Protocol):
    """The request port (``fabric.rpc.RpcServer``): routes, and replies to deferred requests."""

    def route(self, command: bytes, handler: Callable[[wire.Request], Any]) -> None: ...

    def reply(self, req: wire.Request, header: dict | None = None, payloads: Any = ()) -> None: ...

    def reply_error(self, req: wire.Request, code: int, message: str, **extra: Any) -> None: ...


class BrokerRequester(Protocol):
    """One RPC client to one broker (``fabric.rpc.RpcClient``)."""

    def request(self, command: bytes, header: dict, payloads: list | tuple = (), *,
                callback: ReplyCallback, timeout_ms: int) -> Any: ...

    def close(self) -> None: ...


class GroupContext(Protocol):
    """The coordinator as the groups and offsets see it.

    ``state`` is the coordinator's cluster state: read for topics and partition counts; the
    offsets store adds the internal offsets topic and its snapshot pointers to it and then calls
    ``commit()`` (a metadata change: version bump, durable write, push) or ``save_state()``
    (a durable write only). ``brokers`` is the configured broker table and ``alive`` the
    brokers that are alive now; neither is changed through this interface. ``electable()``: the
    part of ``alive`` a partition's leader may be chosen among (a restarted coordinator takes
    brokers it has not heard yet for alive for one session, but not for electable).
    """

    reactor: Timers
    server: RequestRoutes
    counters: Counter[str]
    state: ClusterState
    brokers: Mapping[int, BrokerInfo]
    alive: set[int]

    def commit(self) -> None: ...

    def save_state(self) -> None: ...

    def electable(self) -> set[int]: ...
