"""A consumer fetches ahead up to a bound in bytes (``buffered_bytes_max``): what it holds fetched
and not yet returned plus what its fetches in flight may bring. Before, only records were
counted (200,000): records of 100 KiB were 20 GB fetched ahead, and a consumer service hosting
many REST instances on a backlog held several GB. Built for real on a fake reactor with one
recording RPC client per endpoint (as tests/unit/test_consumer_failover.py). Also
``poll(max_bytes=...)``: the records past the cut stay buffered, and a poll unpacks about as many
records as it returns; the batch a cut leaves decoded for them counts against the bound; and a
give-back right after a cut puts back what was returned of the cut partition, fetching nothing again."""

from __future__ import annotations

import gc
import threading
import tracemalloc
from typing import Any

import pytest

from fabric.records import RecordBatchView, build_batch
from fabric import protocol as P
from fabric.client.consumer import Consumer
from fabric.client.consumer_fetch import BUFFERED_BYTES_MAX, FETCH_ROOM_BYTES_MIN
from fabric.clock import ManualClock
from fabric.decoded_batches import HeldBytes
from fabric.errors import FabricError
from tests.unit.fakes import FakeReactor, as_leader_wrote
from fabric.metadata import BrokerInfo, ClusterMetadata, PartitionInfo, TopicInfo
from tests.unit.test_consumer_failover import BOOTSTRAP, COORDINATOR, T, Net, endpoint

KIB = 1024


def metadata_of(leaders: dict[int, int]) -> dict:
    """A METADATA reply: topic ``t`` with partition -> leader broker (epoch 1), brokers 1-5."""
    brokers = {b: BrokerInfo(b, f"b{b}", 1, 2) for b in range(1, 6)}
    parts = tuple(PartitionInfo(T, p, b, 1, (b,), (b,)) for p, b in sorted(leaders.items()))
    return {"metadata": ClusterMetadata(1, "c", brokers, {T: TopicInfo(T, parts, {}, "id-t")}, COORDINATOR).to_wire()}


def batch(base: int, n: int, value_bytes: int) -> bytes:
    """``n`` records of ``value_bytes`` each, as the leader wrote them from ``base`` (epoch 1)."""
    recs = [(1_000 + i, None, bytes([i % 251]) * value_bytes, None) for i in range(n)]
    return as_leader_wrote(build_batch(recs), base, 1)


def reading_consumer(made: list[Consumer], partitions: tuple[int, ...] = (0,), leaders: dict[int, int] | None = None,
                     **kw: Any) -> tuple[Consumer, Net]:
    """A consumer on a fake reactor and recording clients (added to ``made``, for the caller to
    close), reading ``partitions`` of ``t`` from 0, its metadata answered: (consumer, net)."""
    net, reactor = Net(), FakeReactor(ManualClock(1_000))
    c = Consumer(BOOTSTRAP, clock=reactor.clock, reactor=reactor, client_factory=net.client,
                 auto_offset_reset="earliest", **kw)
    made.append(c)
    c.assign([(T, p) for p in partitions])
    for p in partitions:
        c.seek((T, p), 0)
    assert c.poll(0) == []
    # default: partition 0 on broker 1, 1 on broker 2
    leaders = leaders or {p: 1 + p % 2 for p in partitions}
    net.answer_metadata(metadata_of(leaders))
    net.answer_metadata(metadata_of(leaders))  # the coordinator's, as the reading begins
    assert c.poll(0) == []
    return c, net


@pytest.fixture
def make() -> Any:
    made: list[Consumer] = []
    yield lambda *a, **kw: reading_consumer(made, *a, **kw)
    for c in made:
        c.close()


