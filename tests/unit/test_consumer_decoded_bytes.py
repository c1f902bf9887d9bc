"""What a batch cut by a poll leaves decoded for the rest of it counts against the consumer's
``buffered_bytes_max`` (``fabric.decoded_batches``; the first tests are in
tests/unit/test_consumer_buffered_bytes.py). Here: records with headers (their names, values and
the objects that hold them were not counted: a consumer of such records fetched ahead past its
bound); a prefetch already in flight when a batch is decoded (asked with the room before the
decoded copy was counted, its answer took the consumer past its bound); and two consumers of one
process counting under one lock (a consumer service's instances waited for each other). Built
for real on a fake reactor with recording RPC clients; what a consumer holds is measured with
tracemalloc, not computed."""

from __future__ import annotations

import gc
import threading
import tracemalloc
from typing import Any, Callable

import pytest

from fabric.client.consumer import Consumer
from fabric.records import build_batch
from tests.unit.fakes import as_leader_wrote
from tests.unit.test_consumer_buffered_bytes import (KIB, _TallyCutInByTheConsumer, batch, keyed_batch,
                                                     reading_consumer)
from tests.unit.test_consumer_failover import T, Net

BOUND = 4 * 1024 * KIB


@pytest.fixture
def make() -> Any:
    made: list[Consumer] = []
    yield lambda **kw: reading_consumer(made, **kw)
    for c in made:
        c.close()


def headered_batch(base: int, n: int, headers: int, name: str = "trace") -> bytes:
    """``n`` small keyless records with ``headers`` headers each (a trace id and the like), as
    the leader wrote them from ``base``."""
    recs = [(1_000 + i, None, b"v" * (i % 7 + 4), [(f"{name}-{h}", b"%016d" % i) for h in range(headers)])
            for i in range(n)]
    return as_leader_wrote(build_batch(recs), base, 1)


