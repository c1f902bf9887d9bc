"""The leader epochs of the consumer's positions (KIP-320), and the leader logs truncated under
its reading. ``ConsumerEpochs`` is that part of ``fabric.client.consumer.Consumer``, a base of
``ConsumerPositions`` (``fabric.client.consumer_positions``): its state is the consumer's own
(set by ``Consumer.__init__``). A module of its own because these rules -- which epochs of what
was read are kept as a position moves back (``_keep_epoch_starts_below``), which epoch the next
fetch and a commit name (``_read_epoch_before``), where a position goes when the leader says its
log parts from the one read (``_diverged``) or its log ends below a position read up to
(``_truncated_under``) -- are read and changed together, apart from the seeks, resets and
give-back that move the positions.

Not thread-safe: part of Consumer, owned by the thread that uses the consumer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fabric import protocol as P

if TYPE_CHECKING:
    from fabric.client.consumer import TopicPartition
    from fabric.records import RecordBatchView
    from fabric.replies import FetchEntry

# the consumer's logger, as before this part had a module of its own: hosts configure one
log = logging.getLogger("fabric.client.consumer")

EPOCH_STARTS_KEPT = 16  # leader epochs per partition whose start in the reading is kept (``_note_epoch_starts``)


class ConsumerEpochs:
    """``Consumer``'s leader epochs of the positions and the truncations under them (see the
    module doc). Not usable alone: the attributes below are the consumer's, set by
    ``Consumer.__init__``."""

    # the consumer's state this part uses (what each holds: ``Consumer.__init__``)
    positions: dict[TopicPartition, int | None]
    auto_offset_reset: str
    _taken: dict[TopicPartition, int | None]
    _taken_epochs: dict[TopicPartition, int]
    _read_hw: dict[TopicPartition, int]
    _position_epochs: dict[TopicPartition, int]
    _epoch_starts: dict[TopicPartition, list[tuple[int, int]]]
    _epochs_merged: set[TopicPartition]

    if TYPE_CHECKING:  # ConsumerBuffer's and ConsumerPositions', never these
        def _drop_buffered(self, tp: TopicPartition) -> None: ...
        def _forget_reset(self, tp: TopicPartition) -> None: ...

    # -- the epochs read ----------------------------------------------------------------------
    def _forget_epochs(self, tp: TopicPartition) -> None:
        self._position_epochs.pop(tp, None)
        self._epoch_starts.pop(tp, None)
        self._epochs_merged.discard(tp)

    def _epochs_back_to(self, tp: TopicPartition, offset: int) -> None:
        """``tp``'s records from ``offset`` on, taken by the last poll, go back (given back, put
        back): the epochs read before ``offset`` stay, and the one of the record before it is
        named -- back where that take began, the one named there then (a committed offset's too):
        forgotten, a commit of what a consumer service's client was given went without one, and
        the next fetch named none."""
        self._name_epoch_read_before(tp, self._keep_epoch_starts_below(tp, offset))
        if offset == self._taken.get(tp):
            self._name_epoch_read_before(tp, self._taken_epochs.get(tp, P.NO_LEADER_EPOCH))

    def _keep_epoch_starts_below(self, tp: TopicPartition, to: int, epoch_max: int | None = None) -> int:
        """``tp``'s position goes back to ``to``: keep the epoch starts below it (of epochs at most
        ``epoch_max``); the epoch record ``to - 1`` was read in (in the merged entry its newest: a
        leader that never had it sends the consumer back to its start), none where not read here.
        None kept: the merged entry's mark goes too (else taken for the next epoch read's)."""
        kept = [(e, offset) for e, offset in self._epoch_starts.get(tp, [])
                if offset < to and (epoch_max is None or e <= epoch_max)]
        self._epoch_starts[tp] = kept
        if not kept:
            self._epochs_merged.discard(tp)
            return P.NO_LEADER_EPOCH
        return kept[-1][0]

    def _name_epoch_read_before(self, tp: TopicPartition, epoch: int) -> None:
        """The next fetch at the position, and a commit of it, name ``epoch`` (none: not known)."""
        if epoch >= 0:
            self._position_epochs[tp] = epoch
        else:
            self._position_epochs.pop(tp, None)

    def _note_epoch_starts(self, tp: TopicPartition, run: RecordBatchView) -> None:
        """The epochs of ``run``, just taken, newer than those noted. Past EPOCH_STARTS_KEPT the
        two oldest become one, with the newer epoch and the older start: a divergence into the
        older goes back too far (records delivered again), never too short (records skipped)."""
        starts = self._epoch_starts.setdefault(tp, [])
        for epoch, offset in run.leader_epoch_starts():
            if epoch >= 0 and (not starts or epoch > starts[-1][0]):
                starts.append((epoch, offset))
        while len(starts) > EPOCH_STARTS_KEPT:
            starts[0:2] = [(starts[1][0], starts[0][1])]
            self._epochs_merged.add(tp)

    def _read_epoch_before(self, tp: TopicPartition, offset: int) -> int:
        """The leader epoch of record ``offset - 1`` as this consumer read it -- what a commit of
        ``offset`` names (KIP-320's committed leader epoch) --, ``P.NO_LEADER_EPOCH`` when not known:
        at the position, the epoch the next fetch names; below it, that of the epoch the record
        was taken in (``_epoch_starts``), if it was taken since the position was last set from
        outside. Not known: a record not taken here, or one in the oldest epochs past
        EPOCH_STARTS_KEPT, which share one entry under the newest of them (naming a newer epoch
        than the record's, a leader whose log parts from the one read there would not say so)."""
        position = self.positions.get(tp)
        if position == offset:
            return self._position_epochs.get(tp, P.NO_LEADER_EPOCH)
        starts = self._epoch_starts.get(tp)
        if position is None or not starts or not starts[0][1] < offset < position:
            return P.NO_LEADER_EPOCH
        for i in range(len(starts) - 1, -1, -1):
            epoch, start = starts[i]
            if start < offset:
                return P.NO_LEADER_EPOCH if i == 0 and tp in self._epochs_merged else epoch
        return P.NO_LEADER_EPOCH

    # -- logs truncated under the reading -----------------------------------------------------
    def _truncated_under(self, tp: TopicPartition, fetched_at: int, entry: FetchEntry) -> bool:
        """The leader's log ends (``entry``) below ``fetched_at``, a position at or below a high
        watermark a fetch of this reading was answered with (or a group's committed offset, which
        was at or below the HW when committed): the log was truncated under records the consumer
        (or its group) read (an unclean election, a leader that lost its tail), and the leader did
        not say where (``_diverged``: a leader that does, told the epoch of the last record read,
        answers that instead; a committed offset names no epoch). With ``auto_offset_reset``
        ``latest`` the consumer reads on from the answer's high watermark (at most its log end):
        reset to the log end a LIST_OFFSETS found later, it also skipped the records the leader
        took meanwhile. ``earliest`` reads the log again from its start (nothing skipped: the
        truncation point is not known, records written since may lie anywhere above it) and
        ``none`` raises, as before. False (nothing done) for any other out-of-range position."""
        read_hw, end = self._read_hw.get(tp), entry.log_end_offset
        if self.auto_offset_reset != "latest" or read_hw is None or not 0 <= end < fetched_at <= read_hw:
            return False
        to = min(end, max(entry.high_watermark, entry.log_start_offset, 0))
        log.warning("%s-%d: the leader's log was truncated under position %d (it ends at %d; records were read "
                    "up to a high watermark of %d): reading on from %d", tp[0], tp[1], fetched_at, end, read_hw, to)
        # as an out-of-range reset at the position a take set, a give-back may still move it back
        self.positions[tp] = to
        # the epoch record ``to - 1`` was read in, not that of the last record read (gone)
        self._name_epoch_read_before(tp, self._keep_epoch_starts_below(tp, to))
        self._forget_reset(tp)
        self._drop_buffered(tp)
        return True

    def _diverged(self, tp: TopicPartition, fetched_at: int, diverging: list) -> None:
        """The leader answered the fetch at ``fetched_at`` with where its log parts from the one
        this consumer read (KIP-320: ``[epoch, end]``, the end of the last epoch both share): its
        records from ``end`` on are not the ones read (a log an unclean election truncated, then
        written again). What is buffered is dropped (fetched again, from the leader's log); a
        position past ``end`` goes back to it, whatever ``auto_offset_reset`` says, and is said,
        as Kafka's consumer does -- reset by the policy, ``latest`` skipped the records written
        since the truncation. The next fetch from there names ``epoch``, which both logs share up to
        ``end`` -- or the epoch the consumer read the record before it in, where that is older (the
        leader answers again where its log parts from that one); a position at or below ``end``
        (the answer was to a fetch ahead of it) keeps the epoch of the record before it.

        Where this consumer read a newer epoch than ``epoch`` (one the leader never had), its
        records from where it began reading that one are not the leader's either: the logs part
        there if it is below ``end`` (Kafka's follower truncates so, KIP-279) -- kept at a position
        below ``end``, the consumer skipped the leader's records from there to it."""
        epoch, end = diverging
        position = self.positions.get(tp)
        self._drop_buffered(tp)
        if epoch < 0:
            # no epoch of the leader's is as old as the one read (retention took them; a log kept no
            # epochs): nothing says where the logs part -- fetched again naming none, a position
            # past the log is out of range and the policy applies
            self._position_epochs[tp] = epoch
            return
        starts = self._epoch_starts.get(tp, [])
        to = min([end] + [offset for e, offset in starts if e > epoch])
        read = self._keep_epoch_starts_below(tp, to, epoch)
        if position is not None and position > to:
            log.warning("%s-%d: the leader's log parts from the one read at offset %d (its epoch %d ends at %d): "
                        "position %d goes back to it (the records read from there on are gone)",
                        tp[0], tp[1], to, epoch, end, position)
            # as an out-of-range answer at the position a take set, a give-back may still move it back
            self.positions[tp] = to
            if read >= 0:
                # record ``to - 1`` was read in it, perhaps older than ``epoch``: a leader whose log parts
                # below ``to`` says so next (as a follower asks again, KIP-279). Naming ``epoch``, the leader
                # took ``to`` for shared and its records below were skipped (a commit of ``to`` named it too)
                epoch = read
        elif position is not None and fetched_at > position and tp in self._position_epochs:
            # a fetch ahead of the position (records buffered) parted above it: the record before
            # the position keeps its epoch -- the answer's, of the records fetched ahead, may be
            # newer, and named at the position the leader took the logs for one there where they
            # part below it (and a commit there named it to whoever starts from it). A fetch at
            # the position takes the answer's: named again, an epoch the leader never had was
            # answered the same, forever
            return
        self._position_epochs[tp] = epoch