def test_a_fetch_asks_no_more_than_the_room_left_and_none_once_the_bound_is_reached(make: Any) -> None:
    c, net = make(buffered_bytes_max=1024 * KIB, fetch_bytes_max=8 * 1024 * KIB)
    i, h = net.fetch(1)
    assert h["max_bytes"] == 1024 * KIB  # the bound, not fetch_bytes_max
    assert h["parts"][0][3] == 1024 * KIB  # nor the partition's 4 MiB
    data = batch(0, 60, 10 * KIB)  # ~600 KiB
    net.answer_fetch(1, i, [(0, 0, 60)], [data])
    # the answer's prefetch asks only for the room left
    i, h = net.fetch(1)
    assert h["max_bytes"] == 1024 * KIB - len(data)
    net.answer_fetch(1, i, [(0, 0, 120)], [batch(60, 60, 10 * KIB)])
    assert c._buffered_bytes > 1024 * KIB - FETCH_ROOM_BYTES_MIN
    assert net.open(P.FETCH) == []  # full: nothing fetched ahead
    got = c.poll(0, max_records=1_000)
    assert [r.offset for r in got] == list(range(120))
    assert c._buffered_bytes == 0
    c.poll(0)
    i, h = net.fetch(1)  # emptied: the next fetch asks for the whole bound again
    assert h["max_bytes"] == 1024 * KIB and h["parts"][0][2] == 120


def test_fetches_to_two_leaders_share_the_bound_evenly(make: Any) -> None:
    c, net = make(partitions=(0, 1), buffered_bytes_max=1024 * KIB, fetch_bytes_max=8 * 1024 * KIB)
    (_, h1), (_, h2) = net.fetch(1), net.fetch(2)
    assert h1["max_bytes"] == h2["max_bytes"] == 512 * KIB  # the first asked did not take it all
    assert h1["parts"][0][3] == h2["parts"][0][3] == 512 * KIB


def test_a_leader_answering_empty_long_polls_does_not_starve_the_other(make: Any) -> None:
    """Given the whole room, the first leader asked (partition 0's) took it again after each
    empty long poll, and the leader with records was never fetched."""
    c, net = make(partitions=(0, 1), buffered_bytes_max=1024 * KIB)
    i1, _ = net.fetch(1)
    i2, _ = net.fetch(2)
    net.answer_fetch(2, i2, [(1, 0, 50)], [batch(0, 50, 10 * KIB)])  # ~500 KiB of partition 1
    got = c.poll(0, max_records=1_000)
    assert [(r.partition, r.offset) for r in got] == [(1, o) for o in range(50)]
    c.poll(0)
    assert len(net.fetches(2)) == 1  # partition 1 fetched on while partition 0's long poll waits
    for _ in range(3):
        net.answer_fetch(1, i1, [(0, 0, 0)], [b""])  # empty: partition 0 has nothing
        c.poll(0)
        i1, _ = net.fetch(1)
        assert len(net.fetches(2)) == 1


def test_a_fetch_waits_while_less_than_the_minimum_room_is_left(make: Any) -> None:
    c, net = make(buffered_bytes_max=1024 * KIB)
    i, _ = net.fetch(1)
    data = batch(0, 80, 10 * KIB)  # more than bound - FETCH_ROOM_BYTES_MIN
    assert 1024 * KIB - len(data) < FETCH_ROOM_BYTES_MIN
    net.answer_fetch(1, i, [(0, 0, 80)], [data])
    assert net.open(P.FETCH) == []  # no fetch of a few KiB while the buffer is nearly full


def test_a_batch_bigger_than_the_bound_is_still_read_and_the_reading_goes_on(make: Any) -> None:
    c, net = make(buffered_bytes_max=64 * KIB)
    i, h = net.fetch(1)
    assert h["max_bytes"] == 64 * KIB
    big = batch(0, 10, 20 * KIB)  # 200 KiB: a broker answers at least one whole batch
    net.answer_fetch(1, i, [(0, 0, 10)], [big])
    assert net.open(P.FETCH) == []
    assert [r.offset for r in c.poll(0)] == list(range(10))
    c.poll(0)
    i, h = net.fetch(1)
    assert h["parts"][0][2] == 10 and h["max_bytes"] == 64 * KIB


def test_a_bound_smaller_than_the_leaders_asked_still_asks_each_for_a_batch(make: Any) -> None:
    """1 byte over two leaders: each is asked for at least 1 byte (a broker answers a part
    asking for 0 with nothing), and so gets one whole batch at a time."""
    c, net = make(partitions=(0, 1), buffered_bytes_max=1)
    (i1, h1), (i2, h2) = net.fetch(1), net.fetch(2)
    assert h1["max_bytes"] == h2["max_bytes"] == 1 and h1["parts"][0][3] == h2["parts"][0][3] == 1
    net.answer_fetch(1, i1, [(0, 0, 10)], [batch(0, 5, 10)])
    net.answer_fetch(2, i2, [(1, 0, 10)], [batch(0, 5, 10)])
    assert net.open(P.FETCH) == []  # over the bound: nothing more until taken
    assert len(c.poll(0)) == 10
    c.poll(0)
    assert [h["parts"][0][2] for _, h in net.fetches(1) + net.fetches(2)] == [5, 5]


