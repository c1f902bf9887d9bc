"""A group consumer's join and rebalance: the revocation that starts a join, JOIN_GROUP,
SYNC_GROUP and the committed offsets' OFFSET_FETCH sent one after the other as their answers
arrive (``_advance_join``, taken up by ``poll`` and ``maintain``: the join goes on across
polls, KIP-266), the assignment a completed join brings, and the coordinator errors that mean
"join again".

A new member asks the coordinator for its member id first and then joins with it (KIP-394),
so a join retried after a lost reply never leaves a ghost member holding partitions.

``GroupJoin`` is one half of ``fabric.client.group.GroupConsumer``, which mixes it in: its
state is the consumer's own (set by ``GroupConsumer.__init__``). The membership's API
(subscribe, assign, unsubscribe, leave), the polling and what the heartbeat thread asks of the
member are in ``fabric.client.group``; the commits in ``fabric.client.group_commit``.

Thread-safety: the consumer's thread only; the heartbeat thread shares a few fields with it
(``_active``, ``_join``, ``_rejoin_needed``, the member id and generation) under the
consumer's ``_lock``.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import TYPE_CHECKING, Any, Callable

from fabric import protocol as P
from fabric.client.consumer import AUTO_RESET, ResetSpec, TopicPartition
from fabric.client.admin import EARLIEST
from fabric.client.group_link import (COORDINATOR_CALL_TIMEOUT_MS, REJOIN_ERRORS, RETRY_BACKOFF_MS, CoordinatorLink,
                                     committed_epochs, take_offset_fetch)
from fabric.clock import Clock
from fabric.errors import CodedError, RemoteError
from fabric.metadata import ClusterMetadata

# the consumer's logger, as before this half had a module of its own: hosts configure one
log = logging.getLogger("fabric.client.group")



class _JoinAttempt:
    """One join under way (``GroupConsumer._advance_join``): what its answers brought."""

    __slots__ = ("error", "assignment", "offsets", "topic_ids", "newer", "retry_at_ms")

    def __init__(self) -> None:
        self.error: CodedError | None = None        # an answer's error, for _advance_join
        self.assignment: list[TopicPartition] = []  # SYNC_GROUP's
        self.offsets: list | None = None            # OFFSET_FETCH's: the join is done
        self.topic_ids: dict[str, str] = {}         # ... and the topics its offsets are of
        self.newer: set[TopicPartition] = set()     # ... and its partitions newer than the group's reading
        self.retry_at_ms: int | None = None         # after a retriable error: JOIN_GROUP again then


class GroupJoin:
    """``GroupConsumer``'s join and rebalance (see the module doc). Not usable alone: the
    attributes below are the consumer's, set by ``Consumer.__init__`` and
    ``GroupConsumer.__init__``."""

    # the consumer's state this half uses (fabric.client.consumer.Consumer's, then GroupConsumer's)
    clock: Clock
    positions: dict[TopicPartition, int | None]
    metadata: ClusterMetadata
    group_id: str
    client_id: str
    subscription: list[str]
    member_id: str
    generation: int
    session_timeout_ms: int
    rebalance_timeout_ms: int
    assignor: str
    enable_auto_commit: bool
    auto_commit_interval_ms: int
    auto_commit_bounds: dict[TopicPartition, int]
    on_assign: Callable[[list[TopicPartition]], None] | None
    on_revoke: Callable[[list[TopicPartition]], None] | None
    _lock: threading.Lock
    _closed: bool
    _active: bool
    _rejoin_needed: bool
    _join: _JoinAttempt | None
    _link: CoordinatorLink
    _heartbeat: Any
    _last_committed: dict[TopicPartition, int]
    _last_committed_epochs: dict[TopicPartition, int]
    _below_commits: dict[TopicPartition, tuple[int, int]]
    _next_auto_commit_ms: int

    if TYPE_CHECKING:  # the other halves', never these
        def assignment(self) -> list[TopicPartition]: ...
        def commit(self, offsets: dict[TopicPartition, int] | None = None, asynchronous: bool = False) -> None: ...
        def _auto_commit_offsets(self) -> dict[TopicPartition, int]: ...
        def _refresh_metadata(self) -> None: ...
        def _reset(self, tps: list[TopicPartition] | None, spec: ResetSpec) -> None: ...
        def _positioned_from_outside(self, tps: list[TopicPartition], of: dict[str, str] | None = None, *,
                                     epochs: dict[TopicPartition, int] | None = None) -> None: ...
        def _ensure_heartbeat(self) -> None: ...

    # -- the rebalance ---------------------------------------------------------------------------
    def _revoke(self) -> None:
        """Give up the current partitions: commit (auto-commit), tell the application."""
        owned = self.assignment()
        if owned and self.enable_auto_commit and self.member_id and self.generation >= 0:
            # still a member of the generation that owns them (the heartbeat thread may have
            # paused heartbeats already): commits are accepted until the rebalance completes
            try:
                self.commit(self._auto_commit_offsets())
            except CodedError as e:
                log.warning("group %s: commit before revocation failed: %s", self.group_id, e)
        self.auto_commit_bounds = {}  # of partitions given up: a new assignment starts at their commits
        with self._lock:
            self._active = False
        if owned and self.on_revoke is not None:
            self.on_revoke(owned)
        super().assign([])

    def _advance_join(self) -> None:
        """Move the join along without waiting (KIP-266): start one when a rejoin is needed
        (revoking first), take the assignment once JOIN_GROUP, SYNC_GROUP and the committed
        offsets' OFFSET_FETCH -- sent one after the other as their answers arrive, on this
        consumer's reactor (``_JoinAttempt``) -- are answered, and deal with an error: a rejoin
        error joins again at once, a retriable one after RETRY_BACKOFF_MS, and one retrying
        cannot cure (an assignor the group does not use, a session timeout out of range) is
        raised, the next poll trying again."""
        join = self._join
        if join is None:
            with self._lock:
                rejoin = self._rejoin_needed
            if not rejoin:
                return
            if not self._link.connected and not self.metadata.coordinator:
                self._refresh_metadata()  # the join starts once the metadata names the coordinator
                return
            self._revoke()
            join = _JoinAttempt()
            with self._lock:  # the heartbeat thread reads it (heartbeat_state, leave_if_poll_expired)
                self._join = join
            self._send_join(join)
        if self._heartbeat is None and self._link.connected:  # its endpoint is known from now on
            self._ensure_heartbeat()
        if join.error is not None:
            e, join.error = join.error, None
            self._on_group_error(e)
            if e.code in REJOIN_ERRORS:
                self._send_join(join)
            elif not e.retriable:
                with self._lock:
                    self._join = None
                    self._rejoin_needed = True
                try:
                    raise e
                finally:  # the error's traceback holds this frame: no local may hold the error
                    del e
            else:
                join.retry_at_ms = self.clock.now_ms() + RETRY_BACKOFF_MS
        elif join.retry_at_ms is not None and self.clock.now_ms() >= join.retry_at_ms:
            self._send_join(join)
        elif join.offsets is not None:
            with self._lock:
                stale = self._rejoin_needed
                if not stale:
                    self._join = None
            if stale:
                # since this JOIN_GROUP went out the subscription changed, the heartbeat thread left
                # the group (max_poll_interval_ms) or an answer ended the generation: what it brought
                # is not this member's to take (Kafka's "assignment does not match the
                # subscription"): join again
                self._send_join(join)
            else:
                self._take_assignment(join.assignment, join.offsets, join.topic_ids, join.newer)

    def _send_join(self, join: "_JoinAttempt") -> None:
        """Send JOIN_GROUP for ``join``; its answer sends SYNC_GROUP, whose answer sends the
        OFFSET_FETCH (``_step``). Answers to an attempt given up (``self._join`` is another
        one, or none: unsubscribe, close) change nothing."""
        with self._lock:
            self._rejoin_needed = False  # what changes from here on is seen when the join completes
        join.retry_at_ms, join.assignment, join.offsets = None, [], None
        self._step(join, P.JOIN_GROUP, {
            "group": self.group_id, "member_id": self.member_id, "generation": self.generation,
            "client_id": self.client_id, "client_host": socket.gethostname(), "topics": self.subscription,
            "session_timeout_ms": self.session_timeout_ms, "rebalance_timeout_ms": self.rebalance_timeout_ms,
            "assignor": self.assignor, "require_member_id": True}, self.rebalance_timeout_ms + 5000)

    def _step(self, join: "_JoinAttempt", command: bytes, header: dict,
              timeout_ms: int = COORDINATOR_CALL_TIMEOUT_MS) -> None:
        def done(h: dict | None, _p: list, err: RemoteError | None) -> None:
            if join is not self._join or self._closed:
                return  # an attempt given up
            if err is not None:
                join.error = err
            elif command == P.JOIN_GROUP and h.get("member_id_required"):
                with self._lock:
                    self.member_id = h["member_id"]  # join again, now under that id (KIP-394)
                self._send_join(join)
            elif command == P.JOIN_GROUP:
                with self._lock:
                    self.member_id, self.generation = h["member_id"], h["generation"]
                self._step(join, P.SYNC_GROUP, {"group": self.group_id, "member_id": self.member_id,
                                                 "generation": self.generation})
            elif command == P.SYNC_GROUP:
                join.assignment = sorted((t, p) for t, p in h["assignment"])
                self._step(join, P.OFFSET_FETCH, {"group": self.group_id,
                                                  "partitions": [list(tp) for tp in join.assignment]})
            else:
                take_offset_fetch(join, h)
        try:
            self._link.request(command, header, callback=done, timeout_ms=timeout_ms)
        except CodedError as e:  # not sent (the coordinator could not be found, a full queue)
            join.error = e

    def _take_assignment(self, assignment: list[TopicPartition], offsets: list, topic_ids: dict[str, str],
                         newer: set[TopicPartition]) -> None:
        """Take the assignment a join brought, each partition at its committed offset (``offsets``,
        of the topics ``topic_ids`` names); one with nothing committed at its log start if the
        coordinator judged it ``newer`` than the group's reading of its topic (OFFSET_FETCH's
        ``newer_than_reading``: a member that joined after it was made -- a new process --
        cannot tell), else at ``auto_offset_reset`` (or, appeared while this consumer read
        its topic, at its log start: ``Consumer._start_spec``)."""
        super().assign(assignment)  # the group's: not the application's assign()
        self._last_committed = {}  # what an earlier ownership committed says nothing now
        self._last_committed_epochs = committed_epochs(offsets)
        self._below_commits = {}
        committed = {(t, p): o for t, p, o, *_ in offsets}
        for tp in assignment:
            off = committed.get(tp, -1)
            if off >= 0:
                self.positions[tp] = off
                self._last_committed[tp] = off
            else:
                self._reset([tp], EARLIEST if tp in newer else AUTO_RESET)
        self._positioned_from_outside([tp for tp in assignment if self.positions.get(tp) is not None], topic_ids,
                                      epochs=committed_epochs(offsets))
        self._next_auto_commit_ms = self.clock.now_ms() + self.auto_commit_interval_ms
        with self._lock:
            self._active = True
        log.info("group %s: %s generation %d assigned %s", self.group_id, self.member_id, self.generation, assignment)
        if self.on_assign is not None:
            self.on_assign(list(assignment))

    def _on_group_error(self, e: RemoteError, generation: int | None = None) -> None:
        """Coordinator errors that mean "join again" (and, for unknown_member, as new).
        An error about an older generation than ours (a late reply) is ignored."""
        if generation is not None and generation != self.generation:
            return
        if e.code in (P.UNKNOWN_MEMBER, P.UNKNOWN_GROUP):
            self.member_id = ""
        if e.code in REJOIN_ERRORS:
            with self._lock:
                self._rejoin_needed = True
                self._active = False
