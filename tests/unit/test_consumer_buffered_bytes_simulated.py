"""A seeded simulation of a consumer fetching ahead within its bound in bytes
(``buffered_bytes_max``): on a fake reactor and fake brokers that answer as ``nodes.broker``
does (each part's whole batches in the order asked, at least one while the fetch's max_bytes
is not spent), with random answers, empty long polls, failed fetches, leaders moving, polls of
any size (in records and in bytes: the records past ``max_bytes`` stay buffered), seeks and
give-backs. Checked after every step: the bytes and records counted are
the buffer's (with the batches decoded for the rest of a cut); every partition's records come in offset order, none twice, none skipped (a seek
or a give-back moves the expected offset). Once the faults stop, every partition is read to
its end (no reading left stalled). A failing seed is in the assertion's message."""

from __future__ import annotations

import random

import pytest

from fabric import protocol as P
from fabric.client.consumer import Consumer
from fabric.clock import ManualClock
from fabric.errors import RemoteError
from fabric.metadata import BrokerInfo, ClusterMetadata, PartitionInfo, TopicInfo
from fabric.records import build_batch
from tests.unit.fakes import FakeReactor, as_leader_wrote
from tests.unit.test_consumer_failover import BOOTSTRAP, COORDINATOR, T, Net

KIB = 1024
BATCHES = 30  # per partition, of 10 records each
LOG_END = 10 * BATCHES


