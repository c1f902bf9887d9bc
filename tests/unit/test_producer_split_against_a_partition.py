"""The split of a batch refused as too large, against a real broker partition (a MemoryEngine
``Partition`` answering each PRODUCE with its size and sequence checks, a byte limit per
topic): the real Sender and RecordAccumulator with recording RPC clients. No record under the
limit fails for a neighbour that is over it, and a partition's order holds, through
producer-id resets and batches behind the refused one in the same request."""

from __future__ import annotations

from typing import Any

import pytest

from engines.api import EngineConfig
from engines.memory import MemoryEngine
from fabric import protocol as P
from fabric.client.accumulator import AccumulatorSettings, RecordAccumulator
from fabric.client.metadata_cache import MetadataCache
from fabric.client.sender import Sender, SenderSettings
from fabric.clock import ManualClock
from fabric.errors import FabricError
from fabric.metadata import ClusterMetadata
from fabric.records import COMPRESSION_CODECS, decode_batches
from nodes.broker.partition import Partition
from tests.unit.fakes import FakeReactor, RecordingClient

TS = 1_700_000_000_000
COORDINATOR = "tcp://127.0.0.1:9"
L1, L2 = "tcp://127.0.0.1:1", "tcp://127.0.0.1:2"
BIG = 1 << 20


def md(version: int = 1, epochs: tuple[int, int] = (3, 3)) -> ClusterMetadata:
    return ClusterMetadata.from_wire({
        "version": version, "cluster": "c", "coordinator": COORDINATOR,
        "brokers": [[1, "127.0.0.1", 1, 101, True], [2, "127.0.0.1", 2, 102, True]],
        "topics": {"t": {"configs": {}, "partitions": [[1, epochs[0], [1], [1]]]},
                   "u": {"configs": {}, "partitions": [[2, epochs[1], [2], [2]]]}}})


class SplitRig:
    def __init__(self, batch_records_max: int = 10, **sender: Any) -> None:
        self.clock = ManualClock(1000)
        self.reactor = FakeReactor(self.clock)
        self.acc = RecordAccumulator(AccumulatorSettings(linger_ms=0, batch_records_max=batch_records_max),
                                     self.clock, wake=lambda: None)
        mc = self.metadata = MetadataCache(wake=lambda: None)
        mc.update(md())
        self.epochs = {"t": 3, "u": 3}
        self.clients: dict[str, RecordingClient] = {}
        # no retry backoff unless asked for: these rigs test order and numbering, and a batch
        # sent again goes at the next pass (the backoff's own tests: test_producer_retry_backoff)
        s = dict(acks=-1, idempotent=True, delivery_timeout_ms=100_000, request_timeout_ms=1000, retry_backoff_ms=0,
                 retry_backoff_max_ms=0)
        s.update(sender)
        self.sender = Sender(SenderSettings(**s), self.acc, mc, [COORDINATOR], clock=self.clock,
                             client_factory=lambda ep: self.clients.setdefault(ep, RecordingClient()))
        self.sender.attach(self.reactor)
        self.parts = {}
        for topic in ("t", "u"):
            p = Partition(topic, 0, 1, MemoryEngine("", EngineConfig(batch_bytes_max=BIG)), None)
            p.become_leader(1, [1], [1], now_ms=0)
            self.parts[topic] = p
        self.limit = {"t": BIG, "u": BIG}
        self.next_pid = 7

    def bump_epoch(self, topic: str) -> None:
        """Fresh metadata: ``topic``'s leader at its next epoch (restarted); the sender fails
        what it has in flight to it."""
        self.epochs[topic] += 1
        self.parts[topic].become_leader(self.epochs[topic], [1], [1], now_ms=0)
        if self.metadata.update(md(self.metadata.current.version + 1, (self.epochs["t"], self.epochs["u"]))):
            self.sender._reroute_in_flight()

    def send(self, topic: str, value: bytes, **kw: Any) -> Any:
        return self.acc.append(topic, 0, TS, None, value, None, len(value) + 20, **kw)

    def flush_batches(self) -> None:
        self.acc.close_all()

    def unanswered(self, endpoint: str, command: bytes) -> bool:
        c = self.clients.get(endpoint)
        return c is not None and any(c.sent[i][0] == command for i in c.unanswered)

    def grant_pid(self) -> None:
        self.sender.run_pass()
        if self.unanswered(COORDINATOR, P.INIT_PRODUCER_ID):
            self.clients[COORDINATOR].answer_last(P.INIT_PRODUCER_ID, {"producer_id": self.next_pid, "producer_epoch": 0})
            self.next_pid += 1
        self.sender.run_pass()

    def deliver(self, endpoint: str, override: list | None = None) -> list:
        """Answer the last PRODUCE to ``endpoint`` as the real partition(s) do (or ``override``)."""
        c = self.clients[endpoint]
        _, header, payloads, _ = c.of(P.PRODUCE)[-1]
        results = []
        for (topic, part, _epoch, pw), data in zip(header["parts"], payloads):
            if override is not None:
                results.append(override[len(results)])
                continue
            r, _ = self.parts[topic].append_as_leader([data], self.limit[topic], [bool(pw)])
            results.append(list(r[0]))
        c.answer_last(P.PRODUCE, {"results": results})
        return results

    def pump(self, endpoint: str = L1, rounds: int = 50) -> None:
        for _ in range(rounds):
            self.grant_pid()
            if not self.unanswered(endpoint, P.PRODUCE):
                return
            self.deliver(endpoint)

    def log(self, topic: str = "t") -> list[bytes]:
        p = self.parts[topic]
        data = p.engine.read(0, 1 << 30) if hasattr(p, "engine") else p.read(0, 1 << 30, p.log_end_offset)
        return [r.value for r in decode_batches(topic, 0, data)]


