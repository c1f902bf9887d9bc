"""A seeded simulation of a consumer fetching ahead within its bound in bytes
(``buffered_bytes_max``): on a fake reactor and fake brokers that answer as ``nodes.broker``
does (each part's whole batches in the order asked, at least one while the fetch's max_bytes
is not spent), with random answers, empty long polls, failed fetches, leaders moving, polls of
any size (in records and in bytes: the records past ``max_bytes`` stay buffered), seeks and
give-backs; and, harsher, give-backs from the middle of what a poll returned (once and again,
further back), ``poll_batch`` views read late and out of order, partitions given up and taken
again, diverging and out-of-range answers and resets. Checked after every step: the bytes and
records counted are the buffer's (with the batches decoded for the rest of a cut), and what a
give-back right after a cut poll may put back is what that poll returned of the cut partition,
in front of its rest, still buffered (``_check_accounts``); every partition's records come in
offset order, none twice, none skipped (a seek, a give-back, a reset or a divergence moves the
expected offset: never forward). Once the faults stop, every partition is read to its end (no
reading left stalled) and nothing stays counted. A failing seed is in the assertion's message."""

from __future__ import annotations

import random
from typing import Any

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

    def follow(self) -> None:
        """Nothing moves a position here but what the reader does."""


def _time_passes(rnd: random.Random, cluster: Cluster, net: Net, reactor: FakeReactor) -> None:
    """Time goes by; about half the fetches in flight end their long polls empty."""
    reactor.advance(rnd.choice([10, 100, 600]))
    for ep, i in net.open(P.FETCH):
        if rnd.random() < 0.5:
            cluster.answer(net, ep, i, empty=True)


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
        _time_passes(rnd, cluster, net, reactor)
    for ep, i in net.open(P.METADATA):
        net.answer(ep, i, cluster.metadata())


def _started(rnd: random.Random, seed: int, reader_of: type[Reader] = Reader, partitions_max: int = 5
             ) -> tuple[Cluster, Net, FakeReactor, Consumer, Any, int]:
    """A cluster of 1 to ``partitions_max`` partitions and a consumer within a random bound,
    every partition assigned at 0 and the metadata answered: (cluster, net, reactor, consumer,
    its ``reader_of`` reader, the bound)."""
    partitions = rnd.randint(1, partitions_max)
    cluster = Cluster(rnd, partitions)
    bound = rnd.choice([1, 64 * KIB, 256 * KIB, 1024 * KIB])
    net, reactor = Net(), FakeReactor(ManualClock(1_000))
    c = Consumer(BOOTSTRAP, clock=reactor.clock, reactor=reactor, client_factory=net.client,
                 auto_offset_reset="earliest", buffered_bytes_max=bound,
                 fetch_bytes_max=rnd.choice([bound, 8 * 1024 * KIB]),
                 partition_fetch_bytes_max=rnd.choice([bound, 4 * 1024 * KIB]))
    reader = reader_of(c, partitions, seed)
    c.assign(list(reader.expected))
    for tp in reader.expected:
        c.seek(tp, 0)
    c.poll(0)
    for ep, i in net.open(P.METADATA):
        net.answer(ep, i, cluster.metadata())
    return cluster, net, reactor, c, reader, bound


def _read_to_the_end(cluster: Cluster, net: Net, reactor: FakeReactor, reader: Any, bound: int) -> None:
    """The faults stop: every fetch (and LIST_OFFSETS) answered at once, records taken, until
    every partition is read to its end -- or the reading stalled (an assertion)."""
    c = reader.c
    for _ in range(3_000):
        if all(o == LOG_END for o in reader.expected.values()):
            break
        for ep, i in net.open(P.METADATA):
            net.answer(ep, i, cluster.metadata())
        _answer_list_offsets(net)
        for ep, i in net.open(P.FETCH):
            cluster.answer(net, ep, i)
        reader.poll(100)
        reader.follow()
        reactor.advance(10)
    assert reader.expected == {tp: LOG_END for tp in reader.expected}, \
        f"seed {reader.seed}: the reading stalled (bound {bound}, fetches in flight {c._fetching}, " \
        f"bytes buffered {c._buffered_bytes}, decoded {c._decoded.bytes})"


@pytest.mark.parametrize("seed", range(40))
def test_the_bytes_bound_holds_its_accounts_and_never_stalls_the_reading(seed: int) -> None:
    rnd = random.Random(seed)
    cluster, net, reactor, c, reader, bound = _started(rnd, seed)
    try:
        for step in range(400):
            _faulty_step(rnd, cluster, net, reactor, reader)
            _check_accounts(c, f"seed {seed}, step {step}")
        _read_to_the_end(cluster, net, reactor, reader, bound)
    finally:
        c.close()


