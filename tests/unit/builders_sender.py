"""Builders for the producer's sender tests, once each: a ``Rig`` of the sender's real parts (a
``RecordAccumulator``, a ``MetadataCache`` and ``SenderSettings``) with RPC clients that record
requests (tests/unit/fakes.py) and a fake reactor on a ManualClock; the fixture that makes rigs,
``make_sender_rig``, is in tests/unit/conftest.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fabric import protocol as P
from fabric.client.accumulator import AccumulatorSettings, RecordAccumulator
from fabric.client.futures import RecordFuture
from fabric.client.metadata_cache import MetadataCache
from fabric.client.sender import Sender, SenderSettings
from fabric.clock import ManualClock
from fabric.metadata import ClusterMetadata
from tests.unit.fakes import FakeReactor, RecordingClient

BATCH_BYTES_MAX = 1024 * 1024
COORDINATOR = "tcp://127.0.0.1:9"
LEADER = "tcp://127.0.0.1:1"


def sender_metadata(version: int = 1, leader: int = 1, epoch: int = 3, partitions: int = 1,
                    topic_id: str = "") -> ClusterMetadata:
    """Topic ``t`` (id ``topic_id``) with ``partitions`` partitions, each led by ``leader`` at ``epoch``."""
    return ClusterMetadata.from_wire({
        "version": version, "cluster": "c", "coordinator": COORDINATOR,
        "brokers": [[1, "127.0.0.1", 1, 101, True], [2, "127.0.0.1", 2, 102, True]],
        "topics": {"t": {"configs": {}, "id": topic_id, "partitions": [[leader, epoch, [1, 2], [1, 2]]] * partitions}}})


@dataclass
class Rig:
    sender: Sender
    accumulator: RecordAccumulator
    metadata: MetadataCache
    reactor: FakeReactor
    clients: dict[str, RecordingClient] = field(default_factory=dict)

    def send(self, tag: str, n: int = 2, partition: int = 0) -> list[RecordFuture]:
        return [self.accumulator.append("t", partition, 1_700_000_000_000, None, f"{tag}{i}".encode(), None, 30)
                for i in range(n)]

    def refresh_metadata(self, md: ClusterMetadata) -> None:
        """A metadata refresh the sender asks for, answered with ``md``."""
        self.metadata.want_refresh()
        self.sender.run_pass()
        self.client(COORDINATOR).answer_last(P.METADATA, {"metadata": md.to_wire()})

    def client(self, endpoint: str) -> RecordingClient:
        """The client the sender made for ``endpoint`` (an empty one if it made none)."""
        return self.clients.get(endpoint) or RecordingClient()

    def grant_producer_id(self, pid: int) -> None:
        self.client(COORDINATOR).answer_last(P.INIT_PRODUCER_ID, {"producer_id": pid, "producer_epoch": 0})

    def produce_requests(self) -> list:
        return self.client(LEADER).of(P.PRODUCE)


def sender_rigs() -> Iterator[Callable[..., Rig]]:
    """Rigs with ``SenderSettings`` overrides; their senders are stopped (sockets released)."""
    made: list[Rig] = []

    def make(endpoints: list[str] | None = None, **settings: Any) -> Rig:
        """``endpoints``: the producer's bootstrap list (default: one endpoint no test answers)."""
        clock = ManualClock(1000)
        reactor = FakeReactor(clock)
        accumulator = RecordAccumulator(AccumulatorSettings(linger_ms=0), clock, wake=lambda: None)
        metadata = MetadataCache(wake=lambda: None)
        metadata.update(sender_metadata())
        clients: dict[str, RecordingClient] = {}

        def client(endpoint: str) -> RecordingClient:
            return clients.setdefault(endpoint, RecordingClient())
        # (no jitter: a test waits out a retry backoff of exactly retry_backoff_ms, doubled per attempt)
        defaults: dict[str, Any] = dict(acks=-1, idempotent=True, delivery_timeout_ms=1000, request_timeout_ms=1000,
                                        retry_jitter=0.0)
        sender = Sender(SenderSettings(**{**defaults, **settings}), accumulator, metadata,
                        endpoints or ["tcp://127.0.0.1:5"],
                        clock=clock, client_factory=client)
        sender.attach(reactor)
        made.append(Rig(sender, accumulator, metadata, reactor, clients))
        return made[-1]
    yield make
    for r in made:
        r.sender.stop()
