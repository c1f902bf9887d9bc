"""What a broker answers a consumer's FETCH (replica id -1) when the consumer's position and the
replica it reaches disagree -- the answers ``fabric.client.consumer.Consumer`` resets a position
on (OFFSET_OUT_OF_RANGE: ``auto_offset_reset``) or only retries on (NOT_LEADER,
FENCED_LEADER_EPOCH: a backoff and new metadata, the position kept).

A consumer must not be sent to ``auto_offset_reset`` -- at ``latest``, past records that exist
-- by a replica that is not the leader: a deposed leader truncated after the failover (its log
end now below the consumer's position) answers NOT_LEADER, a leader that has not yet heard of
the epoch the consumer knows answers FENCED_LEADER_EPOCH, and a newly elected leader whose high
watermark still lags the one the consumer read to answers nothing yet (no error). Only a
position outside the leader's own log -- below a log start that retention moved, past its log
end -- is out of range. Real BrokerCore on the memory engine."""

from __future__ import annotations

from pathlib import Path

from fabric import protocol as P
from fabric.records import build_batch
from nodes.broker.core import BrokerCore
from nodes.broker.messages import FetchEntry, FetchInput
from nodes.broker.partition import Partition
from tests.unit.fakes import broker_core

ME, OTHER = 1, 2
EPOCH = 3


def _leader_of_ten(tmp_path: Path) -> tuple[BrokerCore, Partition]:
    """Broker 1 leads t-0 at EPOCH with records 0..9, all under the HW."""
    core = broker_core(tmp_path, ME)
    part = core.open_partition("t", 0, {})
    part.become_leader(EPOCH, [ME], [ME], now_ms=0)
    for first in (0, 5):  # two batches of five
        part.append_as_leader([build_batch([(1_700_000_000_000, None, b"v%d" % i, None)
                                            for i in range(first, first + 5)])], 1 << 20)
    part.maybe_advance_high_watermark()
    assert part.high_watermark == 10
    return core, part


def _consumer_fetch(core: BrokerCore, offset: int, epoch: int = EPOCH) -> FetchEntry:
    entry, _ = core.fetch(FetchInput("t", 0, offset, 64 * 1024, epoch, -1), -1, now_ms=1000, budget_bytes=64 * 1024)
    return entry


def test_a_deposed_leader_truncated_below_the_consumers_position_answers_not_leader(tmp_path: Path) -> None:
    core, part = _leader_of_ten(tmp_path)
    part.become_follower(OTHER, EPOCH + 1, [ME, OTHER], [OTHER])
    part.truncate_to(6)  # (an unclean election's truncation: a clean one keeps the HW)
    entry = _consumer_fetch(core, 10)  # the consumer's metadata still names broker 1
    assert entry.error == P.NOT_LEADER


def test_a_leader_behind_the_epoch_the_consumer_knows_answers_fenced(tmp_path: Path) -> None:
    core, part = _leader_of_ten(tmp_path)
    assert _consumer_fetch(core, 12, epoch=EPOCH + 1).error == P.FENCED_LEADER_EPOCH


def test_a_new_leader_whose_high_watermark_lags_answers_no_records_and_no_error(tmp_path: Path) -> None:
    core, part = _leader_of_ten(tmp_path)
    part.become_follower(OTHER, EPOCH + 1, [ME, OTHER], [ME, OTHER])
    part.high_watermark = 4  # its follower view of the HW lagged the old leader's (10)
    part.become_leader(EPOCH + 2, [ME, OTHER], [ME, OTHER], now_ms=0)
    assert part.high_watermark < 10
    entry, data = core.fetch(FetchInput("t", 0, 10, 64 * 1024, EPOCH + 2, -1), -1, now_ms=1000,
                             budget_bytes=64 * 1024)
    assert entry.error == 0 and data == b""


def test_only_a_position_outside_the_leaders_own_log_is_out_of_range(tmp_path: Path) -> None:
    core, part = _leader_of_ten(tmp_path)
    assert _consumer_fetch(core, 10).error == 0  # at the log end: waits for records
    assert _consumer_fetch(core, 11).error == P.OFFSET_OUT_OF_RANGE
    part.engine.delete_before(5)  # retention
    assert part.log_start_offset == 5
    entry = _consumer_fetch(core, 4)
    assert entry.error == P.OFFSET_OUT_OF_RANGE and entry.log_start_offset == 5
    assert _consumer_fetch(core, 5).error == 0


def test_a_consumer_naming_the_epoch_of_its_last_record_is_told_where_a_new_leaders_log_parts(tmp_path: Path) -> None:
    """Records 0..9 were written in epoch EPOCH; the consumer read them from that leader (it names
    EPOCH as its last record's epoch) up to 10. This replica, which had only 0..4 (the rest of
    epoch EPOCH lost with the old leader), was elected uncleanly in a later epoch and took 5..6.
    A consumer fetch at 10 naming EPOCH is answered where the logs part -- the end of EPOCH here,
    5 -- so that it reads 5..6 instead of being reset by its policy past them."""
    core, part = _leader_of_ten(tmp_path)
    part.become_follower(OTHER, EPOCH + 1, [ME, OTHER], [OTHER])
    part.truncate_to(5)
    part.become_leader(EPOCH + 2, [ME, OTHER], [ME], now_ms=0)
    part.append_as_leader([build_batch([(1_700_000_000_000, None, b"new%d" % i, None) for i in range(2)])], 1 << 20)
    part.maybe_advance_high_watermark()
    entry, data = core.fetch(FetchInput("t", 0, 10, 64 * 1024, EPOCH + 2, EPOCH), -1, now_ms=1000,
                             budget_bytes=64 * 1024)
    assert entry.error == 0 and entry.diverging == [EPOCH, 5] and data == b""
    entry, data = core.fetch(FetchInput("t", 0, 5, 64 * 1024, EPOCH + 2, EPOCH), -1, now_ms=1000,
                             budget_bytes=64 * 1024)
    assert entry.error == 0 and entry.diverging is None and data != b"", "at the end of its epoch: read on"
    # a consumer that read a newer epoch than this leader's is not judged by it (it is the one behind)
    entry = _consumer_fetch_last(core, 5, EPOCH + 3)
    assert entry.error == 0 and entry.diverging is None


