"""A hosted instance's ``maintain`` runs every 0.1 s: an error retrying cannot cure (an
assignor its group does not use...) is raised by each call. It is logged once, again when it
changes, and again after the instance got past it -- not ten times a second."""

from __future__ import annotations

import logging

import pytest

from fabric import protocol as P
from fabric.errors import RemoteError
from nodes.consumer_instance import Instance, InstanceHost


class _Consumer:
    def __init__(self) -> None:
        self.error: RemoteError | None = None

    def maintain(self) -> None:
        if self.error is not None:
            raise self.error


def _instance() -> tuple[Instance, _Consumer]:
    host = InstanceHost("consumer-1", ["127.0.0.1:1"], 60_000, lambda e: None)
    inst = Instance(host, "g", "rest-1", {}, 0)
    inst.consumer = _Consumer()  # type: ignore[assignment]
    return inst, inst.consumer  # type: ignore[return-value]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_the_same_error_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    inst, c = _instance()
    c.error = RemoteError(P.INCONSISTENT_GROUP_PROTOCOL, "the group uses assignor range")
    with caplog.at_level(logging.WARNING):
        for _ in range(20):
            inst._maintain()
    assert len(_warnings(caplog)) == 1
    assert "assignor range" in _warnings(caplog)[0]


def test_a_different_error_and_the_same_after_recovery_are_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    inst, c = _instance()
    first = RemoteError(P.INCONSISTENT_GROUP_PROTOCOL, "the group uses assignor range")
    with caplog.at_level(logging.WARNING):
        c.error = first
        inst._maintain()
        inst._maintain()
        c.error = RemoteError(P.INVALID_CONFIG, "session timeout out of range")
        inst._maintain()
        c.error = None
        inst._maintain()
        c.error = first
        inst._maintain()
    said = _warnings(caplog)
    assert len(said) == 3, said
    assert "assignor range" in said[0] and "session timeout" in said[1] and "assignor range" in said[2]
