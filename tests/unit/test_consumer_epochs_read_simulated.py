"""The leader epochs a consumer keeps of what it read (KIP-320), checked over seeded random
runs: a real Consumer polls t-0 from a scripted leader whose log is replaced, twice, by one that
has the one before's records up to a split point, then records of epochs no other log had (an
unclean election). Its
polls take random numbers of records, some are given back (a consumer service's client lost
them), and each FETCH is answered as a real leader answers (``Partition.consumer_divergence``):
records of the log, or where it parts from the one read.

Checked after every step: the epoch a commit of an offset at or below the position would name
(``_read_epoch_before``) is none or the epoch its record before was read in -- never another, a
newer one least (a member starting there after an unclean election was not sent back, and the
coordinator took a commit below the committed offset for one) -- and the consumer never reads a
new log on past its split point without having been sent back to it (it skipped the new log's
records there). A
failing seed is in the assertion's message; rerun it alone with ``run(seed)``.

A real Consumer on a ManualClock with one RecordingClient per endpoint
(tests/unit/test_consumer_fetch_positions.py's broker)."""

from __future__ import annotations

import random

import pytest

from fabric import protocol as P
from fabric.client.consumer import Consumer
from fabric.clock import ManualClock
from tests.unit.fakes import FakeReactor, as_leader_wrote, make_batch
from tests.unit.test_consumer_fetch_positions import T0, _Broker

SEEDS = 120
LOG_END_OFFSET = 10**6  # the log end: past anything read
Log = list[tuple[int, int]]  # (first offset, leader epoch), oldest first


def _epoch_at(log: Log, offset: int) -> int:
    return [e for start, e in log if start <= offset][-1]


def _divergence(log: Log, last_epoch: int, offset: int) -> list | None:
    """What a leader with ``log`` answers a consumer's FETCH at ``offset`` naming ``last_epoch``
    (nodes/broker/partition.py ``consumer_divergence``): None, or [epoch, end]."""
    if last_epoch < 0:
        return None
    shared = [(start, e) for start, e in log if e <= last_epoch]
    if not shared:
        return [last_epoch, log[0][0]] if log[0][0] < offset else None
    epoch = shared[-1][1]
    end = next((start for start, e in log if e > epoch), LOG_END_OFFSET)
    return None if epoch == last_epoch and end >= offset else [epoch, end]


LOGS = 3  # the first log and the two that replace it: their epochs are 0, 1 and 2 modulo LOGS


def _log(rnd: random.Random, before: Log | None = None, split: int = 0, k: int = 0) -> Log:
    """Log ``k``: ``before``'s records up to ``split``, then epochs of its own (``k`` modulo LOGS,
    no other log has them), newer than ``before``'s there; 1 to 40 records each."""
    log = [(start, e) for start, e in before or [] if start < split]
    offset, epoch = split, (_epoch_at(before, split - 1) + 1 if log else rnd.randint(0, 2))
    epoch += (k - epoch) % LOGS
    while offset < 4000 * (k + 1):
        log.append((offset, epoch))
        offset, epoch = offset + rnd.randint(1, 40), epoch + LOGS * rnd.randint(1, 3)
    return log


