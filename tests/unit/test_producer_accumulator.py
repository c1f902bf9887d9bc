"""The producer's record accumulator and metadata cache, and the local errors of ``send``:
conditions the client finds itself are ``ClientError``s with the protocol code of the
condition, never a ``RemoteError`` (no node said anything)."""

from __future__ import annotations

import threading
import time

import pytest

from fabric import protocol as P
from fabric.client.accumulator import AccumulatorSettings, RecordAccumulator
from fabric.client.futures import RecordFutures
from fabric.client.metadata_cache import MetadataCache
from fabric.client.producer import Producer
from fabric.clock import ManualClock
from fabric.errors import (BufferExhaustedError, ClientError, ClientTimeoutError, FabricError, RecordSizeExceededError,
                           RemoteError, TopicNotInMetadataError)
from fabric.metadata import ClusterMetadata

NOWHERE = "127.0.0.1:9"  # nothing listens: a test that reached the network would wait, not pass


def _accumulator(**settings: int) -> tuple[RecordAccumulator, ManualClock, list[int]]:
    clock = ManualClock(1000)
    wakes: list[int] = []
    acc = RecordAccumulator(AccumulatorSettings(**settings), clock, wake=lambda: wakes.append(clock.now_ms()))
    return acc, clock, wakes


def _append(acc: RecordAccumulator, partition: int = 0, size: int = 100, topic: str = "t"):  # noqa: ANN202
    return acc.append(topic, partition, 0, None, b"v", None, size)


def test_a_batch_closes_at_its_record_limit_and_wakes_the_sender() -> None:
    acc, clock, wakes = _accumulator(batch_records_max=3, linger_ms=50)
    for _ in range(2):
        _append(acc)
    assert acc.take_ready(clock.now_ms()) == [] and wakes == []
    _append(acc)
    [batch] = acc.take_ready(clock.now_ms())
    assert batch.record_count == 3 and wakes == [1000]


def test_by_default_a_batch_of_small_records_closes_at_its_byte_bound_not_at_a_thousand_records() -> None:
    """The default record bound lets 100-byte records fill a batch up to its 1 MiB: the brokers'
    per-batch work is spread over ~9,000 records, not 1,000."""
    acc, clock, _ = _accumulator(linger_ms=60_000)
    record_bytes = 114  # a 100-byte value as the producer counts it
    per_batch = AccumulatorSettings().batch_bytes_max // record_bytes  # as many as fit
    for _ in range(per_batch - 1):
        _append(acc, size=record_bytes)
    assert acc.take_ready(clock.now_ms()) == []
    _append(acc, size=record_bytes)  # the next would not fit: the batch is full
    [batch] = acc.take_ready(clock.now_ms())
    assert batch.record_count == per_batch > 9_000 and batch.size_bytes <= AccumulatorSettings().batch_bytes_max


def test_an_open_batch_is_ready_once_its_linger_has_passed() -> None:
    acc, clock, _ = _accumulator(linger_ms=50)
    _append(acc, 0)
    _append(acc, 1)
    assert acc.take_ready(clock.now_ms() + 49) == []
    assert sorted(b.partition for b in acc.take_ready(clock.now_ms() + 50)) == [0, 1]


def test_with_linger_0_a_batch_opened_on_an_idle_partition_wakes_the_sender_at_once() -> None:
    """A record after a pause leaves at once, not at the sender's next tick; a batch opened
    while its partition has a request in flight, or with a linger, waits as before."""
    clock = ManualClock(1000)
    wakes: list[tuple[str, int]] = []
    busy = {("t", 1)}
    for linger_ms, expected in ((0, [("t", 0), ("t", 0)]), (5, [])):
        wakes.clear()
        acc = RecordAccumulator(AccumulatorSettings(linger_ms=linger_ms), clock, wake=lambda: wakes.append(("t", 0)),
                                idle=lambda tp: tp not in busy)
        _append(acc, 0)            # opens a batch on idle partition 0: wake
        _append(acc, 0)            # the same open batch: no second wake
        _append(acc, 1)            # partition 1 is busy: its reply's pass takes the batch
        acc.append_many("t", 0, 0, [b"v", b"v"], 1, lambda i, j: [b""], )  # joins the open batch: no wake
        assert acc.take_ready(clock.now_ms() + linger_ms, busy) != []
        acc.append_many("t", 0, 0, [b"v"], 1, lambda i, j: [b""])  # opens a new one on idle partition 0: wake
        assert wakes == expected, linger_ms


