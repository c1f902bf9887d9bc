"""A real ``fabric.client.Producer`` whose real sender is never started: the test runs its
passes on the test's thread and answers its PRODUCE requests through recording RPC clients
(tests/unit/fakes.py). Topic ``t`` has three partitions, all led by one broker (``driven_metadata``
makes other shapes of it)."""

from __future__ import annotations

from typing import Any

import pytest

import fabric.client.producer as producer_module
from fabric import protocol as P
from fabric.client.producer import Producer
from fabric.client.sender import Sender
from fabric.metadata import ClusterMetadata
from tests.unit.fakes import FakeReactor, RecordingClient

NOWHERE = "127.0.0.1:9"  # nothing listens: the producer never reaches the network
LEADER = "tcp://127.0.0.1:1"


class DrivenSender(Sender):
    """Never started: the test runs its passes (``run_pass``) and answers its requests."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.recording: dict[str, RecordingClient] = {}
        super().__init__(*args, client_factory=lambda ep: self.recording.setdefault(ep, RecordingClient()), **kw)
        self.attach(FakeReactor())

    def start(self) -> None:
        pass


def driven_producer(monkeypatch: pytest.MonkeyPatch, **settings: Any) -> Producer:
    """A producer (linger 0, not idempotent, unless ``settings`` say otherwise) that knows
    topic ``t``; stop it with ``p.sender.stop()``."""
    monkeypatch.setattr(producer_module, "Sender", DrivenSender)
    p = Producer(NOWHERE, **{"linger_ms": 0, "idempotent": False, **settings})
    p.metadata.update(driven_metadata())
    return p


def driven_metadata(version: int = 1, partitions: int = 3, topic_id: str = "") -> ClusterMetadata:
    """Topic ``t`` (id ``topic_id``) with ``partitions`` partitions, all led by broker 1."""
    return ClusterMetadata.from_wire({
        "version": version, "cluster": "c", "coordinator": "tcp://127.0.0.1:9",
        "brokers": [[1, "127.0.0.1", 1, 101, True]],
        "topics": {"t": {"configs": {}, "id": topic_id, "partitions": [[1, 3, [1], [1]]] * partitions}}})


def send_pass(p: Producer) -> list[tuple[str, int]]:
    """Send what is ready; returns the (topic, partition) of each batch of the last PRODUCE."""
    p.sender.run_pass()
    return [(t, part) for t, part, *_ in p.sender.recording[LEADER].of(P.PRODUCE)[-1][1]["parts"]]  # type: ignore[attr-defined]


def answer(p: Producer, results: list) -> None:
    """Answer the last PRODUCE: one ``[base_offset, error code, message]`` per batch."""
    p.sender.recording[LEADER].answer_last(P.PRODUCE, {"results": results})  # type: ignore[attr-defined]