class _Run:
    def __init__(self, seed: int) -> None:
        self.seed, self.rnd = seed, random.Random(seed)
        self.broker, reactor = _Broker(), FakeReactor(ManualClock(1_000))
        self.c = Consumer("tcp://127.0.0.1:1", clock=reactor.clock, reactor=reactor,
                          client_factory=self.broker.client, auto_offset_reset="latest")
        self.c.assign([T0])
        self.c.seek(T0, 0)
        self.c.poll(0)
        self.broker.answer_metadata()
        self.log: Log = []
        self.sent_epochs: dict[int, int] = {}  # per offset, the epoch of the record last answered there
        self.read: dict[int, int] = {}  # per offset below the position, the epoch its record was read in
        self.split: int | None = None  # where the log parts from the one before, once replaced
        self.sent_back = False  # the log was fetched from at or below the split

    def answer_fetch(self) -> bool:
        """Answer the FETCH in flight from ``self.log``; False: none in flight."""
        open_ = self.broker._open(P.FETCH)
        if not open_:
            return False
        [(client, i)] = open_
        [[_, _, offset, _, _, *last]] = client.sent[i][1]["parts"]
        client.unanswered.remove(i)
        named = last[0] if last else -1
        diverging = _divergence(self.log, named, offset)
        if self.split is not None and diverging is None:
            if offset <= self.split:
                self.sent_back = True
            elif not self.sent_back and named >= 0:
                raise AssertionError(f"seed {self.seed}: the new log answers records from {offset}, past its "
                                     f"split {self.split}, to a consumer never sent back there (naming {named}): "
                                     f"its records below {offset} were skipped")
        if diverging is not None:
            client.sent[i][3]({"parts": [["t", 0, 0, LOG_END_OFFSET, LOG_END_OFFSET, 0, diverging]]}, [b""], None)
            return True
        data = b""
        for o in range(offset, offset + self.rnd.randint(1, 30)):
            self.sent_epochs[o] = _epoch_at(self.log, o)
            data += as_leader_wrote(make_batch(1), o, self.sent_epochs[o])
        client.sent[i][3]({"parts": [["t", 0, 0, LOG_END_OFFSET, LOG_END_OFFSET, 0, None]]}, [data], None)
        return True

    def step(self) -> None:
        """One poll (its fetch answered first), perhaps a give-back; then the checks."""
        self.answer_fetch()
        self._below_position()  # the answer may have sent the position back
        got = self.c.poll(0, max_records=self.rnd.randint(1, 25))
        self._below_position()
        for r in got:
            self.read[r.offset] = self.sent_epochs[r.offset]
        if got and self.rnd.random() < 0.3:
            self.c.give_back([(T0, self.rnd.randint(got[0].offset, got[-1].offset + 1))])
            self._below_position()
        self.check()

    def _below_position(self) -> None:
        position = self.c.position(T0)
        if position is not None:
            self.read = {o: e for o, e in self.read.items() if o < position}

    def check(self) -> None:
        position = self.c.position(T0)
        for offset in range(1, (position or 0) + 1):
            epoch = self.c._read_epoch_before(T0, offset)
            if offset == position and offset - 1 not in self.read:
                continue  # nothing read before it: the leader's answer's epoch, or a committed one's
            starts = self.c._epoch_starts.get(T0)
            if offset == position and starts and len(starts) == 1 and T0 in self.c._epochs_merged:
                # back in the merged oldest entry: its newest epoch, none older being known
                assert epoch <= starts[0][0], (self.seed, epoch, starts)
                continue
            assert epoch < 0 or epoch == self.read.get(offset - 1), (
                f"seed {self.seed}: an offset {offset} commit names epoch {epoch}; its record before was read "
                f"in {self.read.get(offset - 1)} ({self.c._epoch_starts})")


def run(seed: int) -> None:
    """A leader's log read, then replaced twice by one that parts from the one before at or
    below the consumer's position (an unclean election each)."""
    r = _Run(seed)
    try:
        r.log = _log(r.rnd)
        for _ in range(r.rnd.randint(1, 30)):
            r.step()
        for k in range(1, LOGS):
            r.split = r.rnd.randint(1, max(1, r.c.position(T0) or 1))
            r.log, r.sent_back = _log(r.rnd, r.log, r.split, k), False
            for _ in range(r.rnd.randint(1, 40)):
                r.step()
    finally:
        r.c.close()


@pytest.mark.parametrize("seed", range(0, SEEDS, 15))
def test_the_epochs_a_consumer_names_are_the_ones_it_read_and_it_never_reads_past_where_logs_part(seed: int) -> None:
    for s in range(seed, seed + 15):
        run(s)