def _consumer_fetch_last(core: BrokerCore, offset: int, last_epoch: int) -> FetchEntry:
    entry, _ = core.fetch(FetchInput("t", 0, offset, 64 * 1024, -1, last_epoch), -1, now_ms=1000,
                          budget_bytes=64 * 1024)
    return entry


def _empty_replica_elected_uncleanly(tmp_path: Path, written: int) -> tuple[BrokerCore, Partition]:
    """Broker 1 held nothing of t-0 (records 0..9 of epoch EPOCH went to another replica, which
    was lost); elected uncleanly in a later epoch, it took ``written`` records from offset 0."""
    core = broker_core(tmp_path, ME)
    part = core.open_partition("t", 0, {})
    part.become_leader(EPOCH + 2, [ME, OTHER], [ME], now_ms=0)
    part.append_as_leader([build_batch([(1_700_000_000_000, None, b"new%d" % i, None) for i in range(written)])],
                          1 << 20)
    part.maybe_advance_high_watermark()
    assert part.epochs.entries == [(EPOCH + 2, 0)] and part.high_watermark == written
    return core, part


def test_a_consumer_whose_epoch_is_older_than_every_one_of_a_leaders_is_told_its_log_parts_at_the_start(
        tmp_path: Path) -> None:
    """Every record of this leader was written in an epoch newer than the one the consumer read
    (its records 0..9 were of EPOCH, lost with the replica that held them): the logs part at
    this leader's log start, whether the consumer's position is past its log end (10: reset by
    the policy, ``latest`` skipped 0..6) or inside it (5: read on, the consumer skipped 0..4,
    never delivered). Answered no place to part from (-1), the consumer did so."""
    core, part = _empty_replica_elected_uncleanly(tmp_path, 7)
    for position in (10, 5):
        entry = _consumer_fetch_last(core, position, EPOCH)
        assert entry.error == 0 and entry.diverging is not None and entry.diverging[0] >= 0, entry
        assert entry.diverging[1] == 0, entry
    # at the point where they part, it reads on (the epoch it names is one this leader never had)
    entry, data = core.fetch(FetchInput("t", 0, 0, 64 * 1024, -1, EPOCH), -1, now_ms=1000, budget_bytes=64 * 1024)
    assert entry.error == 0 and entry.diverging is None and data != b""


def test_retention_past_a_consumers_epoch_leaves_its_position_to_the_out_of_range_answer(tmp_path: Path) -> None:
    """Retention took the batch of the epoch the consumer read, with the epoch: a position below
    the log start is out of range (the policy applies), not a divergence."""
    core, part = _leader_of_ten(tmp_path)
    part.become_follower(OTHER, EPOCH + 1, [ME, OTHER], [ME, OTHER])
    part.become_leader(EPOCH + 2, [ME, OTHER], [ME, OTHER], now_ms=0)
    part.append_as_leader([build_batch([(1_700_000_000_000, None, b"new", None)])], 1 << 20)
    part.maybe_advance_high_watermark()
    part.engine.delete_before(10)
    part.epochs.truncate_from_start(part.log_start_offset)
    assert part.epochs.entries == [(EPOCH + 2, 10)] and part.log_start_offset == 10
    entry = _consumer_fetch_last(core, 7, EPOCH)
    assert entry.error == P.OFFSET_OUT_OF_RANGE and entry.diverging is None, entry



def test_a_consumer_that_read_an_epoch_this_leader_never_had_is_told_where_its_older_epoch_ends(
        tmp_path: Path) -> None:
    """This replica led EPOCH and took 0..9; another, elected in EPOCH + 1 with a log ending at 5,
    wrote 5.. there, which the consumer read (it names EPOCH + 1). Elected uncleanly in EPOCH + 2
    without ever following it, this replica answers the end of the newest epoch it shares with
    the consumer's, EPOCH, at 10 -- above the consumer's position 8, so that the consumer alone
    can tell that the logs part lower, where it began reading EPOCH + 1
    (``Consumer._diverged``)."""
    core, part = _leader_of_ten(tmp_path)
    part.become_follower(OTHER, EPOCH + 1, [ME, OTHER], [OTHER])
    part.become_leader(EPOCH + 2, [ME, OTHER], [ME], now_ms=0)
    part.append_as_leader([build_batch([(1_700_000_000_000, None, b"new", None)])], 1 << 20)
    part.maybe_advance_high_watermark()
    entry = _consumer_fetch_last(core, 8, EPOCH + 1)
    assert entry.error == 0 and entry.diverging == [EPOCH, 10], entry