# -- the same, attacked harder: partial give-backs, poll_batch views read late and out of order,
# partitions given up and taken again, diverging and out-of-range answers, and the state a give-back
# right after a cut poll puts back (``Consumer._returned_of_cut``) checked after every step


class HarshReader(Reader):
    """A ``Reader`` that also gives back from the middle of what it got, reads ``poll_batch``
    views late (after later polls) and out of order, and follows the positions a reset or a
    leader's divergence moved (never forward: that skipped records)."""

    def __init__(self, c: Consumer, partitions: int, seed: int) -> None:
        super().__init__(c, partitions, seed)
        self.late: list = []  # poll_batch views not read yet

    def poll_batch(self, max_records: int) -> None:
        views = self.c.poll_batch(0, max_records=max_records)
        for v in views:
            tp = (v.topic, v.partition)
            assert tp in self.c.positions, f"seed {self.seed}: {tp} returned, not assigned"
            assert v.first_offset == self.expected[tp], f"seed {self.seed}: {tp} gave {v.first_offset}, " \
                                                         f"not {self.expected[tp]}"
            self.expected[tp] = v.next_offset
        self.late += views
        if views and self.rnd.random() < 0.2:  # handed out, then given back from a view on
            self.give_back_part([(v.topic, v.partition, v.first_offset) for v in views])

    def read_late(self) -> None:
        self.rnd.shuffle(self.late)
        for v in self.late[:self.rnd.randint(0, len(self.late))]:
            assert list(v.offsets) == [r.offset for r in v.records()] and len(v.values) == len(v)
        self.late = [v for v in self.late if self.rnd.random() < 0.5]

    def give_back_part(self, got: list) -> None:
        """Give back from a random one of ``got`` (records, or (topic, partition, first offset) of
        views) on: of its partition, and of every one after it."""
        k = self.rnd.randrange(len(got))
        firsts: dict = {}
        for r in got[k:]:
            firsts.setdefault((r[0], r[1]), r[2])
        self.c.give_back(firsts.items())
        self.expected.update(firsts)

    def follow(self) -> None:
        """Positions a reset or a divergence moved (back, never forward)."""
        for tp, at in self.c.positions.items():
            if at is None:
                self.expected[tp] = 0  # reset to earliest: the LIST_OFFSETS answers 0
            else:
                assert at <= self.expected[tp], f"seed {self.seed}: {tp} moved forward to {at} past {self.expected[tp]}"
                self.expected[tp] = at


