"""The group coordinator: consumer-group membership, rebalances, committed offsets.

Kafka's eager protocol with coordinator-side assignment:

- JOIN_GROUP ``{group, member_id ("" for a new member), client_id, client_host, topics,
  session_timeout_ms, rebalance_timeout_ms, assignor}`` is parked until every known member
  has (re)joined or the rebalance timeout passes (members that did not rejoin are dropped);
  then the generation is bumped, the assignor runs, and every parked join is answered with
  ``{member_id, generation, leader, assignor, members}``. With ``require_member_id: true`` a
  new member (empty member id) is answered at once with ``{group, member_id,
  member_id_required: true}`` and joins again with that id (Kafka's KIP-394): a join retried
  after a lost reply then carries the id, and never leaves a ghost member behind. An id handed
  out but not used within the session timeout expires.
- SYNC_GROUP ``{group, member_id, generation}`` -> ``{generation, assignment: [[topic, p]...]}``.
- HEARTBEAT ``{group, member_id, generation}`` -> ``{}``; ``rebalance_in_progress`` tells the
  member to give up its partitions (commit, revoke) and JOIN again.
- LEAVE_GROUP ``{group, member_id}``: the member goes at once and the others rebalance.
- A member silent for its session timeout is dropped and the others rebalance. Any request
  naming it counts, also a heartbeat refused for its generation: a consumer whose JOIN_GROUP
  answer still waits in its socket heartbeats with the generation it knew.
- OFFSET_COMMIT ``{group, member_id, generation, offsets: [[topic, p, offset, metadata?,
  leader_epoch?]...], topic_ids?: {topic: id}}`` (``leader_epoch``: of the record before the
  offset, as the member read it; -1 or absent: not known -- KIP-320's committed leader epoch,
  answered by OFFSET_FETCH, which a member starting there names in its first fetch, so a leader
  whose log parts from the one read says where): only a member of the current generation, only
  for partitions it owns, offsets from 0 up to the partition's high watermark, never below the
  committed offset.
  With ``generation: -1`` it is an administrative commit (reset-offsets): only for a group
  without active members, and it may move offsets backward. ``topic_ids`` names the topics the
  offsets were read in: a commit naming an id that is not its topic's now (deleted, perhaps made
  again under its name) is refused whole, ``unknown_topic_id`` -- when it comes and again just
  before its append; without it topics are judged by name. A rejected commit changes nothing.
- OFFSET_FETCH ``{group, partitions: [[topic, p]...] | null}`` -> ``{offsets: [[topic, p, offset,
  metadata, leader_epoch]], topic_ids: {topic: id}, newer_than_reading: {topic: [p...]}}``
  (offset -1: nothing committed; leader_epoch -1: not known; ``topic_ids``: the topic the
  committed offsets are of, as a member's commits of
  positions started there name it; ``newer_than_reading``: of the partitions with nothing
  committed, those made after the group began reading their topic, which a member starts at their
  log start whatever its ``auto_offset_reset`` -- ``nodes.coordinator.group_readings``; absent
  from older coordinators); ``unstable_offset_commit`` (retriable) while a commit of one of those
  partitions is queued or being written. With partitions named, the answer waits while the group's
  reading of its topics is being stored (at most ``OFFSET_FETCH_HOLD_MS``, then
  ``unstable_offset_commit``).
- At most ``GROUPS_MAX`` groups (with members or only committed offsets); a join or an
  administrative commit that would make one more gets ``buffer_full``.
- LIST_GROUPS -> ``{groups: [{group, state, generation, assignor, members}]}``;
  DESCRIBE_GROUPS ``{groups: [...]}`` (each group once) -> ``{groups: [{group, state, generation, assignor,
  leader, members: [{member_id, client_id, host, topics, assignment}], offsets: [[t, p, o]]}]}``;
  DELETE_GROUP ``{group}`` (only without active members; its offsets are deleted, in bounded
  parts: ``GroupOffsetsMixin._on_delete_group``).

Membership lives in memory: after a coordinator restart members get ``unknown_member`` and
join again; when each group's first generation subscribed to a topic is stored in its offsets
partition and comes back (``nodes.coordinator.group_readings``).
Offsets live in ``nodes.coordinator.offsets``; OFFSET_COMMIT, OFFSET_FETCH and the
expiry of empty groups' offsets are ``GroupOffsetsMixin`` (nodes/coordinator/groups_offsets.py),
a base of ``GroupCoordinator``.

Not thread-safe: runs on the coordinator's reactor.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from fabric import protocol as P
from fabric import wire
from fabric.config import LimitsConfig
from fabric.errors import RemoteError
from fabric.rpc import DEFER
from fabric.stall import forgiven_ms
from nodes.coordinator.assignors import ASSIGNORS, DEFAULT_ASSIGNOR, assign
from nodes.coordinator.context import GroupContext
from nodes.coordinator.groups_offsets import GroupOffsetsMixin
from nodes.coordinator.offsets import OffsetStore
from nodes.coordinator.offsets_client import OffsetsTopicClient
from nodes.coordinator.topics import validate_topic_name

log = logging.getLogger(__name__)

TICK_INTERVAL_MS = 100
OFFSETS_EXPIRY_CHECK_MS = 60_000   # how often empty groups' offsets are checked for their retention
# limits.group_offsets_retention_ms's default (Kafka's offsets.retention.minutes: 7 days)
OFFSETS_RETENTION_MS = LimitsConfig.model_fields["group_offsets_retention_ms"].default
SESSION_TIMEOUT_MS_MIN = 300
SESSION_TIMEOUT_MS_MAX = 300_000
REBALANCE_TIMEOUT_MS_MAX = 600_000
TOPICS_PER_MEMBER_MAX = 1000
EMPTY, PREPARING, STABLE, DEAD = "Empty", "PreparingRebalance", "Stable", "Dead"

TopicPartition = tuple[str, int]


@dataclass
class Member:
    member_id: str
    client_id: str
    host: str
    topics: list[str]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    last_seen_ms: int
    join_req: wire.Request | None = None
    assignment: list[TopicPartition] = field(default_factory=list)


@dataclass
class Group:
    group_id: str
    state: str = EMPTY
    generation: int = 0
    assignor: str = DEFAULT_ASSIGNOR
    leader: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    rebalance_deadline_ms: int = 0
    partition_counts: dict[str, int] = field(default_factory=dict)  # as of the last assignment
    subscribed: frozenset[str] = frozenset()  # the members' topics as of the last assignment
    counts_checked: bool = True     # False: partition counts not compared with the topics since then
    pending_members: dict[str, int] = field(default_factory=dict)   # member id handed out -> expiry (ms)
    emptied_ms: int | None = None   # when (monotonic) it last lost its last member (None: not in this process)
    # per topic its latest generation subscribed to (or that it has committed offsets of), the
    # metadata version when the first generation that did was made: partitions made after it are
    # newer than the group's reading (nodes/coordinator/group_readings.py). Only for the topics
    # subscribed to now or with committed offsets (``_readings_with_offsets``). Stored in the
    # group's offsets partition (``OffsetStore.readings``), so that it outlives this process
    reading_since: dict[str, int] = field(default_factory=dict)
    readings_seeded: bool = False  # reading_since has taken in the stored readings (once loaded)
    readings_dirty: bool = False   # reading_since is not stored as it is (OFFSET_FETCH waits)


class GroupCoordinator(GroupOffsetsMixin):
    def __init__(self, context: GroupContext, offsets_client: OffsetsTopicClient, *,
                 offsets_retention_ms: int = OFFSETS_RETENTION_MS) -> None:
        """``context``: the coordinator node as the groups see it (``nodes.coordinator.context``);
        ``offsets_client``: the one client of ``__consumer_offsets``; ``offsets_retention_ms``:
        how long a group with no members keeps its committed offsets after it became empty and
        after its newest commit."""
        self.context = context
        self.offsets_retention_ms = offsets_retention_ms
        self._expiry_checked_ms: int | None = None
        self._loaded_ms: int | None = None  # when (monotonic) the offsets were first seen loaded
        self._deleting: Counter[str] = Counter()  # groups whose DELETE_GROUP is writing its parts
        self._fetches_held: dict[str, list[tuple[wire.Request, int]]] = {}  # waiting for their group's reading
        self.server = context.server
        self.clock = context.reactor.clock
        self.groups: dict[str, Group] = {}
        self.offsets = OffsetStore(context, offsets_client)
        self._topic_partitions: dict[str, int] = {}  # every topic's partition count at the last tick
        # what all groups hold (P.MEMBERS_MAX, P.SUBSCRIBED_TOPICS_MAX): counted again every
        # tick, and raised by each join admitted between two ticks (leaves lower them at the next)
        self._members_held = 0
        self._names_held = 0

    def install(self) -> None:
        """Register routes and timers on the coordinator and start loading offsets."""
        for cmd, fn in ((P.JOIN_GROUP, self._on_join), (P.SYNC_GROUP, self._on_sync),
                        (P.HEARTBEAT, self._on_heartbeat), (P.LEAVE_GROUP, self._on_leave),
                        (P.OFFSET_COMMIT, self._on_offset_commit), (P.OFFSET_FETCH, self._on_offset_fetch),
                        (P.LIST_GROUPS, self._on_list_groups), (P.DESCRIBE_GROUPS, self._on_describe_groups),
                        (P.DELETE_GROUP, self._on_delete_group)):
            self.server.route(cmd, fn)
        self.context.reactor.call_every(TICK_INTERVAL_MS, self.tick)
        self.context.reactor.call_later(0, self.offsets.start_loading)

    # -- request helpers ------------------------------------------------------------------------
    @staticmethod
    def _group_id(req: wire.Request) -> str:
        g = req.get("group", str)
        if not 1 <= len(g) <= P.GROUP_ID_LEN_MAX:
            raise RemoteError(P.MALFORMED_REQUEST, f"group id must have 1 to {P.GROUP_ID_LEN_MAX} characters")
        return g

    def _member(self, req: wire.Request, check_generation: bool = True) -> tuple[Group, Member]:
        gid = self._group_id(req)
        group = self.groups.get(gid)
        if group is None:
            raise RemoteError(P.UNKNOWN_GROUP, f"no active group {gid!r}")
        mid = req.get("member_id", str)
        member = group.members.get(mid)
        if member is None:
            raise RemoteError(P.UNKNOWN_MEMBER, f"{mid!r} is not a member of {gid!r}: join again")
        member.last_seen_ms = self.clock.now_ms()
        if check_generation:
            gen = req.get("generation", int)
            if gen != group.generation:
                raise RemoteError(P.ILLEGAL_GENERATION, f"generation {gen} is not the current {group.generation} of {gid!r}")
        return group, member

    # -- membership --------------------------------------------------------------------------------
    def _on_join(self, req: wire.Request) -> Any:
        gid = self._group_id(req)
        topics = req.get("topics", list)
        if not topics or len(topics) > TOPICS_PER_MEMBER_MAX or not all(isinstance(t, str) for t in topics):
            raise RemoteError(P.MALFORMED_REQUEST, f"topics must be a list of 1 to {TOPICS_PER_MEMBER_MAX} names")
        for t in topics:  # kept for the member's life: only names a topic can have (bounded)
            validate_topic_name(t, allow_internal=True)
        session = req.get("session_timeout_ms", int, 10_000)
        if not SESSION_TIMEOUT_MS_MIN <= session <= SESSION_TIMEOUT_MS_MAX:
            raise RemoteError(P.INVALID_CONFIG, f"session_timeout_ms must be {SESSION_TIMEOUT_MS_MIN}..{SESSION_TIMEOUT_MS_MAX}")
        rebalance = min(max(req.get("rebalance_timeout_ms", int, session), session), REBALANCE_TIMEOUT_MS_MAX)
        assignor = req.get("assignor", str, DEFAULT_ASSIGNOR)
        if assignor not in ASSIGNORS:
            raise RemoteError(P.INVALID_CONFIG, f"unknown assignor {assignor!r} (known: range, round-robin, sticky)")
        group = self.groups.get(gid)
        mid = req.get("member_id", str, "")
        if group is None:
            self._check_room_for_group(gid)
            self._check_room_for_member(1 if not mid else 0, len(topics))  # before a group is made
            group = self.groups[gid] = Group(gid, assignor=assignor)
        if group.members and assignor != group.assignor:
            raise RemoteError(P.INCONSISTENT_GROUP_PROTOCOL, f"group {gid!r} uses the {group.assignor} assignor, not {assignor}")
        now = self.clock.now_ms()
        if not mid or mid in group.pending_members:
            if len(group.members) + len(group.pending_members) >= P.GROUP_MEMBERS_MAX + (1 if mid else 0):
                raise RemoteError(P.BUFFER_FULL, f"group {gid!r} has {P.GROUP_MEMBERS_MAX} members")
            client_id = req.get("client_id", str, "consumer")[:100] or "consumer"
            if not mid:
                mid = f"{client_id}-{os.urandom(6).hex()}"
                if req.header.get("require_member_id") is True:
                    self._hold_member(1, 0)
                    group.pending_members[mid] = now + session
                    return {"group": gid, "member_id": mid, "member_id_required": True}
                self._hold_member(1, len(topics))
            else:  # a member id handed out (counted then) joins
                self._hold_member(0, len(topics))
            group.pending_members.pop(mid, None)
            member = group.members[mid] = Member(mid, client_id, req.get("client_host", str, "")[:100], list(topics),
                                                 session, rebalance, now)
            reason = f"{mid} joined"
        else:
            member = group.members.get(mid)
            if member is None:
                raise RemoteError(P.UNKNOWN_MEMBER, f"{mid!r} is not a member of {gid!r}: join with an empty member id")
            unchanged = sorted(member.topics) == sorted(topics)
            self._hold_member(0, max(0, len(topics) - len(member.topics)))
            member.topics, member.session_timeout_ms, member.rebalance_timeout_ms = list(topics), session, rebalance
            member.last_seen_ms = now
            if group.state == STABLE and unchanged and req.header.get("generation") == group.generation:
                return self._join_result(group, member)  # nothing changed: stay in this generation
            reason = f"{mid} rejoined"
        group.assignor = assignor  # set once the join is taken: a refused one changes nothing
        if member.join_req is not None:
            self.context.counters["group_join_replaced"] += 1  # the client retried; answer the newest
        member.join_req = req
        if group.state != PREPARING:
            self._prepare_rebalance(group, reason)
        self._maybe_complete(group)
        return DEFER

    def _join_result(self, group: Group, member: Member) -> dict:
        return {"group": group.group_id, "member_id": member.member_id, "generation": group.generation,
                "leader": group.leader, "assignor": group.assignor, "members": sorted(group.members)}

    def _prepare_rebalance(self, group: Group, reason: str) -> None:
        group.state = PREPARING
        group.rebalance_deadline_ms = self.clock.now_ms() + max(
            (m.rebalance_timeout_ms for m in group.members.values()), default=0)
        log.info("group %s: rebalancing (generation %d): %s", group.group_id, group.generation, reason)

    def _maybe_complete(self, group: Group) -> None:
        if group.state != PREPARING:
            return
        if all(m.join_req is not None for m in group.members.values()) or \
                self.clock.now_ms() >= group.rebalance_deadline_ms:
            self._complete_rebalance(group)

    def _complete_rebalance(self, group: Group) -> None:
        for mid in [m.member_id for m in group.members.values() if m.join_req is None]:
            log.info("group %s: %s did not rejoin in time: removed", group.group_id, mid)
            del group.members[mid]
        group.generation += 1
        if not group.members:
            self._emptied(group)
            return
        # sets: the assignors ask "is t subscribed?" per topic and member (lists made a rebalance
        # of 500 members with 1,000 topics take seconds of the reactor)
        subs = {m.member_id: frozenset(m.topics) for m in group.members.values()}
        group.subscribed = frozenset().union(*subs.values())
        self._seed_readings(group)
        # bounded by the subscriptions and the committed offsets held: a topic no member subscribes
        # to now keeps its reading while the group has offsets of it (as when the group empties),
        # so a partition made meanwhile is newer once the topic is read again -- also when every
        # commit of the topic came after that partition was made. One without offsets is read
        # anew from then on
        version = self.context.state.version
        dropped = group.reading_since.keys() - group.subscribed  # (the table is read only for these)
        group.reading_since = {**(self._readings_with_offsets(group, dropped) if dropped else {}),
                               **{t: group.reading_since.get(t, version) for t in group.subscribed}}
        self._store_readings(group)  # before any member may fetch by it (OFFSET_FETCH waits for it)
        counts = {t: len(self.context.state.topics[t].partitions) for t in sorted(group.subscribed)
                  if t in self.context.state.topics}
        result = assign(group.assignor, subs, counts, {m.member_id: m.assignment for m in group.members.values()})
        group.partition_counts, group.counts_checked = counts, False
        if group.leader not in group.members:
            group.leader = next(iter(group.members))
        group.state = STABLE
        now = self.clock.now_ms()
        for m in group.members.values():
            m.assignment = result.get(m.member_id, [])
            m.last_seen_ms = now
            req, m.join_req = m.join_req, None
            assert req is not None
            self.server.reply(req, self._join_result(group, m))
        log.info("group %s: generation %d with %d members: %s", group.group_id, group.generation, len(group.members),
                 {m.member_id: len(m.assignment) for m in group.members.values()})

    def _remove_member(self, group: Group, mid: str, reason: str) -> None:
        member = group.members.pop(mid)
        if member.join_req is not None:
            self.server.reply_error(member.join_req, P.UNKNOWN_MEMBER, f"{mid} left the group")
        if not group.members:
            self._emptied(group)
            group.generation += 1
            log.info("group %s: %s; the group is empty (generation %d)", group.group_id, reason, group.generation)
            return
        if group.state != PREPARING:
            self._prepare_rebalance(group, reason)
        self._maybe_complete(group)

    def _emptied(self, group: Group) -> None:
        """``group`` lost its last member. What it read is kept only for the topics it has
        committed offsets of: without members its subscriptions no longer bound it (thousands of
        groups with one commit each could hold every name members ever subscribed to), and a
        topic it holds no position in is no reading to be newer than."""
        group.state, group.leader, group.partition_counts = EMPTY, None, {}
        group.emptied_ms = self.clock.now_ms()
        self._seed_readings(group)
        group.reading_since = self._readings_with_offsets(group, group.reading_since.keys())
        self._store_readings(group)

    def _readings_with_offsets(self, group: Group, topics: Iterable[str]) -> dict[str, int]:
        """``group.reading_since`` of those of ``topics`` the group has committed offsets of."""
        held = {t for t, _ in self.offsets.table.get(group.group_id, {})}
        return {t: group.reading_since[t] for t in topics if t in held}

    def _on_sync(self, req: wire.Request) -> dict:
        group, member = self._member(req)
        if group.state == PREPARING:
            raise RemoteError(P.REBALANCE_IN_PROGRESS, f"group {group.group_id!r} is rebalancing: join again")
        return {"generation": group.generation, "assignment": [list(tp) for tp in member.assignment]}

    def _on_heartbeat(self, req: wire.Request) -> dict:
        group, _ = self._member(req)
        if group.state == PREPARING:
            raise RemoteError(P.REBALANCE_IN_PROGRESS, f"group {group.group_id!r} is rebalancing: join again")
        return {}

    def _on_leave(self, req: wire.Request) -> dict:
        group, member = self._member(req, check_generation=False)
        self._remove_member(group, member.member_id, f"{member.member_id} left")
        return {}

    def tick(self) -> None:
        """Session expiries, rebalance deadlines, partition-count changes, empty groups,
        offsets snapshots."""
        now = self.clock.now_ms()
        self.offsets.tick()
        changed = self._topics_changed()
        members = names = 0
        for gid, group in list(self.groups.items()):
            for mid in [mid for mid, expiry_ms in group.pending_members.items() if expiry_ms <= now]:
                del group.pending_members[mid]  # handed out, never used to join
            for m in list(group.members.values()):
                if m.member_id not in group.members:
                    continue  # removed meanwhile: the rebalance an earlier removal completed dropped it
                if m.join_req is None and now - m.last_seen_ms > m.session_timeout_ms:
                    log.warning("group %s: %s missed its session (%d ms)", gid, m.member_id, now - m.last_seen_ms)
                    self._remove_member(group, m.member_id, f"{m.member_id} session expired")
            self._maybe_complete(group)
            if group.readings_dirty:  # not stored yet (loading, a write failed or one in flight)
                self._write_readings(group)
            members += len(group.members) + len(group.pending_members)
            names += sum(len(m.topics) for m in group.members.values())
            # compared only after an assignment and when a subscribed topic changed: every tick
            # compared every stable group's subscriptions (2,000 groups of 1,000 topics: 90 ms a tick)
            if group.state == STABLE and (not group.counts_checked or not changed.isdisjoint(group.subscribed)):
                group.counts_checked = True
                if self._partition_counts_changed(group):
                    self._prepare_rebalance(group, "partitions of a subscribed topic changed")
            if group.state == EMPTY and not group.members and not group.pending_members and not group.readings_dirty \
                    and not self.offsets.offsets_for(gid) and not self.offsets.has_in_flight(gid):
                del self.groups[gid]
        self._members_held, self._names_held = members, names
        for gid in list(self._fetches_held):  # stored by a write another made, or at their deadlines
            self._answer_held_fetches(gid)
        if self._expiry_checked_ms is None or now - self._expiry_checked_ms >= OFFSETS_EXPIRY_CHECK_MS:
            self._expiry_checked_ms = now
            self._expire_offsets()

    def resume_after_stall(self, now_ms: int, stalled_ms: int) -> None:
        """The coordinator did not run for ``stalled_ms``: members' sessions and running deadlines
        move by the stall (capped at now), so that nobody is judged by silence we did not hear
        and silence we did hear still counts, however often we stall."""
        for group in self.groups.values():
            for m in group.members.values():
                m.last_seen_ms = forgiven_ms(m.last_seen_ms, now_ms, stalled_ms)  # silence heard before still counts
            if group.state == PREPARING:
                group.rebalance_deadline_ms += stalled_ms
            for mid in group.pending_members:
                group.pending_members[mid] += stalled_ms

    def _topics_changed(self) -> set[str]:
        """The topics made, deleted or given partitions since the last call (the last tick)."""
        now = {t: len(ts.partitions) for t, ts in self.context.state.topics.items()}
        before, self._topic_partitions = self._topic_partitions, now
        if now == before:
            return set()
        return {t for t in now.keys() | before.keys() if now.get(t) != before.get(t)}

    def _partition_counts_changed(self, group: Group) -> bool:
        topics = self.context.state.topics
        now = {t: len(topics[t].partitions) for t in group.subscribed if t in topics}
        return now != group.partition_counts

    def _check_room_for_member(self, members: int, names: int) -> None:
        """Raise buffer_full if ``members`` more members subscribing to ``names`` more topic
        names would pass what all groups may hold together."""
        if members and self._members_held + members > P.MEMBERS_MAX:
            raise RemoteError(P.BUFFER_FULL, f"the coordinator already holds {P.MEMBERS_MAX} group members")
        if names and self._names_held + names > P.SUBSCRIBED_TOPICS_MAX:
            raise RemoteError(P.BUFFER_FULL, f"the group members' subscriptions already name {P.SUBSCRIBED_TOPICS_MAX} "
                                             "topics together")

    def _hold_member(self, members: int, names: int) -> None:
        """``_check_room_for_member``, then count them held (until the next tick counts again)."""
        self._check_room_for_member(members, names)
        self._members_held += members
        self._names_held += names

    def _check_room_for_group(self, gid: str) -> None:
        """Raise buffer_full if ``gid`` would be one group more than ``GROUPS_MAX`` (groups with
        members, groups that only have committed offsets and groups whose first commit is being
        written count alike)."""
        offsets = self.offsets
        if gid in self.groups or gid in offsets.table or gid in offsets.groups_in_flight():
            return  # held already (also by offsets of a deleted topic only: it counts below)
        held = len(self.groups) + sum(1 for g in offsets.table if g not in self.groups) + sum(
            1 for g in offsets.groups_in_flight() if g not in self.groups and g not in offsets.table)
        if held >= P.GROUPS_MAX:
            raise RemoteError(P.BUFFER_FULL, f"the coordinator already holds {P.GROUPS_MAX} groups")

    def topic_deleted(self, topic: str) -> None:
        """Called by the coordinator when a topic is deleted."""
        self.offsets.forget_topic(topic)

    # -- administration --------------------------------------------------------------------------------
    def _summary(self, gid: str) -> dict:
        g = self.groups.get(gid)
        if g is None:
            return {"group": gid, "state": EMPTY if self.offsets.offsets_for(gid) else DEAD, "generation": 0,
                    "assignor": "", "members": 0}
        return {"group": gid, "state": g.state, "generation": g.generation, "assignor": g.assignor,
                "members": len(g.members)}

    def _on_list_groups(self, req: wire.Request) -> dict:
        self._require_loaded()
        names = sorted(set(self.groups) | set(self.offsets.groups()))
        return {"groups": [self._summary(g) for g in names]}

    def _on_describe_groups(self, req: wire.Request) -> dict:
        self._require_loaded()
        names = req.get("groups", list)
        if len(names) > P.GROUPS_MAX or not all(isinstance(n, str) for n in names):
            raise RemoteError(P.MALFORMED_REQUEST, "groups must be a list of group ids")
        out = []
        for gid in dict.fromkeys(names):  # each once: a group named thousands of times was described as often
            d = self._summary(gid)
            g = self.groups.get(gid)
            d["leader"] = g.leader if g else None
            d["members"] = [{"member_id": m.member_id, "client_id": m.client_id, "host": m.host, "topics": m.topics,
                             "assignment": [list(tp) for tp in m.assignment]}
                            for m in (g.members.values() if g else ())]
            d["offsets"] = [[t, p, c.offset] for (t, p), c in sorted(self.offsets.offsets_for(gid).items())]
            out.append(d)
        return {"groups": out}

    def stats(self) -> dict:
        return {"groups": len(self.groups), "group_members": sum(len(g.members) for g in self.groups.values()),
                "offsets_loaded": self.offsets.loaded}

    def close(self) -> None:
        self.offsets.close()