def test_bytes_stay_counted_until_the_last_record_of_an_answer_is_taken(make: Any) -> None:
    c, net = make(buffered_bytes_max=1024 * KIB)
    i, _ = net.fetch(1)
    data = batch(0, 100, 8 * KIB)  # 800 KiB: no room for a prefetch after it
    net.answer_fetch(1, i, [(0, 0, 100)], [data])
    for start in range(0, 99, 33):
        got = c.poll(0, max_records=33)
        assert [r.offset for r in got] == list(range(start, start + 33))
        assert c._buffered_bytes == len(data)  # the answer's bytes are held while any record is
        assert net.open(P.FETCH) == []
    assert [r.offset for r in c.poll(0)] == [99]
    assert c._buffered_bytes == 0


def test_bytes_dropped_with_the_partition_when_it_is_sought(make: Any) -> None:
    c, net = make(buffered_bytes_max=1024 * KIB)
    i, _ = net.fetch(1)
    net.answer_fetch(1, i, [(0, 0, 100)], [batch(0, 100, 8 * KIB)])
    c.seek((T, 0), 50)
    assert c._buffered_bytes == 0
    c.poll(0)
    _, h = net.fetch(1)
    assert h["parts"][0][2] == 50 and h["max_bytes"] == 1024 * KIB


def test_the_default_bound_and_bad_values() -> None:
    assert BUFFERED_BYTES_MAX == 64 * 1024 * KIB
    for key in ("buffered_bytes_max", "fetch_bytes_max", "partition_fetch_bytes_max"):
        for bad in (0, -1, True, 1.5, "1"):
            with pytest.raises(FabricError, match=key):
                Consumer(BOOTSTRAP, **{key: bad})


