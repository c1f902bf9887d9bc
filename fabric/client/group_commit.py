"""A group consumer's offset commits: ``commit`` (sync or async) and the auto-commit -- its
timer, the offsets it may commit (``_auto_commit_offsets``, within ``auto_commit_bounds``), and
the logging of an assigned consumer's refused auto-commits. Looking the group's committed
offsets up (``committed``, an assigned consumer's start at them) is its base
``GroupCommittedLookups`` (fabric/client/group_committed.py).

``GroupCommits`` is one half of ``fabric.client.group.GroupConsumer``, which mixes it in: its
state is the consumer's own (set up by ``_init_commits``), and it reads the consumer's
positions and membership (member id, generation, subscription) as they are when a commit goes
out. The membership and the polling -- subscribe, assign, leave and poll in
``fabric.client.group``; join, sync and rebalance in ``fabric.client.group_join`` -- are kept
apart so that each reads on its own: those modules decide *when* the consumer owns which
partitions, this one *what* it commits of them and *as whom*.

As whom: a subscribed member commits as its member id in its generation; one that is a member
of no generation (it left for ``max_poll_interval_ms``, or has not joined yet) is refused here
(``CommitFailed``), not sent. An assigned consumer commits outside any generation (member id
"", generation -1), which the coordinator takes only while the group has no active members;
its auto-commits' refusals are logged once per kind and tried again at the next interval.

What: ``_last_committed`` mirrors what the coordinator holds for the partitions read, so that
a commit of the positions sends only those that moved; a host that hands records on bounds
auto-commits with ``auto_commit_bounds``.

Thread-safety: the consumer's thread only; the membership the heartbeat thread may change
(``_active``, ``member_id``) is read under the consumer's ``_lock``.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Callable

from fabric import protocol as P
from fabric.client.consumer import ResetSpec, TopicPartition
from fabric.client.group_committed import CommitLookup, GroupCommittedLookups
from fabric.client.group_link import NO_LEADER_EPOCH, REJOIN_ERRORS, CoordinatorLink, Pump
from fabric.clock import Clock
from fabric.errors import CodedError, FabricError, RemoteError
from fabric.metadata import ClusterMetadata

# the consumer's logger, as before this half had a module of its own: hosts configure one
log = logging.getLogger("fabric.client.group")

CommitCallback = Callable[[dict[TopicPartition, int], Exception | None], None]
COMMIT_TIMEOUT_MS = 20_000       # a sync commit retries retriable errors this long
# answered by the coordinator from its own metadata (no such partition, or the topic was
# deleted while the commit waited; the topic the positions were read in is gone): retrying
# cannot help (Kafka's consumer raises it too)
COMMIT_FINAL_ERRORS = frozenset({P.UNKNOWN_TOPIC_OR_PARTITION, P.UNKNOWN_TOPIC_ID})


class CommitFailed(RemoteError):
    """The commit was refused because this member no longer owns the partitions."""


class GroupCommits(GroupCommittedLookups):
    """``GroupConsumer``'s commits and auto-commit (see the module doc). Not usable alone:
    the attributes below are the consumer's, set by ``Consumer.__init__`` and
    ``GroupConsumer.__init__``."""

    # the consumer's state this half reads (fabric.client.consumer.Consumer's, then GroupConsumer's)
    clock: Clock
    positions: dict[TopicPartition, int | None]
    _reset_specs: dict[TopicPartition, ResetSpec]
    metadata: ClusterMetadata
    _read_in: dict[TopicPartition, str]         # the topic id each position was read in
    _positioned_in: dict[TopicPartition, str]   # ... or was set in from outside, or read in before a reset
    _ahead_of_metadata: dict[TopicPartition, str]  # ... a set one the metadata did not name yet
    auto_offset_reset: str
    group_id: str
    subscription: list[str]
    member_id: str
    generation: int
    enable_auto_commit: bool
    auto_commit_interval_ms: int
    on_commit: CommitCallback | None
    _lock: threading.Lock
    _closed: bool
    _active: bool
    _join: object | None            # the join under way (group_join's _JoinAttempt), if any
    _link: CoordinatorLink
    reactor: Pump

    if TYPE_CHECKING:  # GroupConsumer's (and Consumer's), never these
        def _call(self, command: bytes, header: dict, *, timeout_ms: int = ..., retry_ms: int = ...,
                  final: frozenset[int] = ...) -> dict: ...
        def _on_group_error(self, e: RemoteError, generation: int | None = None) -> None: ...
        def _positioned_from_outside(self, tps: list[TopicPartition], of: dict[str, str] | None = None, *,
                                     epochs: dict[TopicPartition, int] | None = None) -> None: ...
        def _refresh_metadata(self) -> None: ...
        def _made_again_since(self, sent_ids: dict[str, str]) -> set[str]: ...
        def _read_epoch_before(self, tp: TopicPartition, offset: int) -> int: ...

    def _init_commits(self) -> None:
        """The state this half owns; called by ``GroupConsumer.__init__`` once
        ``auto_commit_interval_ms`` is set."""
        self._last_committed: dict[TopicPartition, int] = {}
        # ... and the leader epoch each was committed with (absent: none known), where known here
        self._last_committed_epochs: dict[TopicPartition, int] = {}
        # per partition, the highest offset an auto-commit may commit (records from there on
        # went to a host's client that has not confirmed them yet); a rebalance clears it
        self.auto_commit_bounds: dict[TopicPartition, int] = {}
        # per partition of a subscribed member whose leader sent its position back below the group's
        # committed offset (``_went_back``), that offset and its leader epoch: a member's commit
        # below it is refused -- and whole, the other partitions' positions with it -- unless it
        # names a newer epoch, so commits of the positions leave the partition out until its
        # position is back there or carries a newer epoch (``_without_below_commits``)
        self._below_commits: dict[TopicPartition, tuple[int, int]] = {}
        # a subscribed member's timer starts at each assignment; an assigned consumer's here
        self._next_auto_commit_ms = self.clock.now_ms() + self.auto_commit_interval_ms
        self._async_commits_in_flight = 0
        self._auto_commit_failures_logged: set[int] = set()  # codes of an assigned consumer's refusals
        self._commit_lookup: CommitLookup | None = None  # an assigned consumer's OFFSET_FETCH on its way
        self._commit_lookup_retry_at_ms = 0

    # -- commits ---------------------------------------------------------------------------------
    def commit(self, offsets: dict[TopicPartition, int] | None = None, asynchronous: bool = False) -> None:
        """Commit ``offsets`` (the next offset to read, per partition) or the current
        positions (all of them: ``auto_commit_bounds`` limits auto-commits only). Sync:
        returns once replicated; raises CommitFailed when this member lost the partitions (a
        rebalance) or a topic the positions were read in was deleted since (unknown_topic_id:
        perhaps made again under its name; nothing was committed), RemoteError for other
        refusals. Async: the result goes to ``on_commit(offsets, error)``. Raises FabricError
        once the consumer is closed, sync or async, sending nothing: a closed assigned
        consumer's commit (outside any generation) moved the group's offsets, back too, on a
        link opened again for it."""
        self._check_open()
        if offsets is None:
            offsets = self._without_below_commits(self._without_deleted_topics(
                {tp: pos for tp, pos in self.positions.items() if pos is not None and self._last_committed.get(tp) != pos}))
        if not offsets:
            return
        with self._lock:  # once: the heartbeat thread may leave meanwhile (max_poll_interval_ms)
            member_id, generation, joining = self.member_id, self.generation, self._join is not None
        refused: CommitFailed | None = None
        if self.subscription and (not member_id or generation < 0):
            # not a member of any generation (it left for max_poll_interval_ms, or has not joined
            # yet): generation -1 is an administrator's commit, which may move offsets backward
            # (Kafka's CommitFailedException: "not part of an active group")
            refused = CommitFailed(P.UNKNOWN_MEMBER, f"group {self.group_id}: this consumer is not a member of the "
                                                     "group (it left or has not joined): poll() joins it again")
        elif self.subscription and joining:
            # a rebalance under way (the join goes on across polls): the member may hold the new
            # generation already but none of its partitions yet (Kafka's
            # RebalanceInProgressException, a CommitFailedException)
            refused = CommitFailed(P.REBALANCE_IN_PROGRESS, f"group {self.group_id}: a rebalance is under way: "
                                                            "poll() completes it")
        if refused is not None:
            if not asynchronous:
                try:
                    raise refused
                finally:  # the error's traceback holds this frame: no local may hold the error
                    del refused
            log.warning("group %s: async commit failed: %s", self.group_id, refused)
            if self.on_commit is not None:
                self.on_commit(dict(offsets), refused)
            return
        header = self._commit_header(offsets, member_id, generation)
        if asynchronous:
            self._commit_async(offsets, header, lambda err: log.warning("group %s: async commit failed: %s",
                                                                        self.group_id, err))
            return
        try:
            self._call(P.OFFSET_COMMIT, header, timeout_ms=COMMIT_TIMEOUT_MS, retry_ms=COMMIT_TIMEOUT_MS,
                       final=COMMIT_FINAL_ERRORS)
        except CodedError as e:
            self._commit_refused(e, generation)
            if e.code in REJOIN_ERRORS or e.code == P.UNKNOWN_TOPIC_ID:
                raise CommitFailed(e.code, e.message) from e
            raise
        self._committed(offsets, header)

    def _commit_refused(self, e: CodedError, generation: int) -> None:
        """A commit as of ``generation`` failed with ``e``: a rejoin error joins again; a topic
        its positions were read in was deleted (unknown_topic_id, final: nothing was committed)
        -- the metadata is asked for at once, so that those positions start again in the topic
        there is now (``_take_metadata``) rather than be offered at every commit, by a member
        that fetches nothing meanwhile too."""
        self._on_group_error(e, generation)
        if e.code == P.UNKNOWN_TOPIC_ID:
            self._refresh_metadata()

    def _reset(self, tps: list[TopicPartition] | None, spec: ResetSpec, *, keep_give_back: bool = False) -> None:
        """``Consumer._reset``, and what the coordinator was known to hold for ``tps`` forgotten:
        a partition started again may be of a topic made again, of which nothing is committed
        -- an equal position there is not "committed already" (its commit was left out, and the
        group kept no offset of the new topic)."""
        super()._reset(tps, spec, keep_give_back=keep_give_back)  # type: ignore[misc]
        for tp in list(self._last_committed) if tps is None else tps:
            self._last_committed.pop(tp, None)
            self._last_committed_epochs.pop(tp, None)
        for tp in list(self._below_commits) if tps is None else tps:
            self._below_commits.pop(tp, None)

    def _diverged(self, tp: TopicPartition, fetched_at: int, diverging: list) -> None:
        before = self.positions.get(tp)
        super()._diverged(tp, fetched_at, diverging)  # type: ignore[misc]
        if self.positions.get(tp) != before:
            self._went_back(tp)

    def _truncated_under(self, tp: TopicPartition, fetched_at: int, entry: Any) -> bool:
        moved: bool = super()._truncated_under(tp, fetched_at, entry)  # type: ignore[misc]
        if moved:
            self._went_back(tp)
        return moved

    def _went_back(self, tp: TopicPartition) -> None:
        """The leader moved ``tp``'s position back (its log parts from the one read: an unclean
        election), perhaps to or below the group's committed offset -- a member that started
        there, from the committed epoch. That commit is not one of the position now: the epoch
        it names is of records gone, and each member starting there would be sent back again;
        so the position is committed once it is back at the offset, also when equal to it. Below
        it, a member's commit is refused (never backward) with the other partitions' -- unless it
        names a newer epoch than the committed one (the coordinator's ``_check_not_backward``: a
        record the new leader wrote below the offset, read) --, so the partition is left out of
        commits of the positions until then (``_below_commits``); an assigned consumer's commit,
        outside any generation, may go back."""
        committed, position = self._last_committed.get(tp), self.positions.get(tp)
        if committed is None or position is None or position > committed:
            return
        del self._last_committed[tp]
        epoch = self._last_committed_epochs.pop(tp, NO_LEADER_EPOCH)
        if self.subscription and position < committed:
            self._below_commits[tp] = (committed, epoch)

    def _without_below_commits(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """``offsets`` without those below the group's committed offset a leader sent their
        position back under (``_below_commits``) -- but with one the coordinator takes there: the
        position or an offset below it, carrying an epoch newer than the committed one's
        (``_commit_entry``)."""
        below = self._below_commits
        if not below:
            return offsets
        out = {}
        for tp, o in offsets.items():
            at, epoch = below.get(tp, (o, NO_LEADER_EPOCH))
            if o >= at or (epoch >= 0 and self._read_epoch_before(tp, o) > epoch):
                out[tp] = o
        return out

    def _start_again(self, tps: list[TopicPartition]) -> None:
        """``Consumer._start_again``: an assigned consumer looks the group's committed offset of
        the new topic up first (``_position_at_commits``) -- an operator's ``reset-offsets`` of
        it, or another consumer of the group that read it -- and starts at the log start only where
        there is none (``AUTO_RESET``: the partition appeared while it was read). A member goes to
        the log start: while the group has members only they commit, and this one owns the
        partition, so the group has no offset of the new topic for it before its next assignment
        (which starts at whatever is committed then)."""
        super()._start_again(tps)  # type: ignore[misc]
        if not self.subscription:
            for tp in tps:
                self._reset_specs.pop(tp, None)  # awaits its committed offset (``_awaits_position``)

    def _check_open(self) -> None:
        if self._closed:
            raise FabricError("consumer is closed")

    def _commit_header(self, offsets: dict[TopicPartition, int], member_id: str, generation: int) -> dict:
        """OFFSET_COMMIT's header: as member ``member_id`` of ``generation`` (read once, under
        the lock), or (an assigned consumer, member id "" and generation -1) outside any
        generation; naming the topics the offsets were read in (``_commit_topic_ids``) and, for
        an offset at its partition's position, the leader epoch the next fetch from there names
        (``_commit_entry``)."""
        return {"group": self.group_id, "member_id": member_id, "generation": generation,
                "offsets": [self._commit_entry(t, p, o) for (t, p), o in sorted(offsets.items())],
                "topic_ids": self._commit_topic_ids(offsets)}

    def _commit_entry(self, t: str, p: int, offset: int) -> list:
        """One offset of OFFSET_COMMIT: ``[t, p, offset]``, and where this consumer knows the
        leader epoch of the record before ``offset`` (``_read_epoch_before``: at the position, the
        one its next fetch names; below it, the epoch that record was taken in -- an application's
        own offset, an auto-commit's bound, a REST instance's commit of what it handed out),
        ``metadata`` ("") and that epoch: KIP-320's committed leader epoch. Who starts from the
        offset names it in its first fetch, and a leader whose log parts from the one read there
        (an unclean election: truncated under the offset, then written again) says where, instead
        of the records written since being skipped. An offset whose record was not taken here
        goes without one."""
        epoch = self._read_epoch_before((t, p), offset)
        return [t, p, offset, "", epoch] if epoch >= 0 else [t, p, offset]

    def position_topic_ids(self) -> dict[str, str]:
        """{topic: id} of the topics the current positions are of, as a commit of them names
        them: a host that hands records on (the consumer service) tells its client when they
        change -- the topic was deleted and made again, and what the client was sent before is
        of the old one."""
        return self._commit_topic_ids({tp: o for tp, o in self.positions.items() if o is not None})

    def _commit_topic_ids(self, offsets: dict[TopicPartition, int]) -> dict[str, str]:
        """{topic: id} for a commit of ``offsets`` (OFFSET_COMMIT's ``topic_ids``): the topic each
        position was read in (``_read_in``), else the one ``_positioned_in`` names, else the
        metadata's now; a topic known by no id is left out (judged by name). An offset beyond
        the position read in a topic made again (its records were not returned yet: the
        application's own offsets, of records the topic before gave it) names the topic before.
        Partitions of one topic that name two ids -- one position of a topic made again since,
        not yet reset -- name the older: the coordinator refuses the commit rather than take a
        position of the topic that is gone for the new one. The older is the one the metadata
        lists as deleted, else the one it names where the other is ahead of it (a committed
        offset of a topic it does not name yet: ``_ahead_of_metadata``), else the one it does not
        name."""
        ids: dict[str, set[str]] = {}
        for tp, offset in offsets.items():
            tid, before = self._read_in.get(tp), self._positioned_in.get(tp)
            if tid and before and before != tid and offset > (self.positions.get(tp) or 0):
                tid = before
            tid = tid or before
            if not tid:
                t = self.metadata.topics.get(tp[0])
                tid = t.topic_id if t is not None else ""
            if tid:
                ids.setdefault(tp[0], set()).add(tid)
        out = {}
        for topic, named in ids.items():
            out[topic] = self._older_topic_id(topic, named) if len(named) > 1 else min(named)
        return out

    def _older_topic_id(self, topic: str, named: set[str]) -> str:
        """Of two or more ids of ``topic``, one that is not its newest (``_commit_topic_ids``)."""
        md = self.metadata
        deleted = sorted(named & set(md.deleted_topic_ids))
        if deleted:
            return deleted[0]
        now = md.topic_ids_of([topic]).get(topic)
        ahead = {i for tp, i in self._ahead_of_metadata.items() if tp[0] == topic}
        if now in named and named & ahead:
            return now
        gone = sorted(named - {now})
        return gone[0] if gone else min(named)

    def _commit_async(self, offsets: dict[TopicPartition, int], header: dict,
                      failed: Callable[[RemoteError], None]) -> None:
        """Send the commit (``header`` from ``_commit_header``); its reply, on this
        consumer's reactor, records it or hands the error to ``failed``; either goes to
        ``on_commit``."""
        generation = header["generation"]

        def done(h: dict | None, _p: list, err: RemoteError | None) -> None:
            self._async_commits_in_flight -= 1
            if err is None:
                self._committed(offsets, header)
            else:
                self._commit_refused(err, generation)
                failed(err)
            if self.on_commit is not None:
                self.on_commit(dict(offsets), err)
        self._async_commits_in_flight += 1
        try:
            self._link.request(P.OFFSET_COMMIT, header, callback=done, timeout_ms=COMMIT_TIMEOUT_MS)
        except CodedError:  # not sent (the coordinator could not be found): no reply will come
            self._async_commits_in_flight -= 1
            raise

    def _finish_async_commits(self, timeout_ms: int = COMMIT_TIMEOUT_MS) -> None:
        """Run the reactor until the asynchronous commits in flight are answered, up to
        ``timeout_ms`` (as long as one may take): ``close`` and ``unsubscribe`` call it before
        the connection goes or the membership changes, as Kafka's close waits for pending
        async commits -- one dropped with the connection brought its records again to whoever
        read the partition next."""
        deadline = self.clock.now_ms() + timeout_ms
        while self._async_commits_in_flight and self.clock.now_ms() < deadline:
            self.reactor.run_once(min(100, max(1, deadline - self.clock.now_ms())))

    def _committed(self, offsets: dict[TopicPartition, int], header: dict) -> None:
        """A commit of ``offsets`` (``header``: its OFFSET_COMMIT, naming their topics by
        ``topic_ids`` and their leader epochs) was taken. Those of a
        topic the metadata names by another id now -- deleted and made again before the answer
        came -- are the old topic's, which the coordinator forgets: they say nothing of the new
        one (taken for it, a lookup of the new topic's committed offset under way was answered by
        the old topic's, and the new topic read from there, its records below it skipped)."""
        made_again = self._made_again_since(header["topic_ids"])
        if made_again:
            offsets = {tp: o for tp, o in offsets.items() if tp[0] not in made_again}
        # what the coordinator holds now, also below the last commit (a commit outside any
        # generation -- an assigned consumer's -- may move it back): a higher value kept here
        # would be taken for committed once the position reaches it again, and commit() of the
        # positions would never send it
        self._last_committed.update(offsets)
        epochs = {(e[0], e[1]): e[4] for e in header["offsets"] if len(e) > 4}
        for tp, o in offsets.items():
            epoch = epochs.get(tp, NO_LEADER_EPOCH)
            self._last_committed_epochs[tp] = epoch
            below = self._below_commits.get(tp)
            if below is not None and (o >= below[0] or epoch > below[1] >= 0):
                del self._below_commits[tp]
        self._auto_commit_failures_logged.clear()  # a later refusal is news again
        if self._commit_lookup is not None:
            self._commit_lookup.committed_since.update(offsets)

    # -- auto-commit -----------------------------------------------------------------------------
    def _maybe_auto_commit(self) -> None:
        """The asynchronous auto-commit, when due: a subscribed consumer's only while it is an
        active member, an assigned consumer's as a commit outside any generation."""
        if self.subscription:
            with self._lock:  # the heartbeat thread may leave the group meanwhile (max_poll_interval_ms)
                active = self._active and bool(self.member_id)
            if not active:
                return
        if not self.enable_auto_commit or self.clock.now_ms() < self._next_auto_commit_ms:
            return
        if self._async_commits_in_flight:
            return  # the coordinator is slow or away: do not pile commits up behind it
        # set before the commit: a refused one is tried again only at the next interval
        self._next_auto_commit_ms = self.clock.now_ms() + self.auto_commit_interval_ms
        if self.subscription:
            self.commit(self._auto_commit_offsets(), asynchronous=True)
            return
        offsets = self._auto_commit_offsets()
        if offsets:
            self._auto_commit_async(offsets)

    def _auto_commit_async(self, offsets: dict[TopicPartition, int]) -> None:
        """An assigned consumer's asynchronous auto-commit of ``offsets``: a refusal, or a
        commit that could not be sent, is logged (``_auto_commit_failed``), never raised."""
        try:
            self._commit_async(offsets, self._commit_header(offsets, "", -1), self._auto_commit_failed)
        except CodedError as e:
            self._auto_commit_failed(e)

    def _auto_commit_sync(self) -> None:
        """An assigned consumer's last auto-commit before it gives its partitions up
        (``unsubscribe``, ``close``): synchronous, as Kafka's close; a refusal is logged."""
        if not self.enable_auto_commit:
            return
        try:
            self.commit(self._auto_commit_offsets())
        except CodedError as e:
            self._auto_commit_failed(e)

    def _auto_commit_failed(self, err: CodedError) -> None:
        """Log an assigned consumer's failed auto-commit at warning once per error code (a
        group with members refuses each one until they leave), again after a commit succeeds."""
        if err.code in self._auto_commit_failures_logged:
            log.debug("group %s: auto-commit failed again: %s", self.group_id, err)
            return
        self._auto_commit_failures_logged.add(err.code)
        log.warning("group %s: auto-commit of the assigned partitions failed (tried again every %d ms; "
                    "logged once): %s", self.group_id, self.auto_commit_interval_ms, err)

    def _auto_commit_offsets(self) -> dict[TopicPartition, int]:
        """What an auto-commit commits: the positions, each at most its ``auto_commit_bounds``
        entry, that the last commit did not cover. A bound at or below the last commit (the
        client seeked back under it) leaves the partition out: moving the commit back would
        only have it sent again at every interval."""
        bounds, last = self.auto_commit_bounds, self._last_committed
        offsets = {}
        for tp, pos in self.positions.items():
            if pos is None:
                continue
            bound = bounds.get(tp, pos)
            if bound < pos:
                if bound <= last.get(tp, -1):
                    continue
                pos = bound
            if last.get(tp) != pos:
                offsets[tp] = pos
        return self._without_below_commits(self._without_deleted_topics(offsets))

    def _without_deleted_topics(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """``offsets`` (the positions a commit of them all takes) without those read in a topic
        the metadata lists as deleted and names no more (not made again yet): the coordinator
        refuses a commit naming one whole (unknown_topic_id), at every attempt for as long as
        the member holds the partition -- its other partitions' positions were never committed."""
        md = self.metadata
        absent = [tp for tp in offsets if tp[0] not in md.topics]
        if not absent:
            return offsets
        deleted = set(md.deleted_topic_ids)
        gone = {tp for tp in absent if (self._read_in.get(tp) or self._positioned_in.get(tp)) in deleted}
        return {tp: o for tp, o in offsets.items() if tp not in gone} if gone else offsets