def _outcomes(futures: list) -> list:
    out = []
    for f in futures:
        e = f.exception(0)
        out.append(P.error_name(e.code) if e is not None else f.result(0).offset)
    return out


def _warm(rig: SplitRig) -> None:
    warm = [rig.send("t", b"w%d" % i) for i in range(2)]
    rig.flush_batches()
    rig.pump()
    assert _outcomes(warm) == [0, 1]


@pytest.mark.parametrize("records_max,count", [(10, 10), (2, 64)])
def test_one_record_over_the_limit_fails_alone(records_max: int, count: int) -> None:
    """Record 0 is over the lowered limit: the pieces come down to it, it fails (its producer
    id goes), and the records behind it, refused out of order under the old id, are numbered
    again under the next and written. With batches of 2, 32 to a request, a sent batch is left
    in the queue by the split: in no log, it is numbered again under the new id in queue order
    too -- not left with the old id's number behind the renumbered ones (out of order)."""
    rig = SplitRig(batch_records_max=records_max)
    _warm(rig)
    values = [b"X" * 400] + [b"v%02d" % i for i in range(1, count)]
    futures = [rig.send("t", v) for v in values]
    rig.flush_batches()
    rig.limit["t"] = 300
    rig.pump()
    got = _outcomes(futures)
    bad = [(i, o) for i, o in enumerate(got[1:], 1) if not isinstance(o, int)]
    assert got[0] == "record_too_large" and not bad, bad
    assert rig.log() == [b"w0", b"w1"] + values[1:]


@pytest.mark.parametrize("idempotent", [True, False])
def test_a_batch_behind_the_refused_one_written_first_keeps_the_order(idempotent: bool) -> None:
    """A partition that does not know the producer takes any sequence (and a producer without
    idempotence has none): the batch behind the refused one is written, so the refused one is
    not sent again in pieces after it -- it fails whole, and the log stays in order."""
    rig = SplitRig(idempotent=idempotent)
    a = [rig.send("t", b"a%d" % i + b"." * 40) for i in range(10)]
    b = [rig.send("t", b"b%d" % i) for i in range(2)]
    rig.flush_batches()
    rig.limit["t"] = 500
    rig.pump()
    assert _outcomes(a) == ["record_too_large"] * 10 and _outcomes(b) == [0, 1]
    assert rig.log() == [b"b0", b"b1"]


