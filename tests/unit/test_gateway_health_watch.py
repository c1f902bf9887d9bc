"""The gateway's health watcher (nodes/gateway/control.py): what it publishes on the event hub
for ``/ws/events`` as PING answers come. A node killed and restarted between two PINGs (the
supervisor restarts in about 1.5 s, the watcher PINGs every 500 ms with a 1 s timeout) answered
every PING, and its card went from healthy to "healthy · 1 restart" with no event on the
timeline; a PING answer names the process (pid, uptime_ms), so another pid, or an uptime gone
back, is a restart: published as down, then up, as a node whose PING went unanswered is.

The real GatewayControl (never started: no reactor thread) with its PING clients replaced by
one that answers each PING at once from a script."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from fabric import protocol as P
from fabric.config import load_config
from fabric.errors import RequestTimeout
from nodes.gateway.control import GatewayControl
from nodes.local_cluster import make_config
from webui.context import HttpRequestCounter
from webui.events import EventHub

Answer = dict | None  # a PING answer, or None: no answer within the timeout


class ScriptedPings:
    """Answers each PING with the next scripted answer, at once (the watcher's callback runs
    inside ``request``, as the reactor would run it later)."""

    def __init__(self, node: str, answers: list[Answer]) -> None:
        self.node = node
        self.answers = list(answers)

    def request(self, command: bytes, header: dict, callback: Callable[..., None], timeout_ms: int) -> None:
        assert command == P.PING
        answer = self.answers.pop(0)
        if answer is None:
            callback(None, [], RequestTimeout(f"{self.node} did not answer"))
        else:
            callback({"node": self.node, "role": "monitor", **answer}, [], None)


@contextmanager
def watcher(tmp_path: Path) -> Iterator[tuple[GatewayControl, EventHub]]:
    path = make_config(tmp_path, 1, extra_nodes=("monitor", "gateway"))
    hub = EventHub()
    node = GatewayControl(load_config(path, environ={}), "gateway", 1, hub, HttpRequestCounter())
    try:
        yield node, hub
    finally:
        node.close()


def watched(tmp_path: Path, answers: list[Answer]) -> tuple[list[dict], GatewayControl]:
    """The monitor's events on the hub after the watcher's checks met ``answers``, one a check."""
    with watcher(tmp_path) as (node, hub):
        sub = hub.subscribe(100)
        assert sub is not None
        node._clients = {"monitor": ScriptedPings("monitor", answers)}  # type: ignore[dict-item]
        for _ in answers:
            node._check()
        events: list[dict[str, Any]] = []
        while (e := sub.get(0)) is not None:
            events.append(e)
        return [e for e in events if e.get("node") == "monitor"], node


def states(events: list[dict]) -> list[str]:
    return [e["state"] for e in events]


def test_a_node_restarted_between_two_pings_is_published_down_then_up(tmp_path: Path) -> None:
    events, node = watched(tmp_path, [{"pid": 100, "uptime_ms": 5000}, {"pid": 100, "uptime_ms": 5500},
                                      {"pid": 200, "uptime_ms": 300}, {"pid": 200, "uptime_ms": 800}])
    assert states(events) == ["up", "down", "up"]
    down = events[1]
    assert down["role"] == "monitor" and "100" in down["reason"] and "200" in down["reason"], down
    assert "restarted" in down["reason"]
    assert isinstance(down["ts_ms"], int) and events[2]["ts_ms"] >= down["ts_ms"]
    assert node.node_up == {"monitor": True}          # up now: its work is not refused
    assert node.stats()["nodes_up"] == {"monitor": True}


def test_the_same_pid_with_its_uptime_gone_back_is_a_restart_too(tmp_path: Path) -> None:
    """A pid can come back (a container's pid 1, a reused pid): the uptime tells the restart."""
    events, _ = watched(tmp_path, [{"pid": 1, "uptime_ms": 9000}, {"pid": 1, "uptime_ms": 400}])
    assert states(events) == ["up", "down", "up"]


def test_a_restart_seen_as_an_unanswered_ping_is_one_down_and_one_up(tmp_path: Path) -> None:
    events, _ = watched(tmp_path, [{"pid": 100, "uptime_ms": 5000}, None, {"pid": 200, "uptime_ms": 300}])
    assert states(events) == ["up", "down", "up"]


def test_a_node_that_runs_on_is_published_up_once(tmp_path: Path) -> None:
    events, _ = watched(tmp_path, [{"pid": 100, "uptime_ms": t} for t in (100, 600, 1100, 1600)])
    assert states(events) == ["up"]


def test_an_answer_without_pid_or_uptime_is_no_restart(tmp_path: Path) -> None:
    """An older node's answer, or a malformed one: judged by answering, as before."""
    events, _ = watched(tmp_path, [{"pid": 100, "uptime_ms": 5000}, {}, {"pid": "x", "uptime_ms": None},
                                   {"pid": 100, "uptime_ms": 6000}])
    assert states(events) == ["up"]
