"""A reactor pass in which one partition's high watermark moved re-reads only the parked
fetches that read that partition, not every parked fetch (parked x partitions reads per pass,
as before). Driven through the real Broker handlers and ParkingLot, with a broker holding only
what those handlers use."""

from __future__ import annotations

from types import SimpleNamespace

from engines.api import EngineConfig
from engines.memory import MemoryEngine
from fabric import protocol as P
from fabric import wire
from fabric.records import build_batch
from nodes.broker.node import Broker
from nodes.broker.parking import ParkedFetch, ParkingLot
from nodes.broker.partition import Partition

BATCH_MAX = 1024 * 1024
LEADER, FOLLOWER = 1, 2
PARTITIONS = 60
NOW_MS = 1_000


class _Server:
    def __init__(self) -> None:
        self.replies: list = []

    def reply(self, req, header=None, payloads=()) -> None:  # noqa: ANN001
        self.replies.append((req, header, payloads))


def _broker() -> SimpleNamespace:
    parts = {}
    for p in range(PARTITIONS):
        part = Partition("t", p, LEADER, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), None)
        part.become_leader(1, [LEADER, FOLLOWER], [LEADER, FOLLOWER], now_ms=0)
        part.append_as_leader([build_batch([(1_700_000_000_000, None, b"v", None)])], BATCH_MAX)
        parts[("t", p)] = part
    broker = SimpleNamespace(broker_id=LEADER, partitions=parts, parking=ParkingLot(), server=_Server(),
                             clock=SimpleNamespace(now_ms=lambda: NOW_MS), _produce_queue=[], _dirty=False,
                             limits=SimpleNamespace(fetch_bytes_max=1 << 20, fetch_wait_ms_max=30_000),
                             meter=SimpleNamespace(fetched=lambda topic, data: None), builds=0)

    def build_fetch_reply(req, replica_id, now_ms):  # noqa: ANN001, ANN202
        broker.builds += 1
        return Broker.build_fetch_reply(broker, req, replica_id, now_ms)

    broker.build_fetch_reply = build_fetch_reply
    broker._fetch_one = lambda *a: Broker._fetch_one(broker, *a)
    broker._request_topic_id_differs = lambda *a: Broker._request_topic_id_differs(broker, *a)
    broker.mark_dirty = lambda *a: Broker.mark_dirty(broker, *a)
    return broker


def _park_consumer_fetches(broker: SimpleNamespace) -> list[wire.Request]:
    """One consumer fetch per partition, each waiting at the HW (0: nothing committed yet)."""
    reqs = []
    for p in range(PARTITIONS):
        req = wire.Request([b"c%d" % p], P.FETCH, {"parts": [["t", p, 0, 1 << 16]], "max_bytes": 1 << 16}, [])
        broker.parking.park_fetch(ParkedFetch(req, -1, NOW_MS + 10_000), broker.server)
        reqs.append(req)
    return reqs


def test_a_moved_high_watermark_rereads_only_the_fetches_on_that_partition() -> None:
    broker = _broker()
    reqs = _park_consumer_fetches(broker)
    ack = wire.Request([b"f"], P.REPLICA_ACK, {"broker_id": FOLLOWER, "parts": [["t", 7, 1, 1]]}, [])
    Broker._on_replica_ack(broker, ack)  # partition 7's HW moves 0 -> 1
    assert broker.partitions[("t", 7)].high_watermark == 1
    Broker._after_pass(broker)
    assert [r[0] for r in broker.server.replies] == [reqs[7]]  # answered with its record
    assert broker.builds <= 2, f"{broker.builds} parked fetches re-read for one partition's change"
    assert len(broker.parking.fetches) == PARTITIONS - 1


def test_a_pass_with_no_change_rereads_nothing_and_deadlines_still_answer() -> None:
    broker = _broker()
    _park_consumer_fetches(broker)
    Broker._after_pass(broker)
    assert broker.builds == 0
    broker.clock = SimpleNamespace(now_ms=lambda: NOW_MS + 10_000)
    Broker._after_pass(broker)
    assert len(broker.server.replies) == PARTITIONS and not broker.parking.fetches


def test_an_unspecified_change_rereads_everything() -> None:
    """Metadata changes and the like mark the broker dirty without naming a partition."""
    broker = _broker()
    _park_consumer_fetches(broker)
    broker._dirty = True
    Broker._after_pass(broker)
    assert broker.builds == PARTITIONS