def test_a_reset_while_pieces_wait_keeps_their_numbers_and_the_batch_behind_them() -> None:
    """Pieces keep the attempts of their batch: a producer-id reset (another partition's batch
    failed for good) does not renumber them alone, ahead of a batch behind them that was sent
    already and keeps its number."""
    rig = SplitRig()
    _warm(rig)
    a = [rig.send("t", b"a%d" % i + b"." * 40) for i in range(10)]
    b = [rig.send("t", b"b%d" % i) for i in range(2)]
    x = [rig.send("u", b"x")]
    rig.flush_batches()
    rig.limit["t"] = 500
    rig.sender.run_pass()
    assert [r[1] for r in rig.deliver(L1)] == [P.RECORD_TOO_LARGE, P.OUT_OF_ORDER_SEQUENCE]
    rig.deliver(L2, override=[[-1, P.INVALID_RECORD, "bad record"]])
    assert x[0].exception(0).code == P.INVALID_RECORD
    rig.pump()
    assert all(isinstance(o, int) for o in _outcomes(a + b)), _outcomes(a + b)
    assert rig.log()[2:] == [b"a%d" % i + b"." * 40 for i in range(10)] + [b"b0", b"b1"]


def test_a_refused_batch_behind_one_that_failed_for_good_is_numbered_again() -> None:
    """The leader checks the size before the sequence: behind a batch that failed for good in
    the same request (its producer id gone), a batch refused as too large goes again in pieces
    numbered under the next id, not under the dead one."""
    rig = SplitRig()
    _warm(rig)
    w = [rig.send("t", b"z%d" % i) for i in range(2)]
    rig.flush_batches()
    a = [rig.send("t", b"a%d" % i + b"." * 40) for i in range(10)]
    rig.flush_batches()
    rig.limit["t"] = 500
    rig.sender.run_pass()
    rig.deliver(L1, override=[[-1, P.INVALID_RECORD, "bad"], [-1, P.RECORD_TOO_LARGE, "too large"]])
    rig.pump()
    assert _outcomes(w) == ["invalid_record"] * 2
    assert all(isinstance(o, int) for o in _outcomes(a)), _outcomes(a)
    assert rig.log()[2:] == [b"a%d" % i + b"." * 40 for i in range(10)]


@pytest.mark.parametrize("codec", ["none", "zstd", "lz4"])
def test_pieces_keep_keys_headers_and_timestamps(codec: str) -> None:
    rig = SplitRig(compression=COMPRESSION_CODECS[codec])
    recs = [(TS + i, b"k%d" % i if i % 2 else None, b"v%d" % i + b"." * 60, [("h", b"x%d" % i)] if i % 3 else None)
            for i in range(10)]
    futures = [rig.acc.append("t", 0, ts, k, v, h, len(v) + 40) for ts, k, v, h in recs]
    rig.flush_batches()
    rig.limit["t"] = 420 if codec == "none" else 120
    rig.pump()
    assert rig.sender.splits >= 1 and [f.result(0).offset for f in futures] == list(range(10))
    got = [(r.timestamp_ms, r.key, r.value, r.headers) for r in decode_batches("t", 0, rig.parts["t"].engine.read(0, 1 << 30))]
    assert [g[:3] for g in got] == [r[:3] for r in recs]
    assert [list(map(tuple, g[3] or [])) for g in got] == [list(map(tuple, r[3] or [])) for r in recs]


