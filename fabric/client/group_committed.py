"""The group's committed offsets as a group consumer looks them up: ``committed``,
``committed_offsets``, ``committed_with_topic_ids`` and ``committed_starts`` (blocking, for the
application or a host that starts partitions itself), and the start of an assigned consumer's
partitions at them (``_position_at_commits``: one OFFSET_FETCH on its way, never waited for).

``GroupCommittedLookups`` is a base of ``fabric.client.group_commit.GroupCommits`` (part of
``fabric.client.group.GroupConsumer``): its state (``_commit_lookup``,
``_commit_lookup_retry_at_ms``, ``_last_committed``) is set up by ``GroupCommits._init_commits``,
and a commit answered while a lookup is on its way adds to its ``committed_since``
(``GroupCommits._committed``).

Thread-safety: the consumer's thread only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fabric import protocol as P
from fabric.client.admin import EARLIEST
from fabric.client.consumer import AUTO_RESET, ResetSpec, TopicPartition
from fabric.client.group_link import (RETRY_BACKOFF_MS, CoordinatorLink, committed_epochs, read_offset_fetch,
                                     take_offset_fetch)
from fabric.clock import Clock
from fabric.errors import CodedError, RemoteError


class CommitLookup:
    """An assigned consumer's OFFSET_FETCH of the committed offsets of ``tps``: on its way
    until ``offsets`` (its answer's) or ``error`` is set; ``committed_since``: what this
    consumer's commits answered meanwhile (newer than the answer may say)."""

    __slots__ = ("tps", "offsets", "topic_ids", "newer", "error", "committed_since")

    def __init__(self, tps: list[TopicPartition]) -> None:
        self.tps = tps
        self.offsets: list | None = None
        self.topic_ids: dict[str, str] = {}  # the topics the answer's offsets are of
        self.newer: set[TopicPartition] = set()  # ... and its partitions newer than the group's reading
        self.error: CodedError | None = None
        self.committed_since: dict[TopicPartition, int] = {}


class GroupCommittedLookups:
    """``GroupCommits``' lookups of the group's committed offsets (see the module doc). Not
    usable alone: the attributes below are the consumer's."""

    # the consumer's state this part reads (fabric.client.consumer.Consumer's, GroupConsumer's and GroupCommits')
    clock: Clock
    positions: dict[TopicPartition, int | None]
    _reset_specs: dict[TopicPartition, ResetSpec]
    group_id: str
    subscription: list[str]
    _link: CoordinatorLink
    _last_committed: dict[TopicPartition, int]
    _last_committed_epochs: dict[TopicPartition, int]
    _commit_lookup: CommitLookup | None     # an assigned consumer's OFFSET_FETCH on its way
    _commit_lookup_retry_at_ms: int

    if TYPE_CHECKING:  # the consumer's, never these
        def _call(self, command: bytes, header: dict, *, timeout_ms: int = ..., retry_ms: int = ...,
                  final: frozenset[int] = ...) -> dict: ...
        def _check_open(self) -> None: ...
        def _positioned_from_outside(self, tps: list[TopicPartition], of: dict[str, str] | None = None, *,
                                     epochs: dict[TopicPartition, int] | None = None) -> None: ...

    def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset of ``tp`` (None: nothing committed)."""
        return self.committed_offsets([tp])[tp]

    def committed_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets of ``tps`` (None: nothing committed), in one request
        (Kafka's ``committed(Set<TopicPartition>)``): an assignment of thousands of partitions
        looks them up at once, not one round trip (and retry budget) each. Raises FabricError
        once the consumer is closed."""
        return self.committed_with_topic_ids(tps)[0]

    def committed_with_topic_ids(self, tps: list[TopicPartition]) -> tuple[dict[TopicPartition, int | None],
                                                                          dict[str, str]]:
        """``committed_offsets``, and {topic: id} of the topics those offsets are of (empty from an
        older coordinator): a host that seeks to them says so (``seek(..., topic_id=, committed=True)``),
        so that an offset of a topic made again since is not taken for one of the new topic."""
        offsets, topic_ids, _, _ = self.committed_starts(tps)
        return offsets, topic_ids

    def committed_starts(self, tps: list[TopicPartition]) -> tuple[dict[TopicPartition, int | None], dict[str, str],
                                                                   set[TopicPartition], dict[TopicPartition, int]]:
        """``committed_with_topic_ids``; those of ``tps`` with nothing committed that the
        coordinator names newer than the group's reading of their topic (``newer_than_reading``):
        a host that starts them itself starts those at their log start (``seek_to_beginning``);
        and {partition: the leader epoch of the record before its committed offset}, where the
        commit said (KIP-320): a host that seeks to a committed offset passes it on
        (``seek(..., leader_epoch=)``)."""
        self._check_open()
        if not tps:
            return {}, {}, set(), {}
        h = self._call(P.OFFSET_FETCH, {"group": self.group_id, "partitions": [list(tp) for tp in tps]})
        offsets, topic_ids, newer = read_offset_fetch(h)
        return self._took_committed(tps, offsets), topic_ids, newer, committed_epochs(offsets)

    def _took_committed(self, tps: list[TopicPartition], offsets: list) -> dict[TopicPartition, int | None]:
        """OFFSET_FETCH's ``offsets`` of ``tps``, per partition (None: nothing committed), also
        kept in ``_last_committed`` by an assigned consumer."""
        found, epochs = {(t, p): o for t, p, o, *_ in offsets}, committed_epochs(offsets)
        out: dict[TopicPartition, int | None] = {}
        for tp in tps:
            off = found.get(tp, -1)
            if not self.subscription and off >= 0:
                # what the group holds: an assigned consumer seeked there (the consumer
                # service's assign) has nothing to auto-commit until its position moves
                self._last_committed[tp] = off
                self._last_committed_epochs[tp] = epochs.get(tp, -1)
            elif not self.subscription:
                self._last_committed.pop(tp, None)
                self._last_committed_epochs.pop(tp, None)
            out[tp] = off if off >= 0 else None
        return out

    # -- an assigned consumer's start ------------------------------------------------------------
    def _position_at_commits(self) -> bool:
        """Start an assigned partition that has no position (not seeked, no records yet) at the
        group's committed offset, as Kafka's consumer does after ``assign()`` with a group id
        (with or without auto-commit); ``auto_offset_reset`` only where nothing is committed.
        Else a restarted application skipped what came after its last commit (latest) or read
        the log again (earliest), and an auto-commit moved the group there. One the coordinator
        names newer than the group's reading of its topic starts at its log start.

        Never waits (KIP-266): one OFFSET_FETCH goes out for the partitions without a position
        and its answer is taken up by a later call; meanwhile they are neither fetched nor reset
        (``_awaits_position``). A blocking lookup, retried for up to 10 s while the coordinator
        was away, held ``poll(0)`` as long. A retriable failure is tried again after
        RETRY_BACKOFF_MS; one retrying cannot cure is raised (the next call tries again).
        True while a partition awaits its position so."""
        lookup = self._commit_lookup
        if lookup is not None:
            if lookup.offsets is None and lookup.error is None:
                return True  # on its way
            self._commit_lookup = None
            if lookup.error is not None:
                self._commit_lookup_retry_at_ms = self.clock.now_ms() + RETRY_BACKOFF_MS
                if not lookup.error.retriable:
                    error, lookup = lookup.error, None
                    try:
                        raise error
                    finally:  # the error's traceback holds this frame: no local may hold the error
                        del error
                return True
            # a commit answered after the lookup went out wins over its answer, also in
            # _last_committed (else the older answer taken for committed left a later commit of
            # the same offset out)
            since = lookup.committed_since
            found = self._took_committed([tp for tp in lookup.tps if tp not in since], lookup.offsets)
            found.update(since)
            epochs = committed_epochs(lookup.offsets)
            for tp in lookup.tps:
                if not self._awaits_position(tp):
                    continue  # seeked or given up meanwhile
                off = found[tp]
                if off is not None:
                    self.positions[tp] = off
                    # one of this consumer's own commits since: of the topic the metadata names
                    self._positioned_from_outside([tp], None if tp in since else lookup.topic_ids,
                                                  epochs=None if tp in since else epochs)
                else:  # nothing committed: the log start of one newer than the group's reading, else
                    # the reset policy (``Consumer._start_spec``), looked up once
                    self._reset_specs[tp] = EARLIEST if tp in lookup.newer else AUTO_RESET
        # _awaits_position, in the scan itself: a call per partition cost ~2 ms a pass with 10,000 of them
        fresh = [tp for tp, pos in self.positions.items() if pos is None and tp not in self._reset_specs]
        if not fresh or self.clock.now_ms() < self._commit_lookup_retry_at_ms:
            return bool(fresh)
        lookup = self._commit_lookup = CommitLookup(fresh)

        def done(h: dict | None, _p: list, err: RemoteError | None) -> None:
            if lookup is not self._commit_lookup:
                return  # given up (close, a subscribe)
            if err is not None:
                lookup.error = err
            else:
                take_offset_fetch(lookup, h)
        try:
            self._link.request(P.OFFSET_FETCH, {"group": self.group_id, "partitions": [list(tp) for tp in fresh]},
                               callback=done)
        except CodedError as e:  # not sent (the coordinator could not be found yet): as an answer
            # without its traceback, which holds this frame, and so ``lookup``: a reference cycle
            lookup.error = e.with_traceback(None)
        return True

    def _awaits_position(self, tp: TopicPartition) -> bool:
        """``tp`` is assigned without a position or a reset to take: its committed offset is
        (to be) looked up. ``Consumer._send_fetches`` resets no such partition."""
        return self.positions.get(tp, 0) is None and tp not in self._reset_specs