def _harsh_answer(rnd: random.Random, cluster: Cluster, net: Net, ep: str, i: int) -> None:
    """Fetch ``i`` answered with a divergence or an out-of-range for a part now and then (a log
    that ends below the offset asked: truncated under records read, ``_truncated_under``)."""
    h = net.clients[ep].sent[i][1]
    parts, payloads = [], []
    for _, p, offset, *_ in h["parts"]:
        x = rnd.random()
        if x < 0.1 and offset > 0:
            parts.append([T, p, 0, LOG_END, LOG_END, 0, [1, rnd.randrange(offset)]])
        elif x < 0.15:
            parts.append([T, p, P.OFFSET_OUT_OF_RANGE, LOG_END, LOG_END, 0, None])
        elif x < 0.2 and offset > 0:
            parts.append([T, p, P.OFFSET_OUT_OF_RANGE, LOG_END, rnd.randrange(offset), 0, None])
        else:
            data = b"".join(cluster.logs[p][offset // 10:offset // 10 + rnd.randint(0, 3)])
            parts.append([T, p, 0, LOG_END, LOG_END, 0, None])
        payloads.append(b"" if parts[-1][2] or parts[-1][6] else data)
    net.answer(ep, i, {"parts": parts}, payloads)


def _answer_list_offsets(net: Net) -> None:
    for ep, i in net.open(P.LIST_OFFSETS):
        h = net.clients[ep].sent[i][1]
        net.answer(ep, i, {"parts": [[t, p, 0, 0] for t, p, _ in h["parts"]]})


def _harsh_step(rnd: random.Random, cluster: Cluster, net: Net, reactor: FakeReactor, reader: HarshReader) -> None:
    c = reader.c
    op = rnd.random()
    if op < 0.38:  # a fetch answered: mostly as before, else with a divergence or out of range
        for ep, i in rnd.sample(net.open(P.FETCH), k=min(1, len(net.open(P.FETCH)))):
            cluster.answer(net, ep, i, empty=rnd.random() < 0.2) if op < 0.3 else _harsh_answer(rnd, cluster, net, ep, i)
    elif op < 0.65:
        got = reader.poll(rnd.choice([1, 7, 50, 10_000]))
        if got and rnd.random() < 0.3:
            if rnd.random() < 0.4:  # answers land first (a consumer service's instance maintains its
                for ep, i in net.open(P.FETCH):  # member before the request that undoes a lost fetch)
                    _harsh_answer(rnd, cluster, net, ep, i) if rnd.random() < 0.5 else cluster.answer(net, ep, i)
            reader.give_back_part(got) if rnd.random() < 0.7 else reader.give_back(got)
            if rnd.random() < 0.3:  # and again, further back
                reader.give_back_part(got)
    elif op < 0.75:
        reader.poll_batch(rnd.choice([1, 7, 50, 10_000]))
    elif op < 0.8:
        reader.read_late()
    elif op < 0.82:
        tp = (T, rnd.randrange(len(cluster.logs)))
        c.assign([other for other in reader.expected if other != tp])
        if rnd.random() < 0.5:  # taken again at once, where the reading was
            c.assign(list(reader.expected))
            reader.seek(tp, reader.expected[tp])
        else:
            reader.expected[tp] = 0
    elif op < 0.83:
        gone = [tp for tp in reader.expected if tp not in c.positions]
        if gone:
            c.assign(list(reader.expected))
            for tp in gone:
                reader.seek(tp, reader.expected[tp])
    elif op < 0.85:
        cluster.move_leader()
        c._refresh_metadata()
    elif op < 0.87 and c.positions:
        reader.seek(rnd.choice(list(c.positions)), rnd.randrange(LOG_END))
    elif op < 0.88 and c.positions:
        tp = rnd.choice(list(c.positions))
        c.seek_to_beginning([tp])
        reader.expected[tp] = 0
    else:
        _time_passes(rnd, cluster, net, reactor)
    for ep, i in net.open(P.METADATA):
        net.answer(ep, i, cluster.metadata())
    if rnd.random() < 0.5:
        _answer_list_offsets(net)
    reader.follow()


def _check_accounts(c: Consumer, where: str) -> None:
    """The bytes and records counted are the buffer's, with the batches decoded for the rest of a
    cut (while its answer's bytes are counted); the runs a give-back may put back end at their
    partition's position, in front of the rest of their answer, buffered."""
    assert c._buffered_bytes == sum(v.held for v in c._buffer), where
    assert c._buffered_records == sum(map(len, c._buffer)), where
    assert c._decoded.bytes == sum(v._shared.bytes for v in c._buffer if v.held), where
    assert c._decoded.bytes >= 0 and (c._buffer or not c._decoded.bytes), where
    # each answer buffered: its bytes held once, on its last piece buffered
    holders = [v._shared for v in c._buffer if v.held]
    assert len(holders) == len({id(s) for s in holders}), where
    assert all(v.held for v in c._buffer if v is max((w for w in c._buffer if w._shared is v._shared),
                                                       key=lambda w: w.first_offset)), where
    cut = c._returned_of_cut
    if cut:
        tp = (cut[0].topic, cut[0].partition)
        assert all((r.topic, r.partition) == tp and r.shares_fetch_with(cut[0]) for r in cut), where
        assert all(a.next_offset <= b.first_offset for a, b in zip(cut, cut[1:])), where
        assert c.positions.get(tp) == cut[-1].next_offset, where
        first = next(v for v in c._buffer if (v.topic, v.partition) == tp)
        assert first.first_offset == c.positions[tp] and first.shares_fetch_with(cut[-1]), where


@pytest.mark.parametrize("seed", range(60))
def test_harsh_faults_keep_the_accounts_and_the_order_and_never_stall(seed: int) -> None:
    rnd = random.Random(1_000 + seed)
    cluster, net, reactor, c, reader, bound = _started(rnd, seed, HarshReader, partitions_max=4)
    c.auto_offset_reset = rnd.choice(["earliest", "latest"])  # latest: a truncation reads on from the log end
    try:
        for step in range(500):
            _harsh_step(rnd, cluster, net, reactor, reader)
            _check_accounts(c, f"seed {seed}, step {step}")
        c.assign(list(reader.expected))  # the partitions given up, taken again where they were
        for tp in reader.expected:
            if c.positions.get(tp) is None:
                reader.seek(tp, reader.expected[tp])
        reader.late = []
        _read_to_the_end(cluster, net, reactor, reader, bound)
        _check_accounts(c, f"seed {seed}, drained")
        assert not c._buffer and not c._decoded.bytes, f"seed {seed}"
    finally:
        c.close()
    assert not c._decoded.bytes and not c._returned_of_cut, f"seed {seed}"