def test_a_full_buffer_is_a_local_error_after_max_block_ms_and_release_frees_it() -> None:
    acc, clock, wakes = _accumulator(buffer_bytes_max=250, max_block_ms=50, linger_ms=0)
    _append(acc, size=200)
    started = time.monotonic()
    with pytest.raises(BufferExhaustedError) as e:
        _append(acc, size=100)
    assert time.monotonic() - started >= 0.04 and wakes, "it waits, and asks the sender to make room"
    assert e.value.code == P.BUFFER_FULL and not isinstance(e.value, RemoteError)
    [batch] = acc.take_ready(clock.now_ms())
    batch.complete(0, None)
    acc.release(batch)
    assert acc.buffered_bytes == 0
    _append(acc, size=100)


def test_an_append_waiting_for_space_goes_on_when_a_batch_is_released() -> None:
    acc, clock, _ = _accumulator(buffer_bytes_max=250, max_block_ms=5000, linger_ms=0)
    _append(acc, size=200)
    [batch] = acc.take_ready(clock.now_ms())
    threading.Timer(0.05, acc.release, [batch]).start()
    started = time.monotonic()
    _append(acc, size=100)
    assert time.monotonic() - started < 4


def test_waiting_for_a_result_that_is_not_there_is_a_local_timeout() -> None:
    acc, _, _ = _accumulator()
    future = _append(acc)
    with pytest.raises(ClientTimeoutError) as e:
        future.result(0)
    assert e.value.code == P.REQUEST_TIMED_OUT and not isinstance(e.value, RemoteError)


def test_asking_for_the_error_of_a_record_whose_outcome_is_not_known_is_a_timeout_not_none() -> None:
    """``exception(timeout)`` of a record not yet answered raised nothing and returned None --
    what it returns for a delivered record -- so ``if f.exception(1) is None: mark_written()``
    marked a record nobody acknowledged. It raises ``ClientTimeoutError`` as ``result`` does
    (a ``TimeoutError``, as ``concurrent.futures.Future.exception`` raises); answered, it
    returns the record's error or None."""
    acc, _, _ = _accumulator()
    delivered, failed = _append(acc), _append(acc, partition=1)
    of_send_many = RecordFutures([(delivered.batch, delivered.index, 1)])
    for waits in (lambda: delivered.exception(0), lambda: of_send_many.exception(0)):
        with pytest.raises(TimeoutError) as e:
            waits()
        assert isinstance(e.value, ClientTimeoutError) and e.value.code == P.REQUEST_TIMED_OUT
    delivered.batch.complete(7, None)
    failed.batch.complete(-1, RemoteError(P.NOT_ENOUGH_REPLICAS, "isr too small"))
    assert delivered.exception(0) is None and delivered.result(0).offset == 7
    assert failed.exception(0).code == P.NOT_ENOUGH_REPLICAS


def test_keyless_records_stick_to_one_partition_until_its_batch_closes() -> None:
    acc, clock, _ = _accumulator(batch_records_max=2, linger_ms=1000)
    first = acc.sticky_partition("t", 3)
    assert acc.sticky_partition("t", 3) == first
    _append(acc, first)
    _append(acc, first)  # the batch is full and closes
    assert acc.sticky_partition("t", 3) != first


# -- the metadata cache --------------------------------------------------------------------
def _md(version: int, topics: tuple[str, ...] = ("t",)) -> ClusterMetadata:
    return ClusterMetadata.from_wire({"version": version, "brokers": [[1, "127.0.0.1", 1, 2, True]],
                                      "topics": {t: {"partitions": [[1, 0, [1], [1]]] * 2} for t in topics}})


def test_the_cache_never_goes_back_to_an_older_version() -> None:
    cache = MetadataCache(wake=lambda: None)
    assert cache.update(_md(5)) and not cache.update(_md(4)) and cache.current.version == 5
    assert cache.update(_md(5, ("t", "u"))) and "u" in cache.current.topics


def test_a_thread_waiting_for_a_topic_asks_for_a_refresh_and_gets_the_update() -> None:
    asked: list[bool] = []
    cache = MetadataCache(wake=lambda: asked.append(True))
    cache.take_wanted()
    threading.Timer(0.05, cache.update, [_md(1)]).start()
    assert cache.partition_count("t", 5000) == 2
    assert asked and cache.take_wanted() and not cache.take_wanted()


def test_a_topic_that_never_appears_is_a_local_error() -> None:
    cache = MetadataCache(wake=lambda: None)
    with pytest.raises(TopicNotInMetadataError) as e:
        cache.partition_count("nope", 50)
    assert e.value.code == P.UNKNOWN_TOPIC_OR_PARTITION and not isinstance(e.value, RemoteError)


