"""The follower's ReplicaFetcher against a real leader: a BrokerCore with its Loom handlers on
one side, a BrokerCore's follower replica with a real ReplicaFetcher on the other, its FETCH
requests answered through msgpack by the leader's handlers (tests/unit/fakes.py).

- A replica whose log end is below the leader's log start (retention ran while it was down)
  restarts its log at the leader's log start and catches up (Kafka's truncateFullyAndStartAt).
- A replica returning after retention removed every epoch it shares with the leader: its last
  epoch predates every epoch the leader still has and its log end is at or past the leader's
  log start, so the leader answers "diverging [-1, log start]". Truncating to that start and
  keeping the old epoch entry made it ask again at once, forever (a busy loop on two brokers).
  It must empty its log and restart at the leader's log start, with an empty epoch cache.
- A fetch answer belongs to the leader epoch it was asked in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, NamedTuple

import msgpack
import pytest

from fabric import protocol as P
from fabric import wire
from fabric.clock import ManualClock
from nodes.broker.core import BrokerCore
from nodes.broker.fetcher import RETRY_BACKOFF_MS, ReplicaFetcher
from nodes.broker.handlers import RequestHandlers
from nodes.broker.partition import Partition
from tests.unit.fakes import (
    FakeReactor,
    RecordingClient,
    as_leader_wrote,
    broker_core,
    loom_handlers,
    padded_batch,
    replica_fetcher,
    request,
    serve_fetch,
)

LEADER, FOLLOWER = 1, 2
EXCHANGES_MAX = 50  # bound on the fetch loop


class Pair(NamedTuple):
    """Two brokers' cores on one engine and clock; the follower fetches with ``fetcher``."""

    reactor: FakeReactor
    leader: BrokerCore
    handlers: RequestHandlers
    follower: BrokerCore
    fetcher: ReplicaFetcher
    client: RecordingClient
    progress: list[Partition]


