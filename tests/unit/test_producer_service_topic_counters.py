"""The producer service's per-topic counter (``loom_producer_service_records_total{topic}``)
forgets a topic its producers' metadata no longer has once no record of it has come for a
whole sweep (``nodes.producer.TOPIC_COUNTERS_SWEEP_MS``): kept, every topic ever produced to
through the service stayed in each scrape for the service's life, and past
SERIES_PER_METRIC_MAX names a new topic's records were not counted. A topic still being
written keeps its series between sweeps (a counter that resets mid-stream reads as a restart).
A real service in this process, its reactor driven by the test; its producer a real one whose
sender the test drives (tests/unit/driven_producer.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fabric.client.services import ServiceProducer
from fabric.config import load_config
from nodes import producer as producer_service
from tests.harness import make_config
from tests.unit.driven_producer import driven_producer

COUNTER = "loom_producer_service_records_total"


def _counts(service: producer_service.ProducerService) -> dict[str, float]:
    return {s.labels[0]: s.value for s in service.metrics.snapshot() if s.name == COUNTER}


def _topics(service: producer_service.ProducerService) -> set[str]:
    return set(_counts(service))


def _produce(service: producer_service.ProducerService, topic: str) -> None:
    """One SERVICE_PRODUCE of one record to ``topic``, counted by the service (its answer is
    not waited for: ``gone`` is a topic the producer never finds)."""
    endpoint = service.config.node("producer").endpoint
    before = _counts(service).get(topic, 0)

    def run() -> None:
        sp = ServiceProducer(endpoint, timeout_ms=5000)
        try:
            sp.produce_rows(topic, [(None, b"v", None, 0)], acks="all")
        except Exception:  # noqa: BLE001 -- the answer is not what is tested
            pass
        finally:
            sp.close()
    threading.Thread(target=run, daemon=True).start()

    def counted(_now: int) -> bool:
        return _counts(service).get(topic, 0) > before
    service.drive_until(counted, service.clock.now_ms() + 5000)
    assert counted(0), f"the record to {topic} was not counted"


def test_a_topic_gone_from_the_metadata_and_not_written_for_a_sweep_leaves_the_counter(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(make_config(tmp_path, 1, extra_nodes=("producer",)))
    producer = driven_producer(monkeypatch, max_block_ms=100)  # its metadata has topic t only
    service = producer_service.ProducerService(config, "producer", make_producer=lambda acks: producer)
    try:
        _produce(service, "t")
        _produce(service, "gone")
        assert _topics(service) == {"t", "gone"}
        service.sweep_topic_counters()  # gone was written since the last sweep: kept
        assert _topics(service) == {"t", "gone"}
        _produce(service, "gone")
        service.sweep_topic_counters()  # and again
        assert _topics(service) == {"t", "gone"}
        service.sweep_topic_counters()  # a whole sweep without a record, not in the metadata: forgotten
        assert _topics(service) == {"t"}
        service.sweep_topic_counters()  # t idle, but the metadata has it: kept
        assert _topics(service) == {"t"}
        _produce(service, "gone")  # written again: counted from 1
        assert _counts(service)["gone"] == 1
    finally:
        service.close()
        producer.sender.stop()


def test_no_counter_is_forgotten_before_a_producer_has_metadata(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A producer that has not heard the cluster yet knows no topic: that is not a deletion."""
    config = load_config(make_config(tmp_path, 1, extra_nodes=("producer",)))
    producer = driven_producer(monkeypatch, max_block_ms=100)
    producer.metadata.answers = 0  # as before its first answer
    service = producer_service.ProducerService(config, "producer", make_producer=lambda acks: producer)
    try:
        _produce(service, "gone")
        service.sweep_topic_counters()
        service.sweep_topic_counters()
        assert _topics(service) == {"gone"}
    finally:
        service.close()
        producer.sender.stop()