# -- the producer's own conditions -------------------------------------------------------------
def test_send_raises_local_errors_for_what_the_client_finds_itself() -> None:
    with Producer(NOWHERE, record_bytes_max=100, max_block_ms=100) as p:
        with pytest.raises(RecordSizeExceededError) as e:
            p.send("t", b"x" * 200)
        assert e.value.code == P.RECORD_TOO_LARGE
        with pytest.raises(TopicNotInMetadataError):
            p.send("t", b"x")  # no node answers: the topic is not in the (empty) metadata
        p.metadata.update(_md(1))
        with pytest.raises(TopicNotInMetadataError):
            p.send("t", b"x", partition=7)
    for cls in (RecordSizeExceededError, TopicNotInMetadataError, BufferExhaustedError, ClientTimeoutError):
        assert issubclass(cls, ClientError) and not issubclass(cls, RemoteError)


def test_header_bytes_count_against_the_record_and_batch_bounds() -> None:
    """Small values with large headers: the batch closes at its byte bound (a batch the size of
    10,000 such records would be over the broker's bound and fail whole), and a record whose
    headers alone are over the record bound is refused at once."""
    headers = [("trace", b"t" * 1800)]
    with Producer(NOWHERE, max_block_ms=100, linger_ms=60_000, batch_bytes_max=10_000, record_bytes_max=4_000) as p:
        p.metadata.update(_md(1))
        futures = [p.send("t", b"v" * 10, headers=headers, partition=0) for _ in range(7)]
        first = futures[0].batch
        assert 5 * 1800 <= first.size_bytes <= 10_000  # a sixth would not fit
        assert [f.batch is first for f in futures] == [True] * 5 + [False] * 2
        with pytest.raises(RecordSizeExceededError):
            p.send("t", b"v", headers=[("big", b"x" * 4_000)], partition=0)
        with pytest.raises(RecordSizeExceededError):  # the name is counted too
            p.send("t", b"v", headers=[("n" * 4_000, None)], partition=0)
        _settle(p)


@pytest.mark.parametrize("headers", [[("a", object())], "abc", [("a",)], [(1, b"x")], [("a", "text")], [["a", 1]],
                                     ("a", b"x"), [("a", b"x"), None]])
def test_headers_that_are_not_name_and_bytes_pairs_are_refused_at_send(headers: object) -> None:
    """Refused on the caller's thread with nothing queued -- not found by the I/O thread when it
    packs the batch (which would fail the producer), nor by a consumer that cannot read them."""
    with Producer(NOWHERE, max_block_ms=100, linger_ms=60_000) as p:
        p.metadata.update(_md(1))
        with pytest.raises(FabricError, match="headers"):
            p.send("t", b"v", headers=headers, partition=0)  # type: ignore[arg-type]
        assert p.accumulator._open == {}
        p.send("t", b"v", headers=[("a", b"x"), ("b", None), ("c", bytearray(b"y"))], partition=0)
        _settle(p)


def _settle(p: Producer) -> None:
    """Complete every queued batch by hand, so that the producer closes without a cluster."""
    for b in p.accumulator.close_all():
        b.complete(-1, None)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread dies loudly
def test_a_bug_on_the_io_thread_fails_the_waiting_records_and_every_later_send(monkeypatch: pytest.MonkeyPatch) -> None:
    from fabric.errors import FabricError
    bug = TypeError("a bug in the I/O thread's pass")
    real_take_ready = RecordAccumulator.take_ready
    calls = [0]

    def take_ready_once_broken(self: RecordAccumulator, now_ms: int, *busy: object) -> list:
        calls[0] += 1
        if calls[0] == 1:  # the I/O thread's next pass meets the bug; its shutdown then takes the rest
            raise bug
        return real_take_ready(self, now_ms, *busy)
    with Producer(NOWHERE, max_block_ms=100, linger_ms=60_000) as p:
        p.metadata.update(_md(1))
        future = p.send("t", b"x", partition=0)
        monkeypatch.setattr(RecordAccumulator, "take_ready", take_ready_once_broken)
        p.sender.wake()
        with pytest.raises(FabricError) as e:
            future.result(5)
        assert e.value.__cause__ is bug and "I/O thread" in str(e.value)
        with pytest.raises(FabricError) as later:
            p.send("t", b"y", partition=0)
        assert later.value.__cause__ is bug