@pytest.fixture(params=["memory", "segment"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    reactor = FakeReactor(ManualClock(1_000))
    leader = broker_core(tmp_path / "leader", LEADER, engine=request.param, clock=reactor.clock)
    follower = broker_core(tmp_path / "follower", FOLLOWER, engine=request.param, clock=reactor.clock)
    handlers, _ = loom_handlers(leader)
    progress: list[Partition] = []

    def on_progress(part: Partition) -> None:
        progress.append(part)
        follower.follower_appended(part)
    fetcher, client = replica_fetcher(reactor, LEADER, FOLLOWER, on_progress)
    yield Pair(reactor, leader, handlers, follower, fetcher, client, progress)
    fetcher.close()
    leader.close()
    follower.close()


def _follower(pair: Pair, epoch: int, epochs: tuple[int, ...] = (1,), per_epoch: int = 2) -> Partition:
    """The follower's replica of t-0 at ``epoch``, holding ``per_epoch`` batches of 3 records per
    epoch of ``epochs`` as a leader wrote them (what it had before it went down)."""
    part = pair.follower.open_partition("t", 0, {})
    part.become_follower(LEADER, epoch, [LEADER, FOLLOWER], [LEADER, FOLLOWER])
    seq = 0
    for e in epochs:
        for _ in range(per_epoch):
            assert part.append_as_follower(as_leader_wrote(padded_batch(3, pid=7, seq=seq), part.log_end_offset, e)) == 1
            seq += 3
    part.set_high_watermark_from_leader(part.log_end_offset - 3)
    return part


def _leader_with_retention(pair: Pair, epochs: tuple[int, ...]) -> Partition:
    """The leader's t-0, whose log went through ``epochs`` and then lost its old batches to
    retention."""
    leader = pair.leader.open_partition("t", 0, {})
    for epoch in epochs:
        leader.become_leader(epoch, [LEADER, FOLLOWER], [LEADER], now_ms=0)
        for i in range(30):
            results, _ = leader.append_as_leader([padded_batch(3, tag=f"e{epoch}-{i}")], 1 << 20)
            assert results[0][1] == 0
    leader.engine.delete_before(leader.log_end_offset - 30)
    leader.epochs.truncate_from_start(leader.log_start_offset)
    assert leader.log_start_offset > 12
    return leader


def _returning_follower(pair: Pair, leader: Partition) -> Partition:
    follower = _follower(pair, leader.leader_epoch, epochs=(1,), per_epoch=85)  # epoch 1 only, 255 records
    assert leader.log_start_offset <= follower.log_end_offset < leader.log_end_offset
    assert leader.epochs.entries[0][0] > 1  # the leader no longer knows epoch 1
    return follower


def _catch_up(pair: Pair, leader: Partition, follower: Partition) -> int:
    """Fetch until the follower's log ends where the leader's does; returns the exchanges."""
    pair.fetcher.set_partitions([follower])
    for exchange in range(EXCHANGES_MAX):
        if follower.log_end_offset == leader.log_end_offset:
            return exchange
        assert serve_fetch(pair.client, pair.handlers), "the fetcher stopped fetching"
        pair.reactor.advance(RETRY_BACKOFF_MS)  # the next fetch (at once, or after a backoff)
    raise AssertionError(f"follower stuck at {follower.log_end_offset} (leader log [{leader.log_start_offset}, "
                         f"{leader.log_end_offset}), last error {pair.fetcher.last_error})")


def _leader_answer(pair: Pair, follower: Partition) -> tuple[dict, list]:
    """The leader handlers' answer to the fetch the fetcher sends for ``follower`` now."""
    pair.fetcher.set_partitions([follower])
    _, header, _, _ = pair.client.sent[-1]
    answer = pair.handlers.on_fetch(request(P.FETCH, **header))
    assert isinstance(answer, tuple)
    return answer


# -- behind the leader's log start -------------------------------------------------------------
@pytest.mark.parametrize("leader_epochs", [(1,), (1, 2, 3)], ids=["same-epoch", "epochs-moved-on"])
def test_follower_behind_leader_log_start_catches_up(pair: Pair, leader_epochs: tuple[int, ...]) -> None:
    leader = _leader_with_retention(pair, leader_epochs)
    follower = _follower(pair, leader_epochs[-1])
    assert follower.log_end_offset < leader.log_start_offset
    _catch_up(pair, leader, follower)
    assert follower.log_start_offset == leader.log_start_offset
    assert follower.engine.read(follower.log_start_offset, 1 << 20) == leader.engine.read(leader.log_start_offset, 1 << 20)
    assert follower.epochs.entries[-1][0] == leader_epochs[-1]
    assert pair.fetcher.stream_ready(("t", 0))


def test_out_of_range_not_behind_the_log_start_does_not_reset(pair: Pair) -> None:
    part = _follower(pair, 1, epochs=(1, 2), per_epoch=4)
    end = part.log_end_offset
    pair.fetcher.set_partitions([part])
    # the leader's start is below ours: not a reason to drop our log
    pair.client.answer_last(P.FETCH, {"parts": [["t", 0, P.OFFSET_OUT_OF_RANGE, 0, end - 3, 0, None]]}, [b""])
    assert pair.progress == [] and pair.fetcher.last_error == "offset_out_of_range"
    assert (part.log_start_offset, part.log_end_offset) == (0, end)
    pair.reactor.advance(RETRY_BACKOFF_MS)  # it fetches again
    pair.client.answer_last(P.FETCH, {"parts": [["t", 0, P.OFFSET_OUT_OF_RANGE, 0, end + 900, end + 500, None]]},
                            [b""])
    assert pair.progress == [part]
    assert (part.log_start_offset, part.log_end_offset) == (end + 500, end + 500)


# -- every shared epoch retained away ------------------------------------------------------------
def test_leader_answers_epoch_minus_one_for_an_epoch_retained_away(pair: Pair) -> None:
    leader = _leader_with_retention(pair, (1, 2, 3))
    follower = _returning_follower(pair, leader)
    head, data = _leader_answer(pair, follower)
    assert head["parts"][0].diverging == [-1, leader.log_start_offset] and data == [b""]


def test_returning_replica_resets_to_the_leader_log_start_and_catches_up(pair: Pair) -> None:
    leader = _leader_with_retention(pair, (1, 2, 3))
    follower = _returning_follower(pair, leader)
    exchanges = _catch_up(pair, leader, follower)  # raises "stuck" when it loops
    assert exchanges <= 5
    assert follower.log_start_offset == leader.log_start_offset
    assert follower.engine.read(follower.log_start_offset, 1 << 20) == leader.engine.read(leader.log_start_offset, 1 << 20)
    assert follower.epochs.entries == [(leader.epochs.latest_epoch, leader.log_start_offset)]
    # and the next fetch finds nothing to fix
    head, _ = _leader_answer(pair, follower)
    assert head["parts"][0].error == 0 and head["parts"][0].diverging is None


def test_one_diverging_minus_one_answer_empties_log_and_epochs(pair: Pair) -> None:
    leader = _leader_with_retention(pair, (1, 2, 3))
    follower = _returning_follower(pair, leader)
    pair.fetcher.set_partitions([follower])
    assert serve_fetch(pair.client, pair.handlers)
    assert pair.progress == [follower]
    start = leader.log_start_offset
    assert (follower.log_start_offset, follower.log_end_offset) == (start, start)
    assert follower.epochs.entries == [] and len(follower.producers) == 0
    assert follower.high_watermark == start
    # the producer state of the dropped log is gone with it; new batches append at the start
    assert follower.append_as_follower(leader.read(start, 1 << 20, leader.log_end_offset)) > 0


# -- an answer belongs to the epoch it was asked in ---------------------------------------------
def test_fetch_reply_from_an_earlier_epoch_is_not_applied(pair: Pair) -> None:
    leader = pair.leader.open_partition("t", 0, {})
    leader.become_leader(3, [LEADER, FOLLOWER], [LEADER, FOLLOWER], now_ms=0)
    leader.append_as_leader([padded_batch(2)], 1 << 20)
    f = _follower(pair, 3, per_epoch=0)
    pair.fetcher.set_partitions([f])  # asked in epoch 3
    f.become_follower(LEADER, 5, [LEADER, FOLLOWER], [LEADER, FOLLOWER])  # leadership moved away and back
    data = leader.read(0, 1 << 20, leader.log_end_offset)
    pair.client.answer_last(P.FETCH, {"parts": [["t", 0, 0, 2, 2, 0, None]]}, [data])
    assert pair.progress == []
    assert f.log_end_offset == 0 and not pair.fetcher.stream_ready(("t", 0))
    pair.reactor.advance(RETRY_BACKOFF_MS)  # not yet checked in epoch 5: it asks again
    assert pair.client.sent[-1][1]["parts"][0][4] == 5
    pair.client.answer_last(P.FETCH, {"parts": [["t", 0, 0, 2, 2, 0, None]]}, [data])
    assert pair.progress == [f]
    assert f.log_end_offset == 2 and pair.fetcher.stream_ready(("t", 0))


def test_a_malformed_fetch_answer_is_counted_and_dropped(pair: Pair) -> None:
    f = _follower(pair, 1, per_epoch=1)
    pair.fetcher.set_partitions([f])
    pair.client.answer_last(P.FETCH, {"parts": [["t", 0, 0, "hw", 3, 0, None], ["t"]]}, [b"", b""])
    assert pair.fetcher.counters["repl_malformed"] == 2 and pair.progress == []
    assert f.log_end_offset == 3


def test_the_fetch_request_and_the_ack_have_the_bytes_they_had(pair: Pair) -> None:
    f = _follower(pair, 1, per_epoch=1)
    pair.fetcher.set_partitions([f])
    _, header, _, _ = pair.client.sent[-1]
    assert wire.pack(header["parts"]) == msgpack.packb([["t", 0, 3, 64 * 1024, 1, 1]])
    pair.fetcher.ack(f)
    assert wire.pack(pair.client.oneway[-1][1]) == msgpack.packb({"broker_id": FOLLOWER, "incarnation": "",
                                                                       "parts": [["t", 0, 3, 1]]})
