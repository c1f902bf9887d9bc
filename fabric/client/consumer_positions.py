"""The consumer's positions: seeking, resets, the topic id a position belongs to, give-back,
and the errors of a partition that cannot be positioned. ``ConsumerPositions`` is that part of
``fabric.client.consumer.Consumer``, which mixes it in: its state is the consumer's own (set by
``Consumer.__init__``); the fetches and LIST_OFFSETS that act on the positions are sent there.
A module of its own because these rules -- which topic id a position set from outside is of
(``_positioned_from_outside``), what a reset keeps for a commit (``_positioned_in``), how far
a give-back may move a partition back, when auto_offset_reset "none" raises -- are read and
changed together, apart from the fetching and polling around them; the rules that act when the
metadata names another topic id are ``ConsumerFailover``'s (``fabric.client.consumer_failover``);
the leader epochs of the positions, and where a leader's log truncated under the reading sends
them, are its base ``ConsumerEpochs``'s (``fabric.client.consumer_epochs``).

Not thread-safe: part of Consumer, owned by the thread that uses the consumer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterable

from fabric import protocol as P
from fabric.client.admin import EARLIEST, LATEST
# EPOCH_STARTS_KEPT lives in consumer_epochs; importable from here as before
from fabric.client.consumer_epochs import EPOCH_STARTS_KEPT, ConsumerEpochs
from fabric.errors import FabricError, RemoteError
from fabric.metadata import ClusterMetadata

if TYPE_CHECKING:
    from fabric.client.consumer import ConsumerClient, TopicPartition, _InFlight
    from fabric.replies import FetchEntry

# the consumer's logger, as before this part had a module of its own: hosts configure one
log = logging.getLogger("fabric.client.consumer")

# a reset to where a partition with nothing to start from starts: decided when it is sent
# (``_start_spec``: its log start if it appeared while the consumer read its topic, else the policy)
AUTO_RESET = "auto"
# EARLIEST, LATEST, AUTO_RESET, None: auto_offset_reset "none", or the error ``poll`` raises until the
# application seeks (a seek naming a topic id that will never be its topic's: ``_never_current``)
ResetSpec = int | str | RemoteError | None

__all__ = ["AUTO_RESET", "EPOCH_STARTS_KEPT", "ConsumerPositions", "ResetSpec"]


class ConsumerPositions(ConsumerEpochs):
    """``Consumer``'s seeks, resets, give-back and position errors (see the module doc). Not
    usable alone: the attributes below are the consumer's, set by ``Consumer.__init__``."""

    # the consumer's state this part uses (what each holds: ``Consumer.__init__``)
    positions: dict[TopicPartition, int | None]
    auto_offset_reset: str
    metadata: ClusterMetadata
    _md_asked: int
    _md_answered: int
    _clients: dict[str, ConsumerClient]
    _resetting: dict[TopicPartition, _InFlight]
    _reset_specs: dict[TopicPartition, ResetSpec]
    _position_errors: dict[TopicPartition, tuple[int | None, RemoteError]]
    _waiting_since_asked: dict[TopicPartition, int]
    _read_in: dict[TopicPartition, str]
    _positioned_in: dict[TopicPartition, str]
    _ahead_of_metadata: dict[TopicPartition, str]
    _ahead_since: dict[TopicPartition, tuple[int, bool]]
    _taken: dict[TopicPartition, int | None]
    _taken_to: dict[TopicPartition, int]
    _read_hw: dict[TopicPartition, int]
    _position_epochs: dict[TopicPartition, int]
    _unseen: dict[str, int]  # (ConsumerEpochs declares the epochs' state)

    def _init_positions(self) -> None:
        """This part's own state, set by ``Consumer.__init__``."""
        # auto_offset_reset "none": a partition that cannot be positioned, with the position it
        # had then and the error ``poll`` raises (at its start: never after it took records)
        self._position_errors = {}
        # per assigned partition, the id (UUID) of the topic its position was read in: a FETCH or
        # LIST_OFFSETS naming that id was answered. A topic deleted and made again with the same
        # name is another topic (``_take_metadata``); a position set from outside (``seek``, a
        # group's committed offset) was read in none: metadata older than the topic named one
        self._read_in = {}
        # per partition whose position the last poll's take moved and nothing has moved since,
        # the position it had before: what ``give_back`` may move back. A seek, a reset or an
        # assignment that leaves it out takes a partition out, so that no give-back undoes it
        self._taken = {}
        self._taken_epochs: dict[TopicPartition, int] = {}  # ... and the epoch named there then
        # per assigned partition not in ``_read_in``, the topic id a commit of its position names
        # (``_commit_topic_ids``): the id the metadata named when the position was set from
        # outside (``_positioned_from_outside``), or the one its last position was read in (reset
        # since). A position of a topic deleted and made again is then refused, not committed for
        # the new topic
        self._positioned_in = {}
        # per partition of ``_taken`` that an out-of-range answer reset, the position that take
        # set: how far a give-back may move it (never forward)
        self._taken_to = {}
        # per partition of ``_read_in`` set from a group's committed offset of a topic id the
        # metadata did not name yet (made again, the metadata behind): that metadata's other id
        # does not start it again (``_recreated_partitions``), and it is read once the metadata
        # names its id (``_positioned_from_outside``)
        self._ahead_of_metadata = {}
        # per partition of ``_ahead_of_metadata``, (``_md_asked`` when its position was set, whether that
        # was a committed offset): the coordinator's answer to a later request judges it (``_judge_ahead``)
        self._ahead_since = {}

    if TYPE_CHECKING:  # ConsumerBuffer's, ConsumerFetch's and ConsumerFailover's, never these
        def _drop_buffered(self, tp: TopicPartition) -> None: ...
        def _put_back_returned(self, tp: TopicPartition, offset: int) -> bool: ...
        def _hold(self, tps: Iterable[TopicPartition]) -> None: ...
        def _refresh_metadata(self) -> None: ...
        def _start_deleted(self, tps: list[TopicPartition]) -> None: ...

    # -- seeking ------------------------------------------------------------------------------
    def seek(self, tp: TopicPartition, offset: int, *, topic_id: str = "", committed: bool = False,
             leader_epoch: int = -1) -> None:
        """Fetch ``tp`` from ``offset`` next. ``topic_id``: the id of the topic ``offset`` is of,
        where known, else the topic the metadata names now. An id the metadata lists as deleted
        starts ``tp`` at the new topic's log start (an offset of the topic before, made again
        since); one it does not name yet is waited for (a topic just made again) until the
        coordinator's metadata, asked for after this seek, says: not its topic's id then, ``poll``
        raises RemoteError(unknown_topic_id) for ``tp`` until it is sought again -- unless
        ``committed``: ``offset`` is the group's committed offset of ``topic_id``
        (``committed_with_topic_ids``), so the id was its topic's once, and ``tp`` starts at the
        new topic's log start, as for one listed as deleted (``_judge_ahead``). ``leader_epoch``:
        of the record before ``offset``, where known (-1: not known) -- a committed offset's
        (``committed_starts``), as Kafka's ``seek(tp, OffsetAndMetadata)``: the first fetch names
        it, and a leader whose log parts from the one read there says where (``_diverged``).
        Raises FabricError when ``tp`` is not assigned, ValueError for a negative offset (as
        Kafka's: ``seek_to_beginning``/``_end`` name those)."""
        if offset < 0:
            raise ValueError(f"seek offset must not be negative, got {offset}")
        self._check_assigned([tp])
        self._move_to(tp, offset)
        self._taken.pop(tp, None)
        self._positioned_from_outside([tp], {tp[0]: topic_id} if topic_id else None, committed=committed,
                                      epochs={tp: leader_epoch} if leader_epoch >= 0 else None)

    def _positioned_from_outside(self, tps: list[TopicPartition], of: dict[str, str] | None = None, *,
                                 committed: bool = True, epochs: dict[TopicPartition, int] | None = None) -> None:
        """``tps`` were given positions from outside (a seek, a group's committed offset). Where
        the source said which topic they are offsets of (``of``, {topic: id}: the coordinator's
        committed offsets), they count as read in it: metadata that names the topic by another
        id starts them again (``_take_metadata``), at once where the metadata lists that id as
        deleted -- an old topic's committed offset, taken as the topic was made again, skipped
        the new topic's records below it. One the metadata does not name yet waits for the
        coordinator's word (``_judge_ahead``; ``committed``: the id is a committed offset's, not
        an application's seek's). Else they are offsets of the topic the metadata names now, as
        far as a commit of them goes (``_positioned_in``). ``epochs``: the leader epoch of the
        record before each position, where the source said (a committed offset's, KIP-320): the
        first fetch names it, as after a record read there."""
        gone = []
        for tp in tps:
            self._forget_epochs(tp)  # no record read before it
            epoch = epochs.get(tp, -1) if epochs else -1
            if epoch >= 0:
                self._position_epochs[tp] = epoch
            at = self.positions.get(tp)
            if committed and at is not None:
                # the coordinator takes no offset past the high watermark it knows: the log held
                # it once, and past the log end now it was truncated under it (``_truncated_under``)
                self._read_hw[tp] = at
            else:  # an application's seek may be anywhere: out of range, the policy resets it
                self._read_hw.pop(tp, None)
            named = of.get(tp[0]) if of else None
            self._ahead_of_metadata.pop(tp, None)
            self._ahead_since.pop(tp, None)
            if named:
                self._read_in[tp] = named
                self._positioned_in.pop(tp, None)
                if named in self.metadata.deleted_topic_ids:
                    gone.append(tp)
                elif self.metadata.topic_ids_of([tp[0]]).get(tp[0]) != named:
                    self._ahead_of_metadata[tp] = named  # read once the metadata names it (``_on_fetch``)
                    self._ahead_since[tp] = (self._md_asked, committed)
                    self._refresh_metadata()
                continue
            self._read_in.pop(tp, None)
            t = self.metadata.topics.get(tp[0])
            if t is not None and t.topic_id:
                self._positioned_in[tp] = t.topic_id
            else:
                self._positioned_in.pop(tp, None)
        if gone:
            self._start_deleted(gone)

    def _move_to(self, tp: TopicPartition, offset: int, *, given_back: bool = False) -> None:
        """``seek``, in the topic the position was read in (records taken and ``given_back``: the
        epochs of those before ``offset`` are kept, and the one of the record before it named)."""
        self.positions[tp] = offset
        if given_back:
            self._epochs_back_to(tp, offset)
        else:
            self._forget_epochs(tp)  # the epoch of the record before it is not known
        self._forget_reset(tp)
        self._drop_buffered(tp)

    def seek_to_beginning(self, tps: list[TopicPartition] | None = None) -> None:
        """Fetch ``tps`` (default: every assigned partition) from their log start next. Raises
        FabricError, changing nothing, when one is not assigned (as ``seek``)."""
        self._check_assigned(tps or [])
        self._reset(tps, EARLIEST)

    def seek_to_end(self, tps: list[TopicPartition] | None = None) -> None:
        """``seek_to_beginning``, to the log end."""
        self._check_assigned(tps or [])
        self._reset(tps, LATEST)

    def reset_positions(self, tps: list[TopicPartition]) -> None:
        """Start ``tps`` where a partition with nothing to start from starts: its log start if it
        appeared while the consumer read its topic (``_start_spec``), else ``auto_offset_reset``
        -- not looked up again as a group's committed offset. Raises FabricError, changing
        nothing, when one is not assigned (as ``seek``)."""
        self._check_assigned(tps)
        if tps:
            self._reset(tps, AUTO_RESET)

    def _check_assigned(self, tps: list[TopicPartition]) -> None:
        # a reset of a partition not assigned gave it a position: fetched until the next assign
        for tp in tps:
            if tp not in self.positions:
                raise FabricError(f"{tp[0]}-{tp[1]} is not assigned")

    def position(self, tp: TopicPartition) -> int | None:
        return self.positions.get(tp)

    # -- resets -------------------------------------------------------------------------------
    def _forget_reset(self, tp: TopicPartition) -> None:
        """``tp`` is no longer to be reset as asked before (seeked, given up, reset again): its
        policy and its LIST_OFFSETS in flight go. Else the old answer positioned the partition
        once it waited for a position again -- assigned anew and waiting for the group's committed
        offset, or reset the other way (seek_to_beginning after seek_to_end) -- and a policy left
        behind reset it when assigned again instead of starting at the committed offset. An
        error waiting for the partition's position (auto_offset_reset "none") goes too."""
        self._reset_specs.pop(tp, None)
        self._position_errors.pop(tp, None)
        self._waiting_since_asked.pop(tp, None)
        pending = self._resetting.pop(tp, None)
        if pending is not None and pending.endpoint in self._clients:
            self._clients[pending.endpoint].cancel(pending.request_id)

    def _reset(self, tps: list[TopicPartition] | None, spec: ResetSpec, *, keep_give_back: bool = False) -> None:
        """Start ``tps`` (None: every assigned partition) again at ``spec``: no position until
        the LIST_OFFSETS answers, nothing buffered, and no give-back of the last poll moves them
        back (the reset stands) -- unless ``keep_give_back``: a partition found out of range at
        the position the last poll's take set (``_out_of_range``) may still be given back, to a
        position of the topic it was read in, and its range is checked again there (the records
        before it, maybe still in the log, are not skipped)."""
        for tp in tps or list(self.positions):
            at = self.positions.get(tp)
            self._forget_reset(tp)
            self._ahead_of_metadata.pop(tp, None)  # no longer a position set from outside
            self._ahead_since.pop(tp, None)
            self.positions[tp] = None
            self._reset_specs[tp] = spec
            self._drop_buffered(tp)
            read_in = self._read_in.get(tp)
            if read_in:  # what a commit of it names until it has a position again
                self._positioned_in[tp] = read_in
            if keep_give_back and tp in self._taken and at is not None:
                self._taken_to[tp] = at  # how far the give-back may move it (never forward)
                continue
            self._taken.pop(tp, None)
            self._read_in.pop(tp, None)
            self._read_hw.pop(tp, None)
            self._forget_epochs(tp)

    # -- give-back ----------------------------------------------------------------------------
    def give_back(self, offsets: Iterable[tuple[TopicPartition, int]]) -> None:
        """Move partitions back to records the last poll took (moved the positions past) but
        that did not reach the application, so that the next poll returns them: ``offsets`` is
        (partition, offset) pairs, each the first offset of a run not handed over; a partition
        named more than once goes back to the lowest, but never before where that poll took it
        from; a negative offset raises ValueError, changing nothing. Left past them, the next
        poll skipped them and the next commit -- a ``close`` in a ``with`` block or a ``finally``
        after a Ctrl-C -- committed them. Used by ``poll`` and by the consumer service's
        instances.

        Never forward, and only a partition whose position that poll moved and nothing moved
        since: one sought, reset (``seek_to_*``, its topic made again) or assigned anew since
        keeps what that set (put back, the old position undid it: a topic made again was read
        from the old topic's position), and one no longer assigned or waiting for a position is
        left alone. An out-of-range answer at the position that poll set is not such a move:
        the give-back takes that position back, and the range is checked again when the position
        gets there (the records before it, maybe still in the log, are not skipped).

        A partition moved back is fetched again from there, what was buffered of it dropped --
        except right after a ``poll(max_bytes=...)`` that cut it: the runs that poll returned of
        it from the answer it cut, which the consumer keeps while the rest is buffered, are put
        back in front of the rest, and nothing is fetched again (``ConsumerBuffer._put_back_returned``;
        an offset before them is fetched again). Not thread-safe (as ``poll``)."""
        lowest: dict[TopicPartition, int] = {}
        for tp, offset in offsets:
            if offset < 0:  # as ``seek``: taken, the fetch there was out of range, the partition reset
                raise ValueError(f"give_back offset must not be negative, got {offset} for {tp[0]}-{tp[1]}")
            if offset < lowest.get(tp, offset + 1):
                lowest[tp] = offset
        positions, taken = self.positions, self._taken
        for tp, offset in lowest.items():
            if tp not in taken:
                continue
            start, position = taken[tp], positions.get(tp)
            if start is not None and offset < start:
                offset = start  # that poll took nothing before: an earlier poll returned those
            if position is None:  # an out-of-range reset at the position that poll set (nothing
                position = self._taken_to.get(tp)  # else leaves one in ``taken``): as if still there
            # equal: a take cut before it moved the position past a run it took off the buffer --
            # moved, the buffer is dropped and fetched again from there. Right after a poll cut at
            # max_bytes, what it returned of the partition it cut is put back instead (the runs it
            # put back and those fetched ahead stay: ``ConsumerBuffer._put_back_returned``)
            if position is not None and position >= offset and not self._put_back_returned(tp, offset):
                self._move_to(tp, offset, given_back=True)

    # -- partitions that cannot be positioned -------------------------------------------------
    def _out_of_range(self, tp: TopicPartition, fetched_at: int, entry: FetchEntry) -> None:
        """The log no longer holds ``fetched_at`` (retention moved its start past it, or its
        end is below it), as the leader's answer ``entry`` says. A prefetch's answer -- records
        before ``fetched_at`` buffered, not yet returned -- changes nothing yet: the partition is
        fetched again after a backoff, and the reset (or the error) comes once the position
        reaches it. Reset at once, it dropped the records the consumer held, and skipped them;
        Kafka's consumer never fetches a partition past records it buffers of it, so its
        out-of-range is always at the position. A log truncated under a position this consumer
        read up to is not reset by the policy (``_truncated_under``)."""
        if self.positions.get(tp) != fetched_at:
            self._hold([tp])
            return
        if self._truncated_under(tp, fetched_at, entry):
            return
        if self.auto_offset_reset == "none":
            # raised at a poll's start (``_raise_position_error``), never after it took records
            self._cannot_position(tp, f"position {fetched_at} is out of range", fetched_at)
            return
        # said, as Kafka's consumer does: records may be skipped, or read again, from here
        log.warning("%s-%d: position %d is out of the log's range; starting again at the %s offset "
                    "(auto_offset_reset)", tp[0], tp[1], fetched_at, self.auto_offset_reset)
        # found at the position a take set: its give-back takes the reset back with it
        self._reset([tp], self._policy_spec(), keep_give_back=True)

    def _cannot_position(self, tp: TopicPartition, why: str, at: int | None = None) -> None:
        """auto_offset_reset "none": ``tp`` cannot be fetched from ``at`` (None: it has no
        position); a ``poll`` raises once its position is there, before it takes any record.
        Raised here -- in a fetch's answer, read also after ``_take`` advanced the positions --
        it lost the records that poll was returning."""
        self._position_errors[tp] = (at, RemoteError(P.OFFSET_OUT_OF_RANGE, f"{tp[0]}-{tp[1]}: {why}"))

    def _raise_position_error(self) -> None:
        """Raise the error of a partition ``_cannot_position`` found once its position is
        where it was found (records buffered before it are taken first); forget it once the
        partition was seeked past it or given up."""
        for tp, (at, error) in list(self._position_errors.items()):
            position = self.positions.get(tp, -1)
            if position == at:
                del self._position_errors[tp]
                try:
                    raise error
                finally:  # the error's traceback holds this frame: no local may hold the error
                    del error
            if tp not in self.positions or position is None or at is None or position > at:
                del self._position_errors[tp]

    def _policy_spec(self) -> int | None:
        """Where ``auto_offset_reset`` starts a partition with nothing to start from (never
        seeked, nothing committed, out of range; one that appeared while the consumer read its
        topic starts at its log start instead: ``_start_spec``): EARLIEST, LATEST, or None for "none" -- no
        reset: ``poll`` raises until the application seeks, as Kafka's
        NoOffsetForPartitionException (it was taken for "latest": the log end, silently)."""
        return {"earliest": EARLIEST, "latest": LATEST}.get(self.auto_offset_reset)

    def _heard_since_waiting(self, tp: TopicPartition) -> bool:
        """``tp`` has nothing to start from and auto_offset_reset is "none": the error is raised
        only once metadata asked for after the partition began waiting has answered, and how its
        topic was when the consumer began reading it is known. The metadata
        at hand may be older than the topic (a group's assignment of a topic made again, come
        before the metadata naming it): newer metadata may show the partition appeared while it
        was read, and it starts at its log start instead (``_start_spec``)."""
        since = self._waiting_since_asked.setdefault(tp, self._md_asked)
        # an answer to a request sent before does not count (it may be older than the wait), nor
        # one while how the topic was when the reading began is not known yet (``_note_first_seen``)
        if self._md_answered > since and tp[0] not in self._unseen:
            return True
        self._refresh_metadata()
        return False
