"""The group consumer: ``subscribe``, ``poll``, ``commit`` -- Kafka's consumer-group API.

    c = GroupConsumer(bootstrap, group_id="billing", auto_offset_reset="earliest",
                      on_assign=lambda tps: ..., on_revoke=lambda tps: ...)
    c.subscribe(["orders"])
    while running:
        for r in c.poll(1000):
            handle(r)
    c.close()                      # commits (auto-commit), leaves the group at once

``poll_batch`` is the same with records as per-partition views (``fabric.records.RecordBatchView``).

Instead of ``subscribe``, ``assign(partitions)`` reads exactly those partitions (Kafka's
manual assignment): no membership, no rebalances, but the group id still holds the committed
offsets (``committed``, ``commit``). Its commits go out outside any generation (generation -1,
no member id), which the coordinator takes only while the group has no active members: it
refuses them (``non_empty_group``) in a group that others are consuming as members. With
A partition neither seeked nor read yet starts at the group's committed offset
(``auto_offset_reset`` only where there is none), as after Kafka's ``assign()`` with a group id,
with or without ``enable_auto_commit``: a restarted application that commits what it processed
resumes there (at ``latest`` it skipped what came after its last commit), and with auto-commit
its reset position would otherwise be committed, past records nobody got.

A consumer reads one way at a time, as Kafka's: ``subscribe`` while partitions are assigned,
or ``assign`` while subscribed, raises ``SubscriptionConflictError`` and changes nothing (the
switch would drop the positions uncommitted: records delivered again, or skipped with
``auto_offset_reset="latest"``). ``unsubscribe()`` ends either mode, committing first with
``enable_auto_commit``; then the other may start. ``assign([])`` is ``unsubscribe()``.

Delivery is at least once: a member that takes over a partition starts at the committed
offset, so nothing is skipped and at most the uncommitted tail is delivered again. With
``enable_auto_commit`` the positions of records returned by earlier polls are committed every
``auto_commit_interval_ms`` (asynchronously, at the start of ``poll``), and synchronously
before partitions are given up in a rebalance and at ``close``. An assigned consumer
auto-commits too, on the same interval (in ``poll`` and ``maintain``), for the partitions a
new ``assign`` leaves out (asynchronously, as Kafka's ``assign()``) and at ``unsubscribe`` and
``close``; a refused auto-commit is logged (once per kind of refusal) and tried again at the next
interval, never raised out of them. A host that hands records on
(the consumer service) sets ``auto_commit_bounds`` so that, until its own client confirms
them, auto-commits stop at the first record it handed on (see ``_auto_commit_offsets``).

A background thread (own DEALER socket) sends heartbeats every ``heartbeat_interval_ms``, so
the member stays in the group while the application works between polls -- also while a
join waits in it for the application's next poll, once it has a member id. A rebalance,
though, happens inside ``poll``: when one starts, the other members wait up to
``rebalance_timeout_ms`` for this one to call ``poll`` again. The join goes on across polls
(KIP-266): JOIN_GROUP, SYNC_GROUP and the committed offsets' OFFSET_FETCH go out one after the
other as their answers arrive, and a ``poll`` (or ``maintain``) returns at its timeout with
what it has, never waiting for the rebalance to end. A join completed after the subscription
changed (``subscribe`` while it waited) brings nothing: the member joins again with its topics,
as Kafka's consumer does with an assignment that does not match its subscription. An
application that has not called ``poll`` for ``max_poll_interval_ms`` is taken to be stuck:
the heartbeat thread stops heartbeating and leaves the group, so its partitions go to the
others; the next ``poll`` joins again as a new member (Kafka's ``max.poll.interval.ms``).

This module holds the membership's API (subscribe, assign, unsubscribe, leave), the polling
and what the heartbeat thread asks of the member. Two halves of ``GroupConsumer`` are mixed
in: the join and the rebalance -- JOIN_GROUP, SYNC_GROUP and OFFSET_FETCH across polls, the
revocation before and the assignment after -- are ``GroupJoin`` (``fabric.client.group_join``);
the commits and the auto-commit -- what is committed, as whom, and when, including
``_auto_commit_offsets`` -- are ``GroupCommits`` (``fabric.client.group_commit``).

The consumer reaches the coordinator through a ``CoordinatorLink`` and is heartbeated by a
``HeartbeatThread`` (``fabric.client.group_link``); both can be handed in (``coordinator``,
``heartbeat_factory``), so tests drive the real consumer with small fakes. The requests in
flight on a connection to the coordinator that ends (a coordinator killed) fail with it, as
retriable timeouts, and are retried: the restarted coordinator answers them.

Thread-safety: like ``fabric.client.Consumer``, one thread uses a consumer; the heartbeat
thread shares only a few fields under a lock.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from fabric import protocol as P
from fabric.client.consumer import Consumer as _AssignConsumer
from fabric.client.consumer import TopicPartition
from fabric.client.group_commit import COMMIT_TIMEOUT_MS, CommitCallback, CommitFailed, GroupCommits
from fabric.client.group_join import GroupJoin, _JoinAttempt
from fabric.client.group_link import (COORDINATOR_CALL_TIMEOUT_MS, RETRY_BACKOFF_MS, CoordinatorLink, HeartbeatMember,
                                      HeartbeatSettings, HeartbeatThread)
from fabric.errors import CodedError, FabricError, RequestTimeout, SubscriptionConflictError
from fabric.records import RecordBatchView
from fabric.rpc import RpcClient

# CommitFailed, CommitCallback and COMMIT_TIMEOUT_MS live in group_commit, RETRY_BACKOFF_MS in group_link;
# importable from here as before
__all__ = ["COMMIT_TIMEOUT_MS", "POLL_SLICE_MS", "RETRY_BACKOFF_MS", "CommitCallback", "CommitFailed", "Consumer",
           "GroupConsumer", "HeartbeatFactory", "PartitionsCallback", "start_heartbeat_thread"]

log = logging.getLogger(__name__)

PartitionsCallback = Callable[[list[TopicPartition]], None]
HeartbeatFactory = Callable[[HeartbeatMember, HeartbeatSettings, Callable[[], str]], Any]
POLL_SLICE_MS = 200              # how often a waiting poll looks for a pending rebalance
JOIN_SLICE_MS = 10               # ... and for the answers of a join under way


def start_heartbeat_thread(member: HeartbeatMember, settings: HeartbeatSettings, endpoint: Callable[[], str]) -> HeartbeatThread:
    """The default ``heartbeat_factory``: a started ``HeartbeatThread`` to the coordinator."""
    thread = HeartbeatThread(member, settings, endpoint())
    thread.start()
    return thread


class GroupConsumer(GroupJoin, GroupCommits, _AssignConsumer):
    def __init__(self, bootstrap: str | list[str] | None = None, *, group_id: str, config_path: str | None = None,
                 auto_offset_reset: str = "latest", enable_auto_commit: bool = True,
                 auto_commit_interval_ms: int = 5000, session_timeout_ms: int = 10_000,
                 heartbeat_interval_ms: int | None = None, rebalance_timeout_ms: int = 30_000,
                 max_poll_interval_ms: int = 300_000,
                 assignor: str = "range", client_id: str = "loom-consumer",
                 on_assign: PartitionsCallback | None = None, on_revoke: PartitionsCallback | None = None,
                 on_commit: CommitCallback | None = None, coordinator: CoordinatorLink | None = None,
                 heartbeat_factory: HeartbeatFactory = start_heartbeat_thread, **kw: Any) -> None:
        """``coordinator``: the link to the group coordinator (default: an RPC client on this
        consumer's reactor, to the coordinator named in the metadata); ``heartbeat_factory``
        starts the heartbeat thread at the first join. Other keywords go to ``Consumer``."""
        super().__init__(bootstrap, config_path=config_path, auto_offset_reset=auto_offset_reset, **kw)
        if not group_id:
            raise FabricError("group_id is required for a group consumer")
        if session_timeout_ms <= 0 or (heartbeat_interval_ms is not None and not 0 < heartbeat_interval_ms < session_timeout_ms):
            # a heartbeat interval <= 0 would spin the heartbeat thread; one >= the session
            # would let the member expire between two heartbeats
            raise FabricError("session_timeout_ms must be > 0 and heartbeat_interval_ms between 0 and it")
        if max_poll_interval_ms <= 0:
            raise FabricError("max_poll_interval_ms must be > 0")
        self.group_id = group_id
        self.enable_auto_commit = enable_auto_commit
        self.auto_commit_interval_ms = auto_commit_interval_ms
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms or max(50, session_timeout_ms // 3)
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self.assignor = assignor
        self.client_id = client_id
        self.on_assign, self.on_revoke, self.on_commit = on_assign, on_revoke, on_commit
        self.subscription: list[str] = []
        self.member_id = ""
        self.generation = -1
        self._lock = threading.Lock()
        self._active = False          # joined and synced: heartbeats flow
        self._last_poll_ms = self.clock.now_ms()  # read by the heartbeat thread (an int: atomic)
        self._rejoin_needed = False
        self._join: _JoinAttempt | None = None  # the join under way, if any
        self._init_commits()  # _last_committed, auto_commit_bounds, the auto-commit timer
        self._link = coordinator or CoordinatorLink(self.reactor, self.clock, self._connect_coordinator,
                                                    stopped=lambda: self._closed)
        self._heartbeat_factory = heartbeat_factory
        self._heartbeat: Any = None  # what heartbeat_factory returned: has stop()

    # -- subscription ----------------------------------------------------------------------------
    def subscribe(self, topics: list[str]) -> None:
        """Join the group for these topics (the join itself happens in the next ``poll``); a
        subscribed consumer may subscribe again (other topics: a rebalance). Raises
        SubscriptionConflictError, changing nothing, while partitions are ``assign``ed: the
        join would drop their positions uncommitted (``unsubscribe()`` commits them first)."""
        if not topics or not all(isinstance(t, str) and t for t in topics):
            raise FabricError("subscribe needs a list of topic names")
        if not self.subscription and self.positions:
            raise SubscriptionConflictError(
                f"group {self.group_id}: this consumer reads assigned partitions; subscribe() and assign() "
                "are mutually exclusive: call unsubscribe() first")
        self.subscription = sorted(set(topics))
        self._began_reading()
        with self._lock:
            self._rejoin_needed = True

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Read exactly these partitions, as no member of the group (see the module doc). With
        ``enable_auto_commit`` the positions of the partitions assigned until now and left out
        are committed first (asynchronously, as Kafka's ``assign()``; only what an auto-commit
        may commit: within ``auto_commit_bounds``): else they are lost, and their records come
        again to whoever reads them next. Partitions kept keep their positions. Raises
        SubscriptionConflictError, changing nothing, while subscribed; ``assign([])`` is
        ``unsubscribe()`` (as Kafka's)."""
        if not partitions:
            self.unsubscribe()
            return
        if self.subscription:
            raise SubscriptionConflictError(
                f"group {self.group_id}: this consumer is subscribed to {', '.join(self.subscription)}; subscribe() "
                "and assign() are mutually exclusive: call unsubscribe() first")
        keep = set(partitions)
        if self.enable_auto_commit:
            dropped = {tp: o for tp, o in self._auto_commit_offsets().items() if tp not in keep}
            if dropped:
                self._auto_commit_async(dropped)
        self.auto_commit_bounds = {tp: o for tp, o in self.auto_commit_bounds.items() if tp in keep}
        lookup = self._commit_lookup
        if lookup is not None:
            # its answer is of partitions assigned all along only: one given up and assigned again
            # is looked up anew, as the blocking lookup did -- the answer sent before says what was
            # committed before (another consumer may have read and committed it meanwhile)
            lookup.tps = [tp for tp in lookup.tps if tp in keep]
        super().assign(partitions)

    def unsubscribe(self) -> None:
        """Stop reading, in either mode; then ``subscribe`` or ``assign`` may follow. A
        subscribed consumer leaves the group (with auto-commit, committing first, as before any
        revocation; ``on_revoke`` is told). An assigned one gives its partitions up, with
        auto-commit committing their positions first (synchronously, within
        ``auto_commit_bounds``; a refusal is logged, not raised), as its ``close`` does: Kafka's
        ``unsubscribe()`` commits nothing for manually assigned partitions, but here it is the
        way from ``assign`` to ``subscribe``, and a member joining afterwards starts at the
        committed offsets -- without the commit, it would read again what this consumer
        returned."""
        if self.subscription:
            self._revoke()
            self._finish_async_commits()  # as a member: before it leaves
            self._leave()
        else:
            self._auto_commit_sync()
            self._finish_async_commits()
            super().assign([])
        self.subscription = []
        self._began_reading()  # forgets how the topics read until now were when reading began
        self.auto_commit_bounds = {}
        self._last_committed = {}  # what the membership committed says nothing once it is given up
        self._last_committed_epochs = {}
        self._below_commits = {}
        self._commit_lookup = None  # an assigned consumer's lookup on its way: its answer is given up

    def _topics_read(self) -> set[str]:
        """A subscribed member reads its subscription's topics, also the partitions of them it
        does not own (yet): one that appears while it is subscribed is newer than the subscription."""
        return set(self.subscription) if self.subscription else super()._topics_read()

    # -- polling ---------------------------------------------------------------------------------
    def _poll_views(self, timeout_ms: int, max_records: int) -> list[RecordBatchView]:
        """``poll`` and ``poll_batch`` of the assigned partitions: joins, rebalances and
        auto-commits happen here."""
        if not self.subscription:
            return self._poll_assigned(timeout_ms, max_records)
        self._last_poll_ms = self.clock.now_ms()
        deadline = self.clock.now_ms() + timeout_ms
        while True:
            self._advance_join()
            self._maybe_auto_commit()
            self._last_poll_ms = self.clock.now_ms()  # time spent inside poll (a join) is polling
            left = deadline - self.clock.now_ms()
            # while a join is due or under way, its answers are taken up at least every JOIN_SLICE_MS
            joining = self._join is not None or self._rejoin_needed
            views = super()._poll_views(max(0, min(left, JOIN_SLICE_MS if joining else POLL_SLICE_MS)), max_records)
            if joining and not views:  # (never with records in hand: a join starts with a revocation)
                self._advance_join()  # what that pass brought: a join's answers, the metadata that starts one
            if views or self.clock.now_ms() >= deadline or self._woken.is_set():
                return views

    def _poll_assigned(self, timeout_ms: int, max_records: int) -> list[RecordBatchView]:
        """``_poll_views`` of an assigned consumer: partitions never positioned start at the
        group's committed offsets (with or without auto-commit, as Kafka's), looked up without
        waiting (``_position_at_commits``); with auto-commit, one is due-checked at least every
        ``POLL_SLICE_MS`` of the wait, as Kafka's poll wakes up for it."""
        if self._closed:
            return super()._poll_views(timeout_ms, max_records)
        deadline = self.clock.now_ms() + timeout_ms
        while True:
            positioning = self._position_at_commits()  # never waits: a later pass takes its answer up
            self._maybe_auto_commit()
            left = deadline - self.clock.now_ms()
            if positioning:  # the lookup's answer is taken up at least every JOIN_SLICE_MS
                slice_ms = JOIN_SLICE_MS
            elif self.enable_auto_commit:
                slice_ms = POLL_SLICE_MS
            else:
                slice_ms = left
            views = super()._poll_views(max(0, min(left, slice_ms)), max_records)
            if views or self.clock.now_ms() >= deadline or self._woken.is_set():
                return views

    def maintain(self) -> None:
        """Do a pending join or rebalance and the auto-commit without taking records: for a
        host (the consumer service) that polls only when its own client asks for records."""
        if self._closed:
            return
        if not self.subscription:  # an assigned consumer: its start at the commits, the auto-commit
            self._position_at_commits()
            self._maybe_auto_commit()
            self.reactor.run_once(0)
            self._position_at_commits()  # what that pass brought
            return
        self._last_poll_ms = self.clock.now_ms()  # the host is alive and drives the member
        self._advance_join()  # never waits: the join goes on across calls
        self._maybe_auto_commit()
        self.reactor.run_once(0)
        self._advance_join()  # what that pass brought

    # -- talking to the coordinator --------------------------------------------------------------
    def _coordinator_endpoint(self) -> str:
        """The coordinator's endpoint, from the metadata. Never waits: while the metadata
        names none (no broker answered yet), a metadata request goes out and RequestTimeout
        (retriable) is raised -- a join tries again after its backoff, a blocking call
        (``CoordinatorLink.call``) within its retry budget, with the reactor running meanwhile.
        Waiting here held ``poll(0)`` and ``maintain()`` for up to 10 s at every try."""
        if not self.metadata.coordinator:
            self._refresh_metadata()
            raise RequestTimeout("no metadata yet: cannot find the coordinator")
        return self.metadata.coordinator

    def _connect_coordinator(self) -> RpcClient:
        # a request in flight when the coordinator dies fails with its connection (retriable), so
        # the restarted coordinator answers its retry: a sync commit waited out its whole budget
        # (20 s) and a JOIN_GROUP rebalance_timeout_ms + 5 s for an answer that could not come
        return RpcClient(self.ctx, self.reactor, self._coordinator_endpoint(), identity=self.client_id,
                         fail_on_disconnect=True)

    def _call(self, command: bytes, header: dict, *, timeout_ms: int = COORDINATOR_CALL_TIMEOUT_MS,
              retry_ms: int = COORDINATOR_CALL_TIMEOUT_MS, final: frozenset[int] = frozenset()) -> dict:
        return self._link.call(command, header, timeout_ms=timeout_ms, retry_ms=retry_ms, final=final)

    def _ensure_heartbeat(self) -> None:
        if self._heartbeat is None:
            settings = HeartbeatSettings(self.group_id, self.client_id, self.heartbeat_interval_ms, self.session_timeout_ms)
            self._heartbeat = self._heartbeat_factory(self, settings, self._coordinator_endpoint)

    @property
    def joining(self) -> bool:
        """A join is due or under way: its steps are taken up only by ``poll`` and
        ``maintain``, so a host that drives the member between requests of its own (the consumer
        service's instance thread) calls ``maintain`` often meanwhile."""
        return bool(self.subscription) and (self._join is not None or self._rejoin_needed)

    def heartbeat_state(self) -> tuple[bool, str, int]:
        """(heartbeat?, member_id, generation) for the heartbeat thread: an active member's, and
        a joining one's once it has a member id. The join goes on across polls, so the answer of
        a completed rebalance may wait in this consumer's socket while the application works
        between two polls, and the coordinator drops a member silent for its session: it
        heartbeats meanwhile with the generation it knows. Refused (illegal_generation,
        rebalance_in_progress: ignored by ``request_rejoin`` while it joins), such a heartbeat
        still keeps its session (nodes/coordinator/groups.py)."""
        with self._lock:
            beat = self._active or (self._join is not None and bool(self.member_id))
            return beat, self.member_id, self.generation

    def leave_if_poll_expired(self) -> str | None:
        """Called by the heartbeat thread: if the application has not called ``poll`` for
        ``max_poll_interval_ms``, stop being an active member (the next ``poll`` joins again
        as a new member) and return the member id to leave the group with; else None. Also
        while a join is under way (it heartbeats then too): that join then brings nothing
        (``_rejoin_needed``), and the member joins again as a new one."""
        with self._lock:
            idle_ms = self.clock.now_ms() - self._last_poll_ms
            if not (self._active or self._join is not None) or not self.member_id \
                    or idle_ms <= self.max_poll_interval_ms:
                return None
            mid = self.member_id
            self._active, self._rejoin_needed = False, True
            self.member_id, self.generation = "", -1
        log.warning("group %s: poll() not called for %d ms (max_poll_interval_ms %d): leaving the group",
                    self.group_id, idle_ms, self.max_poll_interval_ms)
        return mid

    def request_rejoin(self, generation: int, reset_member: bool) -> None:
        """Called by the heartbeat thread about its heartbeat of ``generation``."""
        with self._lock:
            if generation != self.generation or not self._active:
                return  # a late answer about an older generation, or a rejoin is under way
            self._rejoin_needed = True
            self._active = False
            if reset_member:
                self.member_id = ""

    # -- leaving ---------------------------------------------------------------------------------
    def _leave(self) -> None:
        with self._lock:
            self._join = None  # a join under way is given up: its answers change nothing
            self._active = False
            mid = self.member_id
        if mid and self._link.connected:
            try:
                self._call(P.LEAVE_GROUP, {"group": self.group_id, "member_id": mid}, timeout_ms=2000, retry_ms=0)
            except CodedError as e:
                log.debug("leave failed: %s", e)
        self.member_id, self.generation = "", -1

    def close(self) -> None:
        """Commit (with auto-commit), revoke, wait for the asynchronous commits in flight (as
        long as a commit may take), leave the group at once, release everything. An assigned
        consumer commits outside any generation; a refusal is logged, not raised."""
        if self._closed:
            return
        try:
            if self.subscription:
                self._revoke()
                self._finish_async_commits()  # as a member: before it leaves
                self._leave()
            else:
                self._auto_commit_sync()
                self._finish_async_commits()
        finally:
            if self._heartbeat is not None:
                self._heartbeat.stop()
            self._link.close()
            super().close()


Consumer = GroupConsumer