def test_closing_with_pieces_queued_fails_each_record_once() -> None:
    rig = SplitRig()
    calls: list = []
    futures = [rig.send("t", b"a%d" % i + b"." * 40, on_delivery=lambda md, e: calls.append(e)) for i in range(10)]
    rig.flush_batches()
    rig.limit["t"] = 500
    rig.grant_pid()
    rig.deliver(L1)  # refused: the pieces wait for the backoff
    [pending] = rig.acc.close_all()
    assert pending is futures[0].batch
    rig.sender.stop()
    assert len(calls) == 10 and all(isinstance(e, FabricError) for e in calls)
    assert rig.acc.buffered_bytes == 0 and futures[0].done()


def test_old_id_pieces_are_numbered_again_beside_a_new_id_batch() -> None:
    """Pieces made under the old id, and a batch behind them numbered under the new one, go
    in one request: the pieces (in no log) are numbered again under the new id first, so the
    piece beside the oversized one is not failed out of order behind a written batch."""
    rig = SplitRig(batch_records_max=2)
    _warm(rig)
    a = [rig.send("t", v) for v in (b"X" * 400, b"a1")]
    x = [rig.send("u", b"x")]
    rig.flush_batches()
    rig.limit["t"] = 300
    rig.sender.run_pass()                      # t: [A] to L1, u: [x] to L2
    d = [rig.send("t", b"d0")]
    rig.flush_batches()
    rig.sender.run_pass()                      # D waits in t's queue (t in flight), attempts 0
    rig.deliver(L2, override=[[-1, P.INVALID_RECORD, "bad record"]])   # id reset: D renumbered
    assert x[0].exception(0).code == P.INVALID_RECORD
    rig.deliver(L1)                            # A too large: pieces [X], [a1] under the old id
    rig.pump()
    assert _outcomes(a)[0] == "record_too_large"
    assert _outcomes(a)[1:] + _outcomes(d) == [2, 3], _outcomes(a) + _outcomes(d)
    assert rig.log() == [b"w0", b"w1", b"a1", b"d0"]


def test_a_batch_kept_under_an_old_producer_id_goes_alone_before_the_new_ids_batches() -> None:
    """After a producer-id reset, a batch that may be in a log keeps its old id's numbers (its
    retry must be recognised); a batch numbered under the new id does not travel in the same
    request -- the partition takes a new id's first batch at any sequence, so it would be
    written ahead of the old one if that one were refused (here: too large, the reply lost)."""
    from fabric.errors import RequestTimeout

    def deliver_then_lose_reply() -> None:
        c = rig.clients[L1]
        _, header, payloads, _ = c.of(P.PRODUCE)[-1]
        for (topic, _p, _e, pw), data in zip(header["parts"], payloads):
            rig.parts[topic].append_as_leader([data], rig.limit[topic], [bool(pw)])
        c.answer_last(P.PRODUCE, None, err=RequestTimeout("no reply"))
    rig = SplitRig()
    _warm(rig)
    a = [rig.send("t", b"a%d" % i + b"." * 40) for i in range(10)]
    rig.flush_batches()
    rig.limit["t"] = 500
    rig.sender.run_pass()  # t: [A] under the first id
    x = rig.send("u", b"x")
    rig.flush_batches()
    rig.sender.run_pass()
    rig.deliver(L2, override=[[-1, P.INVALID_RECORD, "bad"]])  # fails for good: the id is reset
    deliver_then_lose_reply()  # A refused as too large, the reply lost: A may be in the log
    b = rig.send("t", b"b")
    rig.flush_batches()
    rig.grant_pid()
    assert len(rig.clients[L1].of(P.PRODUCE)[-1][2]) == 1  # A alone, under its old id
    deliver_then_lose_reply()
    rig.limit["t"] = BIG  # the limit raised again: A goes through
    rig.pump()
    assert x.exception(0).code == P.INVALID_RECORD
    log = rig.log()[2:]
    assert log == [b"a%d" % i + b"." * 40 for i in range(10)] + [b"b"], (log, _outcomes(a), _outcomes([b]))
