"""The consumer's buffer of fetched records not yet returned: taking runs off it (``_take``:
the positions move past them), putting the end of a take back (``_put_back``: a poll cut at
``max_bytes``), keeping what a cut poll returned of the partition it cut for a give-back right
after (``_note_cut``, ``_put_back_returned``: put back, nothing fetched again), and dropping a
partition's part of it (``_drop_buffered``, ``_keep_buffered``: a seek, a reset, an assignment,
a close). ``ConsumerBuffer`` is that part of ``fabric.client.consumer.Consumer``, which mixes it
in: its state is the consumer's own (set by ``Consumer.__init__``). A module of its own because
these rules -- which runs hold the fetched bytes and what was decoded of them
(``RecordBatchView.held``, ``fabric.decoded_batches``), how the counts of records and bytes
buffered follow every run that leaves or comes back, which returned runs may go back in front of
the rest -- are read and changed together, apart from the polling that calls them
(``Consumer.poll``, ``_poll_views``), the fetching that fills the buffer (``ConsumerFetch``) and
the positions a give-back moves (``ConsumerPositions``).

Not thread-safe: part of Consumer, owned by the thread that uses the consumer.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Iterable

from fabric import protocol as P
from fabric.decoded_batches import HeldBytes
from fabric.records import RecordBatchView

if TYPE_CHECKING:
    from fabric.client.consumer import TopicPartition


class ConsumerBuffer:
    """``Consumer``'s buffer of fetched runs: take, put back, drop (see the module doc). Not
    usable alone: the attributes below are the consumer's, set by ``Consumer.__init__``."""

    # the consumer's state this part uses (what each holds: ``Consumer.__init__``)
    positions: dict[TopicPartition, int | None]
    _fetch_positions: dict[TopicPartition, int]
    _fetch_epochs: dict[TopicPartition, int]
    _position_epochs: dict[TopicPartition, int]
    _epoch_starts: dict[TopicPartition, list[tuple[int, int]]]
    _taken: dict[TopicPartition, int | None]
    _taken_epochs: dict[TopicPartition, int]
    _buffer: deque[RecordBatchView]
    _buffered_records: int
    _buffered_bytes: int
    _returned_of_cut: list[RecordBatchView]
    _decoded: HeldBytes

    if TYPE_CHECKING:  # ConsumerPositions' and ConsumerEpochs', never these
        def give_back(self, offsets: Iterable[tuple[TopicPartition, int]]) -> None: ...
        def _epochs_back_to(self, tp: TopicPartition, offset: int) -> None: ...
        def _note_epoch_starts(self, tp: TopicPartition, run: RecordBatchView) -> None: ...

    # -- taking, putting back -----------------------------------------------------------------
    def _take(self, max_records: int) -> list[RecordBatchView]:
        """Up to ``max_records`` buffered records, the positions moved past them; no callback
        runs in it (``_poll_views`` runs the reactor pass before). Cut short by an exception (a
        KeyboardInterrupt) before it returns, it gives back what it took (``give_back``):
        nothing taken is lost from the buffer and skipped."""
        buf, positions = self._buffer, self.positions
        out: list[RecordBatchView] = []
        left = max(1, max_records)
        taken_from = self._taken = {}  # the positions before this take
        epochs_then = self._taken_epochs = {}  # ... and the epochs named there
        try:
            while buf and left > 0:
                head = buf[0]
                tp = (head.topic, head.partition)
                if tp not in taken_from:
                    taken_from[tp] = positions.get(tp)
                    epochs_then[tp] = self._position_epochs.get(tp, P.NO_LEADER_EPOCH)
                run, rest = head.split(left)
                if rest is not None:
                    buf[0] = rest  # the fetched bytes stay with it (``split``)
                else:
                    buf.popleft()
                    if head.held:  # its answer's last run: the bytes, and what was decoded of them, go
                        self._buffered_bytes -= head.held
                        head.count_decoded(None)
                out.append(run)
                left -= len(run)
                positions[tp] = run.next_offset
                epoch = self._position_epochs[tp] = run.last_leader_epoch
                starts = self._epoch_starts.get(tp)
                if epoch >= 0 and (not starts or starts[-1][0] != epoch):  # (once per election)
                    self._note_epoch_starts(tp, run)
            self._buffered_records -= max(1, max_records) - left
        except BaseException:
            self.give_back([(tp, position) for tp, position in taken_from.items() if position is not None])
            raise
        return out

    def _put_back(self, runs: list[RecordBatchView]) -> None:
        """``runs``, the end of what this poll's take moved off the buffer (in the order taken,
        none handed out), back at the buffer's head, their partitions' positions back at them:
        as if the take had stopped before them. Only right after the take (or, by a give-back,
        runs returned that end where the position is: ``_put_back_returned``): what is buffered
        of their partitions, and the fetches in flight, follow them."""
        first: dict[TopicPartition, int] = {}
        end: dict[TopicPartition, int] = {}
        for run in runs:
            tp = (run.topic, run.partition)
            first.setdefault(tp, run.first_offset)
            end[tp] = run.next_offset
        assert all(self.positions[tp] == offset for tp, offset in end.items()), "positions moved since the take"
        self._buffer.extendleft(reversed(runs))
        self._buffered_records += sum(map(len, runs))
        for run in runs:
            if run.held:
                self._buffered_bytes += run.held
                run.count_decoded(self._decoded)
        for tp, offset in first.items():
            self.positions[tp] = offset
            self._epochs_back_to(tp, offset)  # as ``give_back`` leaves them

    def _note_cut(self, returned: list[RecordBatchView], rest: RecordBatchView) -> None:
        """``poll`` returned ``returned`` and put back the runs from ``rest`` on: keep the runs
        returned of ``rest``'s partition, from the last back to the first of another answer (or
        partition) -- pieces of ``rest``'s answer, which hold its bytes, counted while it is
        buffered -- for a give-back right after (``_put_back_returned``)."""
        tp, kept = (rest.topic, rest.partition), []
        for run in reversed(returned):
            if (run.topic, run.partition) != tp or not run.shares_fetch_with(rest):
                break
            assert not run.held, "a run returned before a cut holds its answer's bytes"
            kept.append(run)
        kept.reverse()
        self._returned_of_cut = kept

    def _put_back_returned(self, tp: TopicPartition, offset: int) -> bool:
        """``give_back``'s: ``tp`` back to ``offset`` by putting back what the last poll returned
        of it from there, if it keeps those runs (``_returned_of_cut``: it cut ``tp``, and put its
        rest back) -- the buffer, the fetch position and the fetch in flight stay as they are,
        nothing is fetched again. False when it does not (the partition is moved back and
        fetched again from ``offset``)."""
        runs = self._returned_of_cut
        if (not runs or (runs[0].topic, runs[0].partition) != tp or offset < runs[0].first_offset
                or self.positions.get(tp) != runs[-1].next_offset):
            return False
        k = 0
        while k < len(runs) and runs[k].next_offset <= offset:
            k += 1
        back, kept = runs[k:], runs[:k]
        before = back[0].records_before(offset) if back else 0
        if before:
            head, back[0] = back[0].split(before)
            kept.append(head)
        self._returned_of_cut = kept
        if back:
            self._put_back(back)
        return True

    # -- dropping -----------------------------------------------------------------------------
    def _drop_buffered(self, tp: TopicPartition) -> None:
        self._keep_buffered(lambda other: other != tp)
        self._fetch_positions.pop(tp, None)
        self._fetch_epochs.pop(tp, None)

    def _keep_buffered(self, keep: Any) -> None:
        cut = self._returned_of_cut
        if cut and not keep((cut[0].topic, cut[0].partition)):
            self._returned_of_cut = []  # what they were put back before is gone
        for run in self._buffer:
            if run.held and not keep((run.topic, run.partition)):
                run.count_decoded(None)
        self._buffer = deque(run for run in self._buffer if keep((run.topic, run.partition)))
        self._buffered_records = sum(map(len, self._buffer))
        self._buffered_bytes = sum(run.held for run in self._buffer)