def held_while(step: Callable[[], None]) -> int:
    """The bytes allocated by ``step`` and still held after it (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        step()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def open_asks(net: Net) -> int:
    """What the fetches in flight to broker 1 may bring."""
    return sum(h["max_bytes"] for _, h in net.fetches(1))


@pytest.mark.parametrize("headers, name", [(1, "trace"), (2, "trace"), (8, "trace"), (2, "clé"), (8, "名前")])
def test_a_cut_batch_of_records_with_headers_counts_what_its_headers_take(make: Any, headers: int, name: str) -> None:
    """Decoded, a header is a pair, a str and a bytes object: 160-190 bytes beside its bytes in
    the payload (ASCII names to others), and a record with headers ~50 more for their tuple
    (measured on CPython 3.11). The
    estimate counted a record as its payload bytes and 192 (keyed or not, without headers): a
    batch of records with two headers held twice what was counted, and the consumer fetched
    ahead the difference past its bound (held and asked for 5.3 MB at a 4 MiB bound)."""
    c, net = make(buffered_bytes_max=BOUND, fetch_bytes_max=BOUND, partition_fetch_bytes_max=BOUND)
    n = 2_500_000 // (190 + 175 * headers)  # a decoded batch of ~2.5 MB
    i, _ = net.fetch(1)

    def cut_and_prefetch() -> None:
        net.answer_fetch(1, i, [(0, 0, n + 10)], [headered_batch(0, n, headers, name)])
        [(j, _)] = net.fetches(1)  # the prefetch, asked before the cut: answered small
        assert [r.offset for r in c.poll(0, max_records=10)] == list(range(10))  # the rest stays buffered
        net.answer_fetch(1, j, [(0, 0, n + 10)], [headered_batch(n, 10, headers, name)])
    held = held_while(cut_and_prefetch)
    asked = open_asks(net)  # asked with the room left once the cut batch was counted
    assert held + asked <= BOUND, f"held {held} and asked for {asked}: over the bound of {BOUND}"
    assert [r.offset for r in c.poll(0, max_records=100_000)] == list(range(10, n + 10))
    assert c._buffered_bytes == 0 and c._decoded.bytes == 0


def fill(base: int, max_bytes: int) -> bytes:
    """As a broker answers a fetch of ``max_bytes`` from ``base``: whole batches (of 100
    records of 1,000 bytes) up to it."""
    one = len(batch(0, 100, 1000))
    return b"".join(batch(base + 100 * k, 100, 1000) for k in range(max_bytes // one))


def test_a_prefetch_in_flight_when_a_batch_is_decoded_brings_no_more_than_the_room_left(make: Any) -> None:
    """The prefetch of an answer is asked at once, with the room beside its fetched bytes; a poll
    that cuts a batch of it then counts the batch decoded for the rest (~8 times its bytes for
    small records). The prefetch's answer brought what it was asked for, and the consumer held
    that decoded batch beyond its bound (6.1 MB held at a 4 MiB bound). Of an answer, what the
    room left holds no more is not buffered: it is fetched again once the room is there."""
    c, net = make(buffered_bytes_max=BOUND, fetch_bytes_max=BOUND, partition_fetch_bytes_max=BOUND)
    i, _ = net.fetch(1)

    def cut_while_prefetching() -> None:
        net.answer_fetch(1, i, [(0, 0, 100_000)], [keyed_batch(0, 10_000)])
        [(j, h)] = net.fetches(1)
        assert h["max_bytes"] > BOUND * 9 // 10  # asked before the cut
        assert [r.offset for r in c.poll(0, max_records=10)] == list(range(10))
        net.answer_fetch(1, j, [(0, 0, 100_000)], [fill(10_000, h["max_bytes"])])  # all it asked for
    held = held_while(cut_while_prefetching)
    asked = open_asks(net)
    assert held + asked <= BOUND, f"held {held} and asked for {asked}: over the bound of {BOUND}"
    # what was not buffered is fetched again: the reading goes on, nothing skipped
    expected = 10
    for _ in range(100):
        got = [r.offset for r in c.poll(0, max_records=100_000)]
        assert got == list(range(expected, expected + len(got)))
        expected += len(got)
        if expected >= 20_000:
            break
        for j, h in net.fetches(1):
            net.answer_fetch(1, j, [(0, 0, 100_000)], [fill(h["parts"][0][2], h["max_bytes"])])
    assert expected >= 20_000

def test_an_answer_over_its_ask_by_a_broker_s_whole_batches_is_buffered_whole_without_a_decode(make: Any) -> None:
    """A broker gives each part at least one whole batch while the fetch's max_bytes is not spent:
    two parts of 600 KB answer a fetch of 1 MiB with 1.2 MB. Nothing was decoded since the ask:
    all of it is buffered, as before, and nothing is fetched again (shed, it was read twice)."""
    c, net = make(partitions=(0, 1), leaders={0: 1, 1: 1}, buffered_bytes_max=1024 * KIB)
    i, h = net.fetch(1)
    assert h["max_bytes"] == 1024 * KIB
    parts = [batch(0, 60, 10_000), batch(0, 60, 10_000)]
    net.answer_fetch(1, i, [(0, 0, 60), (1, 0, 60)], parts)
    assert c._buffered_bytes == sum(map(len, parts)) > 1024 * KIB
    got = c.poll(0, max_records=1_000)
    assert sorted((r.partition, r.offset) for r in got) == [(p, o) for p in (0, 1) for o in range(60)]
    c.poll(0)
    assert [p[2] for p in net.fetch(1)[1]["parts"]] == [60, 60]


def test_two_consumers_count_their_decoded_batches_without_waiting_for_each_other(make: Any) -> None:
    """The decoded batches were counted under one lock for every consumer of a process (a
    consumer service hosts many): while one consumer's count was being changed -- here by a
    worker reading a view it was handed, held up -- another consumer's cut and take waited for
    it. Each consumer counts under its own lock; the counts stay right."""
    a, net_a = make(buffered_bytes_max=1024 * KIB)
    b, net_b = make(buffered_bytes_max=1024 * KIB)
    tally = a._decoded = _TallyCutInByTheConsumer()
    tally.wait_s = 10  # b's cut and take take milliseconds: done long before, unless they wait for a
    for c, net in ((a, net_a), (b, net_b)):
        i, _ = net.fetch(1)
        net.answer_fetch(1, i, [(0, 0, 1_000)], [keyed_batch(0, 1_000)])
    [head] = a.poll_batch(0, max_records=10)
    tally.reader = threading.Thread(target=lambda: head.values)
    tally.reader.start()
    try:
        assert tally.adding.wait(timeout=5)  # a's worker is in the middle of changing a's count
        assert [r.offset for r in b.poll(0, max_records=10)] == list(range(10))  # b cuts a batch: counted
        assert b._decoded.bytes > 0
        assert [r.offset for r in b.poll(0, max_records=10_000)] == list(range(10, 1_000))
        assert b._decoded.bytes == 0
        assert tally.reader.is_alive(), "b's counting waited for a's"
    finally:
        tally.taken.set()
        tally.reader.join(timeout=5)
    [rest] = a.poll_batch(0, max_records=10_000)
    assert rest.first_offset == 10 and a._decoded.bytes == 0


def test_an_answer_smaller_than_its_ask_is_buffered_whole_when_the_room_left_holds_it(make: Any) -> None:
    """A long poll asked for the room there was comes back with little (the partitions caught
    up); a batch decoded meanwhile took some of that room, but what came back fits in what is
    left. The shed was what the room fell short of the ask, not of the answer: the whole answer
    but its first batch was let go (another partition's records, ready, fetched again a round
    trip later) though nothing was over the bound."""
    c, net = make(partitions=(0, 1), leaders={0: 1, 1: 1}, buffered_bytes_max=BOUND,
                  fetch_bytes_max=BOUND, partition_fetch_bytes_max=BOUND)
    i, _ = net.fetch(1)
    net.answer_fetch(1, i, [(0, 0, 10_000), (1, 0, 0)], [keyed_batch(0, 10_000), b""])
    [(j, h)] = net.fetches(1)
    assert [r.offset for r in c.poll(0, max_records=10)] == list(range(10))  # a cut: decoded since the ask
    room = BOUND - c._buffered_bytes - c._decoded.bytes
    assert 0 < room < h["max_bytes"]
    small = [batch(10_000, 5, 100), batch(0, 5, 100)]
    assert sum(map(len, small)) < room // 100  # what comes back fits many times over
    net.answer_fetch(1, j, [(0, 0, 10_005), (1, 0, 5)], small)
    assert c._buffered_bytes + c._decoded.bytes <= BOUND
    got = c.poll(0, max_records=100_000)
    assert sorted((r.partition, r.offset) for r in got) == \
        [(0, o) for o in range(10, 10_005)] + [(1, o) for o in range(5)]
    assert c._buffered_bytes == 0 and c._decoded.bytes == 0


def test_a_headers_field_not_an_array_is_estimated_as_one_object_not_one_header_a_byte(make: Any) -> None:
    """A record's headers field is an array of pairs; a payload not as the format says (a
    producer that wrote a string or bytes there: ``build_batch`` packs what it is given) has
    one object there, its bytes in the payload already. ``tuples_bytes`` took its length for a
    count of headers, 192 bytes each: a batch of 1 MB with 50 KB of bytes for headers was
    counted as 193 MB decoded, and the consumer stopped fetching ahead and let go of every
    answer in flight but its first batch while the rest of it was buffered."""
    c, net = make(buffered_bytes_max=BOUND, fetch_bytes_max=BOUND, partition_fetch_bytes_max=BOUND)
    recs = [(1_000 + i, b"k", b"v" * 10, b"h" * 50_000) for i in range(20)]
    odd = as_leader_wrote(build_batch(recs), 0, 1)
    i, _ = net.fetch(1)
    net.answer_fetch(1, i, [(0, 0, 20)], [odd])
    assert [r.offset for r in c.poll(0, max_records=1)] == [0]  # a cut: the rest decoded, counted
    assert 0 < c._decoded.bytes <= 2 * len(odd), f"{c._decoded.bytes} counted for a batch of {len(odd)} bytes"
    assert [r.headers for r in c.poll(0, max_records=100)] == [b"h" * 50_000] * 19
    assert c._decoded.bytes == 0


def test_a_shed_part_is_fetched_again_from_its_first_batch_let_go(make: Any) -> None:
    """Of an answer of two partitions shed after a cut, the second partition's batches let go
    are fetched again from the base offset of the first of them -- not one record skipped or
    read twice -- and everything read, nothing stays counted."""
    c, net = make(partitions=(0, 1), leaders={0: 1, 1: 1}, buffered_bytes_max=BOUND,
                  fetch_bytes_max=BOUND, partition_fetch_bytes_max=BOUND)
    i, _ = net.fetch(1)
    net.answer_fetch(1, i, [(0, 0, 10_000), (1, 0, 0)], [keyed_batch(0, 10_000), b""])
    [(j, h)] = net.fetches(1)
    assert [r.offset for r in c.poll(0, max_records=10)] == list(range(10))
    net.answer_fetch(1, j, [(0, 0, 10_000), (1, 0, 100_000)], [b"", fill(0, h["max_bytes"])])
    kept = c._fetch_positions[(T, 1)]
    assert 0 < kept < 100 * (h["max_bytes"] // len(batch(0, 100, 1000))) and kept % 100 == 0  # a batch's base
    expected = {0: 10, 1: 0}
    for _ in range(200):
        for r in c.poll(0, max_records=100_000):
            assert r.offset == expected[r.partition], (r.partition, r.offset, expected)
            expected[r.partition] += 1
        if expected[1] >= 30_000:
            break
        for k, h in net.fetches(1):
            asked = [(p[1], p[2]) for p in h["parts"]]
            net.answer_fetch(1, k, [(p, 0, 10_000 if p == 0 else 100_000) for p, _ in asked],
                             [fill(at, h["max_bytes"]) if p == 1 else b"" for p, at in asked])
    assert expected == {0: 10_000, 1: expected[1]} and expected[1] >= 30_000
