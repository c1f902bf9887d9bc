"""A look at a left-behind instance that fails in an unexpected way (not a coded answer: a
socket error, a bug) must not end the deletes of this gateway process for good: the entry is
dropped with its error logged, and instances left behind later are still deleted."""

from __future__ import annotations

import threading

from nodes.gateway import left_behind
from nodes.gateway.agent_instances import InstanceEntry
from nodes.local_cluster import wait_until


def _entry(name: str) -> InstanceEntry:
    return InstanceEntry(group="g", name=name, endpoint="tcp://127.0.0.1:1", config={"owner": "gw"}, fmt="json")


def test_an_unexpected_error_looking_at_one_does_not_stop_the_next(monkeypatch) -> None:
    monkeypatch.setattr(left_behind, "LEFT_BEHIND_CHECK_MS", 10)
    lb = left_behind.LeftBehind(is_up=lambda ep: True, holder=lambda g, n: None)
    looked: list[str] = []
    done = threading.Event()

    def _done(left: left_behind.Left) -> bool:
        looked.append(left.name)
        if left.name == "broken":
            raise OSError("a socket error nobody coded")
        done.set()
        return True

    monkeypatch.setattr(lb, "_done", _done)
    lb.add(_entry("broken"))
    wait_until(lambda: "broken" in looked and lb.waiting() == 0, 5, what="the broken one looked at and dropped")
    lb.add(_entry("later"))
    assert done.wait(5), f"an instance left behind after the error is never looked at: {looked}"
    wait_until(lambda: lb.waiting() == 0, 5, what="the later one done")
