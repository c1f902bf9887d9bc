"""The producer service's rig, once: a JobSender over a driven Producer (see
``driven_producer``). Kept apart from ``fakes.py``: it imports the client producer, which
most unit tests do not need.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from fabric import wire
from fabric.errors import MalformedFrame, RemoteError

from fabric.client.producer import Producer
from nodes.producer import ProduceIntake
from nodes.producer_jobs import Job, JobSender
from tests.unit.driven_producer import answer, driven_producer, send_pass


class Rig:
    """A JobSender over a driven Producer (100 ms max block, 200-byte records); answered jobs listed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> None:
        self.producer: Producer = driven_producer(monkeypatch, max_block_ms=100, record_bytes_max=200, **settings)
        self.answered: list[Job] = []
        self.sender = JobSender(lambda acks: self.producer, self.answered.append)

    def job(self, records: list, topic: str = "t", acks: int = -1) -> Job:
        job = Job(None, topic, acks, records, 0)  # type: ignore[arg-type]
        self.sender.send(job)
        return job

    def deliver(self) -> None:
        """Send what is queued; each partition's batch lands at offset 1000 * partition."""
        parts = send_pass(self.producer)
        answer(self.producer, [[1000 * p, 0, ""] for _, p in parts])


def assert_refused_keeping_nothing(req: wire.Request, code: int) -> None:
    """A producer service's intake refuses ``req`` with ``code`` and holds nothing of it."""
    intake = ProduceIntake(1 << 20, Counter())
    with pytest.raises((RemoteError, MalformedFrame)) as e:
        intake.admit(req)
    assert e.value.code == code and intake.jobs.empty() and intake.buffered_bytes == 0