class Cluster:
    """Brokers 1-3 leading ``partitions`` partitions of ``t``, each a log of BATCHES batches."""

    def __init__(self, rnd: random.Random, partitions: int) -> None:
        self.rnd = rnd
        self.version = 1
        self.leaders = {p: (rnd.randint(1, 3), 1) for p in range(partitions)}  # partition -> (broker, epoch)
        self.logs = {p: [self._batch(10 * k, rnd.choice([100, 5 * KIB, 30 * KIB])) for k in range(BATCHES)]
                     for p in range(partitions)}

    @staticmethod
    def _batch(base: int, value_bytes: int) -> bytes:
        # every third batch keyed: unpacked as tuples, what a cut leaves decoded is counted (``_decoded``)
        key = b"k%d" % base if base % 30 == 0 else None
        return as_leader_wrote(build_batch([(1_000 + i, key, bytes([i]) * value_bytes, None) for i in range(10)]),
                               base, 1)

    def metadata(self) -> dict:
        brokers = {b: BrokerInfo(b, f"b{b}", 1, 2) for b in (1, 2, 3)}
        parts = tuple(PartitionInfo(T, p, b, e, (1, 2, 3), (1, 2, 3)) for p, (b, e) in sorted(self.leaders.items()))
        return {"metadata": ClusterMetadata(self.version, "c", brokers, {T: TopicInfo(T, parts, {}, "id-t")},
                                            COORDINATOR).to_wire()}

    def move_leader(self) -> None:
        p = self.rnd.randrange(len(self.leaders))
        self.leaders[p] = (self.rnd.randint(1, 3), self.leaders[p][1] + 1)
        self.version += 1

    def answer(self, net: Net, ep: str, i: int, empty: bool = False) -> None:
        """Fetch ``i`` to ``ep`` answered as a broker does (``empty``: a long poll's end)."""
        h = net.clients[ep].sent[i][1]
        parts, payloads, total = [], [], 0
        for _, p, offset, cap, *_ in h["parts"]:
            cap = min(cap, h["max_bytes"] - total)
            data = b""
            for b in [] if empty else self.logs[p][offset // 10:]:
                if cap <= 0 or (data and len(data) + len(b) > cap):
                    break
                data += b
            parts.append([T, p, 0, LOG_END, LOG_END, 0, None])
            payloads.append(data)
            total += len(data)
        net.answer(ep, i, {"parts": parts}, payloads)


class Reader:
    """The application: what it expects next of each partition."""

    def __init__(self, c: Consumer, partitions: int, seed: int) -> None:
        self.c, self.seed = c, seed
        self.expected = {(T, p): 0 for p in range(partitions)}
        self.rnd = random.Random(-seed)  # its own: the seeds' faults stay what they were

    def poll(self, max_records: int) -> list:
        max_bytes = self.rnd.choice([None, None, 1, 3 * KIB, 40 * KIB, 200 * KIB])
        got = self.c.poll(0, max_records=max_records, max_bytes=max_bytes)
        size = sum(len(r.value) + len(r.key or b"") for r in got)
        assert max_bytes is None or size <= max_bytes or len(got) == 1, f"seed {self.seed}: {size} > {max_bytes}"
        for r in got:
            tp = (r.topic, r.partition)
            assert r.offset == self.expected[tp], f"seed {self.seed}: {tp} gave {r.offset}, not {self.expected[tp]}"
            self.expected[tp] += 1
        return got

    def give_back(self, got: list) -> None:
        firsts = {(r.topic, r.partition): r.offset for r in reversed(got)}
        self.c.give_back(firsts.items())
        self.expected.update(firsts)

    def seek(self, tp: tuple[str, int], offset: int) -> None:
        self.c.seek(tp, offset)
        self.expected[tp] = offset


def _faulty_step(rnd: random.Random, cluster: Cluster, net: Net, reactor: FakeReactor, reader: Reader) -> None:
    op = rnd.random()
    if op < 0.45:
        opened = net.open(P.FETCH)
        if opened:
            cluster.answer(net, *rnd.choice(opened), empty=rnd.random() < 0.2)
    elif op < 0.85:
        got = reader.poll(rnd.choice([1, 7, 50, 10_000]))
        if got and rnd.random() < 0.2:
            reader.give_back(got)
    elif op < 0.87:
        cluster.move_leader()
        reader.c._refresh_metadata()
    elif op < 0.89:
        opened = net.open(P.FETCH)
        if opened:
            ep, i = rnd.choice(opened)
            net.answer(ep, i, None, [], RemoteError(P.REQUEST_TIMED_OUT, "timed out"))
    elif op < 0.9:
        reader.seek((T, rnd.randrange(len(cluster.logs))), rnd.randrange(LOG_END))
    else:
        reactor.advance(rnd.choice([10, 100, 600]))
        for ep, i in net.open(P.FETCH):
            if rnd.random() < 0.5:
                cluster.answer(net, ep, i, empty=True)
    for ep, i in net.open(P.METADATA):
        net.answer(ep, i, cluster.metadata())


@pytest.mark.parametrize("seed", range(40))
def test_the_bytes_bound_holds_its_accounts_and_never_stalls_the_reading(seed: int) -> None:
    rnd = random.Random(seed)
    partitions = rnd.randint(1, 5)
    cluster = Cluster(rnd, partitions)
    bound = rnd.choice([1, 64 * KIB, 256 * KIB, 1024 * KIB])
    net, reactor = Net(), FakeReactor(ManualClock(1_000))
    c = Consumer(BOOTSTRAP, clock=reactor.clock, reactor=reactor, client_factory=net.client,
                 auto_offset_reset="earliest", buffered_bytes_max=bound,
                 fetch_bytes_max=rnd.choice([bound, 8 * 1024 * KIB]),
                 partition_fetch_bytes_max=rnd.choice([bound, 4 * 1024 * KIB]))
    try:
        reader = Reader(c, partitions, seed)
        c.assign(list(reader.expected))
        for tp in reader.expected:
            c.seek(tp, 0)
        c.poll(0)
        for ep, i in net.open(P.METADATA):
            net.answer(ep, i, cluster.metadata())
        for step in range(400):
            _faulty_step(rnd, cluster, net, reactor, reader)
            assert c._buffered_bytes == sum(v.held for v in c._buffer), f"seed {seed}, step {step}"
            assert c._buffered_records == sum(map(len, c._buffer)), f"seed {seed}, step {step}"
            # what is decoded for the rest of a cut batch, counted while its answer's bytes are
            assert c._decoded.bytes == sum(v._shared.bytes for v in c._buffer if v.held), f"seed {seed}, step {step}"
        for _ in range(3_000):  # the faults stop: every fetch answered at once, records taken
            if all(o == LOG_END for o in reader.expected.values()):
                break
            for ep, i in net.open(P.METADATA):
                net.answer(ep, i, cluster.metadata())
            for ep, i in net.open(P.FETCH):
                cluster.answer(net, ep, i)
            reader.poll(100)
            reactor.advance(10)
        assert reader.expected == {tp: LOG_END for tp in reader.expected}, \
            f"seed {seed}: the reading stalled (bound {bound}, fetches in flight {c._fetching}, " \
            f"bytes buffered {c._buffered_bytes})"
    finally:
        c.close()