def test_a_leader_with_records_is_fetched_again_while_the_others_long_polls_wait(make: Any) -> None:
    """Three leaders at 256 KiB (the service's floor): the room left while two idle leaders'
    long polls are in flight is a third of the bound, their fair share; judged against the
    whole minimum (256 KiB) instead, the leader with records waited for both to come back
    empty -- 85 KiB per long poll (500 ms)."""
    c, net = make(partitions=(0, 1, 2), leaders={0: 1, 1: 2, 2: 3}, buffered_bytes_max=256 * KIB)
    shares = {b: net.fetch(b)[1]["max_bytes"] for b in (1, 2, 3)}
    assert shares == {1: 256 * KIB // 3, 2: 256 * KIB // 3, 3: 256 * KIB // 3}
    offset = 0
    for _ in range(3):
        i, h = net.fetch(2)
        assert h["parts"][0][2] == offset
        net.answer_fetch(2, i, [(1, 0, offset + 8)], [batch(offset, 8, 10 * KIB)])
        got = c.poll(0, max_records=1_000)
        assert [(r.partition, r.offset) for r in got] == [(1, o) for o in range(offset, offset + 8)]
        offset += 8
        c.poll(0)  # brokers 1 and 3 still hold their long polls
        assert len(net.fetches(1)) == len(net.fetches(3)) == 1


def test_a_dead_leaders_fetch_does_not_stop_the_reading_of_the_others(make: Any) -> None:
    """Five leaders at the consumer service's default share (1 MiB): broker 1 is dead (its
    fetch unanswered until failover or the request's timeout, 10.5 s). The other four read on;
    before, none was fetched again until broker 1's fetch ended."""
    c, net = make(partitions=(0, 1, 2, 3, 4), leaders={p: p + 1 for p in range(5)}, buffered_bytes_max=1024 * KIB)
    for round_ in range(3):
        for b in (2, 3, 4, 5):
            i, h = net.fetch(b)
            offset = 4 * round_
            assert h["parts"][0][2] == offset
            net.answer_fetch(b, i, [(b - 1, 0, offset + 4)], [batch(offset, 4, 40 * KIB)])
        got = c.poll(0, max_records=1_000)
        assert sorted((r.partition, r.offset) for r in got) == [(p, o) for p in (1, 2, 3, 4)
                                                                for o in range(4 * round_, 4 * round_ + 4)]
        c.poll(0)
        assert len(net.fetches(1)) == 1  # still unanswered


def answer_as_a_broker(net: Net, broker: int, logs: dict[int, list[bytes]]) -> None:
    """Answer broker ``broker``'s open fetch as ``nodes.broker`` does: its parts in the order
    asked, each whole batches from its offset up to its cap or to what the fetch's max_bytes
    leaves (at least one batch while anything is left; nothing once it is spent). ``logs``:
    per partition, its batches (of 10 records each, from offset 0)."""
    i, h = net.fetch(broker)
    entries, payloads, total = [], [], 0
    for _, p, offset, cap, *_ in h["parts"]:
        cap = min(cap, h["max_bytes"] - total)
        data = b""
        for b in logs[p][offset // 10:]:
            if cap <= 0 or (data and len(data) + len(b) > cap):
                break
            data += b
        entries.append((p, 0, 10 * len(logs[p])))
        payloads.append(data)
        total += len(data)
    net.answer_fetch(broker, i, entries, payloads)


def test_partitions_of_one_leader_take_turns_at_a_fetch_their_backlogs_fill(make: Any) -> None:
    """Two partitions on one leader, each with a backlog of batches of 1 MiB (a producer's
    default batch): at the consumer service's default share (1 MiB) the fetch's max_bytes and
    each part's are one, and the part asked first spends it all with its first batch. Asked in
    the same order each time, partition 1 was never read while partition 0 had records (Kafka's
    consumer moves a partition that returned records to the end of its next fetch)."""
    c, net = make(partitions=(0, 1), leaders={0: 1, 1: 1}, buffered_bytes_max=1024 * KIB)
    logs = {p: [batch(10 * k, 10, 105 * KIB) for k in range(10)] for p in (0, 1)}
    read = {0: 0, 1: 0}
    for _ in range(6):
        answer_as_a_broker(net, 1, logs)
        for r in c.poll(0, max_records=10_000):
            assert r.offset == read[r.partition]
            read[r.partition] += 1
        c.poll(0)
    assert read == {0: 30, 1: 30}


def test_a_leader_asked_before_the_others_have_positions_leaves_them_their_share(make: Any) -> None:
    """As a consumer service's instance reads (its FETCH cap is its whole share): partitions
    positioned one by one (a LIST_OFFSETS each) have their leaders asked one by one. The first
    asked took the whole bound; the other waited for its long poll to come back (500 ms, or
    until its records were taken)."""
    bound = 1024 * KIB
    net, reactor = Net(), FakeReactor(ManualClock(1_000))
    c = Consumer(BOOTSTRAP, clock=reactor.clock, reactor=reactor, client_factory=net.client,
                 auto_offset_reset="earliest", buffered_bytes_max=bound, fetch_bytes_max=bound,
                 partition_fetch_bytes_max=bound)
    try:
        c.assign([(T, 0), (T, 1)])
        c.poll(0)
        net.answer_metadata(metadata_of({0: 1, 1: 2}))
        net.answer_metadata(metadata_of({0: 1, 1: 2}))  # the coordinator's, as the reading begins
        c.poll(0)
        for b in (1, 2):
            [(_, i)] = net.open(P.LIST_OFFSETS, endpoint(b))
            net.answer(endpoint(b), i, {"parts": [[T, b - 1, 0, 0]]})
            c.poll(0)
            assert net.fetch(b)[1]["max_bytes"] == bound // 2
    finally:
        c.close()


# -- poll(max_bytes=...) ----------------------------------------------------------------------
RECORDS = 20_000  # of 100 bytes, in batches of 500: one fetch answer, one view


def _records_unpacked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many records each ``RecordBatchView.records`` call built, from now on."""
    built: list[int] = []
    records = RecordBatchView.records

    def counting(view: RecordBatchView) -> list:
        out = records(view)
        built.append(len(out))
        return out
    monkeypatch.setattr(RecordBatchView, "records", counting)
    return built


def test_a_poll_cut_by_max_bytes_unpacks_about_what_it_returns(make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    c, net = make(buffered_bytes_max=64 * 1024 * KIB, fetch_bytes_max=64 * 1024 * KIB,
                  partition_fetch_bytes_max=64 * 1024 * KIB)
    i, _ = net.fetch(1)
    data = b"".join(batch(base, 500, 100) for base in range(0, RECORDS, 500))
    net.answer_fetch(1, i, [(0, 0, RECORDS)], [data])
    built = _records_unpacked(monkeypatch)
    got: list[int] = []
    for _ in range(RECORDS):
        records = c.poll(0, max_records=5000, max_bytes=64 * 100)  # 64 records of the 5,000 taken
        assert 0 < len(records) <= 64
        got += [r.offset for r in records]
        if len(got) == RECORDS:
            break
    assert got == list(range(RECORDS))
    assert c._buffered_bytes == 0 and c._buffered_records == 0
    assert net.fetch(1)[1]["parts"][0][2] == RECORDS  # nothing fetched again
    # before: each poll unpacked all it took (up to 5,000) to return 64 -- 39x the records read
    assert sum(built) <= 3 * RECORDS, f"{sum(built)} records unpacked to return {RECORDS}"
    assert c.position((T, 0)) == RECORDS


# -- what a cut batch leaves decoded ------------------------------------------------------------
def keyed_batch(base: int, n: int) -> bytes:
    """``n`` small keyed records (not of one layout: unpacked as tuples), as the leader wrote them."""
    recs = [(1_000 + i, b"key-%04d" % (i % 10_000), b"v" * (i % 7 + 4), None) for i in range(n)]
    return as_leader_wrote(build_batch(recs), base, 1)


def test_a_batch_decoded_for_the_rest_of_a_cut_counts_against_the_bound(make: Any) -> None:
    """A poll that returns part of a batch decodes the whole batch once, and keeps it decoded for
    the rest, still buffered (``fabric.decoded_batches``): ~8 times its fetched bytes for
    small records. Not counted, the consumer fetched ahead as if it held only the fetched bytes --
    what it held and asked for went past its bound by the decoded batch (at a consumer
    service's 1 MiB share, a batch of 1 MiB held ~8 MiB). Measured, not computed: what the
    consumer holds after the poll (tracemalloc) and what its fetches in flight may bring."""
    bound = 4 * 1024 * KIB
    c, net = make(buffered_bytes_max=bound, fetch_bytes_max=bound, partition_fetch_bytes_max=bound)
    first, second = keyed_batch(0, 10_000), keyed_batch(10_000, 10)
    i, _ = net.fetch(1)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        net.answer_fetch(1, i, [(0, 0, 10_010)], [first])
        i, h = net.fetch(1)  # the prefetch: the room left beside the fetched bytes
        assert h["max_bytes"] == bound - len(first)
        got = c.poll(0, max_records=10)  # a tenth of a batch: the rest stays buffered
        assert [r.offset for r in got] == list(range(10))
        del got
        net.answer_fetch(1, i, [(0, 0, 10_010)], [second])  # the prefetch's answer: the next asks the room
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before + len(first) + len(second)
    finally:
        tracemalloc.stop()
    asked = sum(h["max_bytes"] for _, h in net.fetches(1))
    assert held + asked <= bound, f"held {held} and asked for {asked}: over the bound of {bound}"
    # and the reading goes on once the rest is taken
    assert [r.offset for r in c.poll(0, max_records=100_000)] == list(range(10, 10_010))
    assert c._buffered_bytes == 0 and c._decoded.bytes == 0
    i, _ = net.fetch(1)
    net.answer_fetch(1, i, [(0, 0, 10_010)], [b""])  # that fetch's long poll ends empty
    c.poll(0)
    assert net.fetch(1)[1]["max_bytes"] == bound  # nothing held: the whole bound again


class _TallyCutInByTheConsumer(HeldBytes):
    """A consumer's count of decoded batches whose write from ``reader`` (another thread) waits,
    up to ``wait_s`` (a second), for ``taken`` -- the consumer's thread taking the rest
    meanwhile -- after the value it adds to was read: the interleaving a thread switch there makes."""

    __slots__ = ("_n", "reader", "adding", "taken", "wait_s")

    def __init__(self) -> None:
        self.reader: threading.Thread | None = None
        self.wait_s = 1.0
        self.adding, self.taken = threading.Event(), threading.Event()
        super().__init__()

    @property  # type: ignore[override]
    def bytes(self) -> int:
        return self._n

    @bytes.setter
    def bytes(self, n: int) -> None:
        if threading.current_thread() is self.reader:
            self.adding.set()
            self.taken.wait(timeout=self.wait_s)
        self._n = n


def test_a_view_read_on_another_thread_never_skews_the_count_of_decoded_batches(make: Any) -> None:
    """A ``poll_batch`` view handed to a worker thread is read there, while the consumer's thread
    takes the rest of its fetch: reading part of a batch keeps it decoded for the rest and counts
    it in the consumer's ``_decoded``, and the take of the rest counts the fetch's decoded
    batches out. Unlocked, a thread switch between the read of the count and its write lost
    the take's update: the count stayed up with nothing buffered, for good -- each time the
    room a fetch asks for smaller, the consumer stalled for good once it passed the bound."""
    c, net = make(buffered_bytes_max=1024 * KIB)
    tally = c._decoded = _TallyCutInByTheConsumer()
    i, _ = net.fetch(1)
    net.answer_fetch(1, i, [(0, 0, 1_000)], [keyed_batch(0, 1_000)])
    [head] = c.poll_batch(0, max_records=10)  # the rest of the batch stays buffered
    tally.reader = threading.Thread(target=lambda: head.values)
    tally.reader.start()
    assert tally.adding.wait(timeout=5)  # the worker is adding the decoded batch
    [rest] = c.poll_batch(0, max_records=100_000)
    tally.taken.set()
    tally.reader.join(timeout=5)
    assert rest.first_offset == 10 and rest.next_offset == 1_000 and not c._buffer
    assert c._decoded.bytes == 0, "a decoded batch still counted with nothing buffered"


def fetched_offsets(net: Net, broker: int) -> list[int]:
    """The offsets every FETCH sent to ``broker`` asked partition 0 for, in order."""
    return [h["parts"][0][2] for command, h, *_ in net.clients[endpoint(broker)].sent if command == P.FETCH]


def test_a_give_back_right_after_a_put_back_fetches_nothing_again(make: Any) -> None:
    """A poll cut by max_bytes puts the rest back; a give-back of what it returned (a consumer
    service's instance whose answer was lost, or whose poll outlasted its caller) moved the
    partition back as a seek does: everything buffered of it -- the runs just put back and what
    was fetched ahead -- was dropped and fetched again from the first record given back."""
    c, net = make(buffered_bytes_max=1024 * KIB)
    i, _ = net.fetch(1)
    net.answer_fetch(1, i, [(0, 0, 100)], [b"".join(batch(base, 25, 100) for base in range(0, 100, 25))])
    assert [r.offset for r in c.poll(0, max_records=5000, max_bytes=30 * 100)] == list(range(30))
    c.give_back([((T, 0), 0)])
    assert c.position((T, 0)) == 0
    i, h = net.fetch(1)  # the prefetch, asked when the answer came: its long poll ends empty
    assert h["parts"][0][2] == 100
    net.answer_fetch(1, i, [(0, 0, 100)], [b""])
    got: list[int] = []
    for _ in range(10):
        got += [r.offset for r in c.poll(0, max_records=5000, max_bytes=30 * 100)]
    assert fetched_offsets(net, 1) == [0, 100, 100], "fetched again"
    assert got == list(range(100))


def test_a_give_back_below_the_put_back_runs_answer_fetches_again_from_there(make: Any) -> None:
    """Records of an earlier answer than the run put back are not held any more: a give-back
    to them fetches the partition again from there, as before."""
    c, net = make(buffered_bytes_max=1024 * KIB)
    i, _ = net.fetch(1)
    net.answer_fetch(1, i, [(0, 0, 20)], [batch(0, 20, 100)])
    i, _ = net.fetch(1)
    net.answer_fetch(1, i, [(0, 0, 40)], [batch(20, 20, 100)])
    assert [r.offset for r in c.poll(0, max_records=5000, max_bytes=30 * 100)] == list(range(30))
    c.give_back([((T, 0), 10)])
    i, h = net.fetch(1)  # the prefetch at 40, then the partition again from 10
    net.answer_fetch(1, i, [(0, 0, 40)], [b""])
    c.poll(0)
    assert fetched_offsets(net, 1) == [0, 20, 40, 10]
