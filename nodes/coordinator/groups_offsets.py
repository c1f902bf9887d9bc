"""The group coordinator's committed offsets: OFFSET_COMMIT (who may commit what, judged when
the request comes and again just before the append: ``_commit_refusal``), OFFSET_FETCH,
DELETE_GROUP (its tombstones in bounded parts, one after another), and the expiry of the
offsets of groups that have had no members, and no commit, for longer than the retention
(KIP-211). The request shapes are in ``nodes.coordinator.groups``; the offsets
themselves live in ``nodes.coordinator.offsets``.

Also the storing of each group's reading of its topics (``Group.reading_since``,
nodes/coordinator/group_readings.py) in its offsets partition: written (changes only) whenever
a rebalance or the group's emptying changes it, through the group's commit queue; OFFSET_FETCH
of the group naming partitions (as members ask) is held until it is stored as it is, so no
member starts a partition by ``auto_offset_reset`` on a reading that a coordinator restart could
still forget: answered as soon as the append is acknowledged (as an OFFSET_COMMIT's answer waits
for its append), or at ``OFFSET_FETCH_HOLD_MS`` with the retriable ``unstable_offset_commit``
(the member backs off and asks again) -- refused so at once, each member's first start paid its
200 ms back-off and a JOIN_GROUP, SYNC_GROUP and OFFSET_FETCH again. Deleted with the group
(DELETE_GROUP, the offsets' expiry) in the same commit as its first tombstones.

``GroupOffsetsMixin`` is that part of ``GroupCoordinator`` (nodes/coordinator/groups.py): its
state is the coordinator's own (set by ``GroupCoordinator.__init__``), and the membership a
commit is judged by is the coordinator's.

Not thread-safe: runs on the coordinator's reactor.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fabric import protocol as P
from fabric import wire
from fabric.errors import RemoteError
from fabric.rpc import DEFER
from nodes.coordinator.group_readings import ALL_TOPICS, Reading, merged_readings, newer_than_reading
from nodes.coordinator.offsets_client import OFFSETS_TOPIC
from nodes.coordinator.offsets_commits import NO_LEADER_EPOCH, READINGS_PER_COMMIT_MAX, CommitEntry, deletion_parts

if TYPE_CHECKING:
    from collections import Counter

    from fabric.clock import Clock
    from nodes.coordinator.context import GroupContext, RequestRoutes
    from nodes.coordinator.groups import Group, Member
    from nodes.coordinator.offsets import OffsetStore

log = logging.getLogger(__name__)

# OFFSET_FETCH of a group whose reading is being stored waits for it at most this long, then is
# the retriable unstable_offset_commit (the member backs off and asks again): well within a
# member's request timeout (fabric/client/group_link.py COORDINATOR_CALL_TIMEOUT_MS, 10 s)
OFFSET_FETCH_HOLD_MS = 2_000
OFFSET_FETCHES_HELD_MAX = P.GROUP_MEMBERS_MAX  # per group; one more is refused at once (retriable)


class GroupOffsetsMixin:
    """``GroupCoordinator``'s offset commits and fetches, and the expiry of empty groups'
    offsets. Part of GroupCoordinator (its state is the coordinator's own)."""

    # the coordinator's state this part uses (set by GroupCoordinator.__init__)
    context: GroupContext
    server: RequestRoutes
    clock: Clock
    groups: dict[str, Group]
    offsets: OffsetStore
    offsets_retention_ms: int
    _loaded_ms: int | None
    _deleting: Counter[str]  # groups whose DELETE_GROUP is writing its parts (_on_delete_group)
    # per group, its OFFSET_FETCHes waiting for its reading to be stored, with their deadlines (ms)
    _fetches_held: dict[str, list[tuple[wire.Request, int]]]

    if TYPE_CHECKING:  # GroupCoordinator's, never these
        @staticmethod
        def _group_id(req: wire.Request) -> str: ...
        def _member(self, req: wire.Request, check_generation: bool = True) -> tuple[Group, Member]: ...
        def _check_room_for_group(self, gid: str) -> None: ...

    # -- offsets ------------------------------------------------------------------------------------
    def _require_loaded(self) -> None:
        if not self.offsets.loaded:
            raise RemoteError(P.NOT_COORDINATOR, "the coordinator is still loading committed offsets; retry")

    def _on_offset_commit(self, req: wire.Request) -> Any:
        gid = self._group_id(req)
        raw = req.get("offsets", list)
        if not raw or len(raw) > P.PARTITIONS_MAX:
            raise RemoteError(P.MALFORMED_REQUEST, "offsets must be a non-empty list of [topic, partition, offset, "
                                                   "metadata?, leader_epoch?]")
        named = self._named_topic_ids(req)
        _raise_if(self.offsets.ids_refusal(named, named))  # the topics read in are gone: refused for good
        entries: list[CommitEntry] = []
        for e in raw:
            # not a bool: stored, it would come back as one
            if not (isinstance(e, (list, tuple)) and 3 <= len(e) <= 5 and isinstance(e[0], str)
                    and type(e[1]) is int and type(e[2]) is int
                    and (len(e) < 5 or (type(e[4]) is int and NO_LEADER_EPOCH <= e[4] <= P.LEADER_EPOCH_MAX))):
                raise RemoteError(P.MALFORMED_REQUEST, "each offset is [topic, partition, offset, metadata?, "
                                                       f"leader_epoch?] (leader_epoch -1: not known, at most "
                                                       f"{P.LEADER_EPOCH_MAX})")
            if e[2] < 0:
                raise RemoteError(P.INVALID_COMMIT_OFFSET, f"offset {e[2]} for {e[0]}-{e[1]} is negative")
            t = self.context.state.topics.get(e[0])
            if t is None or not 0 <= e[1] < len(t.partitions) or e[0] == OFFSETS_TOPIC:
                raise RemoteError(P.UNKNOWN_TOPIC_OR_PARTITION, f"no partition {e[0]}-{e[1]}")
            entries.append((e[0], e[1], e[2], str(e[3])[:4096] if len(e) > 3 and e[3] is not None else "",
                            e[4] if len(e) > 4 else NO_LEADER_EPOCH))
        self._require_loaded()
        generation = req.get("generation", int, -1)
        if generation >= 0:
            self._member(req)
        else:
            self._check_room_for_group(gid)
        mid = req.header.get("member_id")
        _raise_if(self._commit_refusal(gid, mid, generation, entries))

        def done(err: RemoteError | None) -> None:
            if err is None:
                self.server.reply(req, {"group": gid, "committed": len(entries)})
            else:
                self.server.reply_error(req, err.code, err.message)
        # validated again just before the append: the log-end lookup and the offsets
        # partition's queue take time, and a rebalance may hand the partitions on meanwhile
        self.offsets.commit(gid, entries, allow_backward=generation < 0, check_log_end=True, done=done,
                            recheck=lambda: self._commit_refusal(gid, mid, generation, entries), named=set(named))
        return DEFER

    @staticmethod
    def _named_topic_ids(req: wire.Request) -> dict[str, str]:
        """OFFSET_COMMIT's ``topic_ids``: {topic: the id of the topic its offsets were read in}
        ({} when absent: an older client, or the CLI naming topics by name; an id "" names none)."""
        ids = req.header.get("topic_ids")
        if ids is None:
            return {}
        if not isinstance(ids, dict) or len(ids) > P.PARTITIONS_MAX \
                or not all(isinstance(t, str) and isinstance(i, str) for t, i in ids.items()):
            raise RemoteError(P.MALFORMED_REQUEST, "topic_ids must be a map of topic name to topic id")
        return {t: i for t, i in ids.items() if i}

    def _commit_refusal(self, gid: str, mid: Any, generation: int,
                        entries: list[CommitEntry]) -> RemoteError | None:
        """Why this commit may not be applied now (None: it may)."""
        group = self.groups.get(gid)
        if generation < 0:
            if group is not None and group.members:
                return RemoteError(P.NON_EMPTY_GROUP, f"group {gid!r} has active members: only they may commit")
            if self._deleting[gid]:
                # landed between two parts of the deletion, it would be half deleted (a part
                # written before it keeps it, one after deletes it)
                return RemoteError(P.UNSTABLE_OFFSET_COMMIT, f"group {gid!r} is being deleted; retry")
            return None
        member = group.members.get(mid) if group is not None and isinstance(mid, str) else None
        if group is None or member is None:
            return RemoteError(P.UNKNOWN_MEMBER, f"{mid!r} is not a member of {gid!r}: join again")
        if generation != group.generation:
            return RemoteError(P.ILLEGAL_GENERATION, f"generation {generation} is not the current {group.generation} of {gid!r}")
        owned = set(member.assignment)
        for t, p, *_ in entries:
            if (t, p) not in owned:
                return RemoteError(P.PARTITION_NOT_ASSIGNED, f"{t}-{p} is not assigned to {member.member_id} in generation {group.generation}")
        return None

    def _on_offset_fetch(self, req: wire.Request) -> Any:
        gid = self._group_id(req)
        self._require_loaded()
        table = self.offsets.offsets_for(gid)
        wanted = req.header.get("partitions")
        if wanted is None:
            keys = sorted(table)
        elif isinstance(wanted, list) and len(wanted) <= P.PARTITIONS_MAX and all(
                isinstance(w, (list, tuple)) and len(w) == 2 and isinstance(w[0], str) and type(w[1]) is int
                for w in wanted):
            keys = [(w[0], w[1]) for w in wanted]
        else:
            raise RemoteError(P.MALFORMED_REQUEST, "partitions must be a list of [topic, partition] or null")
        self.offsets.check_not_resyncing(gid)
        group = self.groups.get(gid)
        # every partition of an answer to all (an administrator's look) has an offset: none is judged
        if wanted is not None and self._storing_reading(gid):
            held = self._fetches_held.setdefault(gid, [])
            if len(held) >= OFFSET_FETCHES_HELD_MAX:
                raise self._reading_unstable(gid)
            held.append((req, self.clock.now_ms() + OFFSET_FETCH_HOLD_MS))  # answered once it is stored
            return DEFER
        unstable = self.offsets.unstable(gid, None if wanted is None else keys)
        if unstable:
            # the commit in flight may replace these offsets: whoever starts from them now could
            # read records twice, and its own later commit would be refused as going backward
            raise RemoteError(P.UNSTABLE_OFFSET_COMMIT, f"a commit of {unstable[0][0]}-{unstable[0][1]} "
                                                        f"for group {gid!r} is being written; retry")
        out = []
        ids: dict[str, str] = {}  # the topic each committed offset is of (offsets_for: the current one)
        topics = self.context.state.topics
        for tp in keys:
            c = table.get(tp)
            out.append([tp[0], tp[1], c.offset if c else -1, c.metadata if c else "",
                        c.leader_epoch if c else NO_LEADER_EPOCH])
            if c is not None and tp[0] not in ids:
                now = topics.get(tp[0])
                tid = c.topic_id or (now.topic_id if now is not None else "")
                if tid:
                    ids[tp[0]] = tid
        since = merged_readings(group.reading_since if group is not None else {}, self.offsets.readings.get(gid, {}))
        newer = newer_than_reading([tp for tp in keys if tp not in table], topics, self.offsets.table.get(gid, {}),
                                   since)
        # per topic, its partition numbers: [[topic, p]...] repeated the name per partition and so
        # doubled an answer whose offsets already name it -- over HEADER_BYTES_MAX, dropped by the
        # member, for a request that fits
        by_topic: dict[str, list[int]] = {}
        for t, p in newer:
            by_topic.setdefault(t, []).append(p)
        return {"group": gid, "offsets": out, "topic_ids": ids, "newer_than_reading": by_topic}

    def _on_delete_group(self, req: wire.Request) -> Any:
        """Delete an empty group and its committed offsets. Its tombstones go in commits of at
        most ``offsets.deletion_part_bytes()`` each, one after another (one commit of a group
        with very many partitions could exceed PENDING_COMMIT_BYTES_MAX: refused buffer_full
        every time, the group could never be deleted). A part is written only while the group
        has no members (judged again just before its append, as Kafka deletes only an empty
        group); a deletion that fails part way is answered with the error, the parts written
        stay deleted, and a retry deletes the rest."""
        gid = self._group_id(req)
        self._require_loaded()
        self.offsets.check_not_resyncing(gid)  # its table may lack partitions the log has: no tombstones for them
        g = self.groups.get(gid)
        if g is not None and g.members:
            raise self._non_empty(g)
        # offsets of deleted topics too: they go with the group; and the partitions of commits on
        # their way (queued before the tombstones, they land first: without a tombstone of
        # their own, the group would be back with them)
        partitions = set(self.offsets.table.get(gid, {})) | set(self.offsets.unstable(gid, None))
        if g is None and not partitions and not self._has_readings(gid):
            raise RemoteError(P.UNKNOWN_GROUP, f"no group {gid!r}")
        if g is not None:  # also if the deletion stops part way: what the group read is old now
            g.reading_since, g.readings_dirty = {}, False
        # the stored readings go with the first part (also those on their way: it lands after them)
        parts = deletion_parts(gid, sorted(partitions)) or [[]]
        forget: dict[str, Reading | None] = {ALL_TOPICS: None} if self._has_readings(gid) else {}
        self._deleting[gid] += 1  # an administrator's commit meanwhile is refused (_commit_refusal)

        def recheck() -> RemoteError | None:
            group = self.groups.get(gid)
            return self._non_empty(group) if group is not None and group.members else None

        def next_part(err: RemoteError | None = None) -> None:
            """The previous part is written (or failed: the deletion stops there): the next one."""
            if err is None and parts:
                try:
                    self.offsets.commit(gid, parts[0], allow_backward=True, check_log_end=False, done=next_part,
                                        recheck=recheck, readings=dict(forget))
                    parts.pop(0)
                    forget.clear()
                    return
                except RemoteError as e:  # buffer_full; the offsets topic not made yet (not_enough_replicas)
                    err = e
            self._deleting[gid] -= 1
            if not self._deleting[gid]:
                del self._deleting[gid]
            if err is not None:
                # one caught above holds this frame in its traceback: no local may hold it on
                code, message, err = err.code, err.message, None
                self.server.reply_error(req, code, message)
                return
            group = self.groups.get(gid)
            if group is not None and not group.members:
                del self.groups[gid]
            self.server.reply(req, {"group": gid, "deleted": True})
        next_part()
        return DEFER

    # -- the groups' readings, stored ---------------------------------------------------------------
    def _storing_reading(self, gid: str) -> bool:
        group = self.groups.get(gid)
        return self.offsets.reading_in_flight(gid) or (group is not None and group.readings_dirty)

    @staticmethod
    def _reading_unstable(gid: str) -> RemoteError:
        return RemoteError(P.UNSTABLE_OFFSET_COMMIT, f"the reading of its topics of group {gid!r} is being stored; retry")

    def _answer_held_fetches(self, gid: str) -> None:
        """Answer the group's OFFSET_FETCHes held (``_on_offset_fetch``) once its reading is
        stored, or at their deadlines with the retriable unstable_offset_commit."""
        held = self._fetches_held.pop(gid, None)
        if not held:
            return
        storing, now = self._storing_reading(gid), self.clock.now_ms()
        waiting = [(req, deadline_ms) for req, deadline_ms in held if storing and now < deadline_ms]
        if waiting:
            self._fetches_held[gid] = waiting
        for req, deadline_ms in held:
            if storing and now < deadline_ms:
                continue
            try:
                if storing:  # its deadline
                    raise self._reading_unstable(gid)
                answer = self._on_offset_fetch(req)
            except RemoteError as e:  # also what changed meanwhile (the offsets being read again)
                self.server.reply_error(req, e.code, e.message, **e.details)
            else:
                assert answer is not DEFER, "held again while its reading is stored"
                self.server.reply(req, answer)

    def _has_readings(self, gid: str) -> bool:
        return gid in self.offsets.readings or self.offsets.reading_in_flight(gid)

    def _seed_readings(self, group: Group) -> None:
        """Once the offsets are loaded, take the group's stored readings into ``reading_since``
        (a group is new to this process, or was made before the load: its first generation here
        is no reading's start if an earlier one is stored). Every stored one is kept (the rules of
        what is kept apply from the next change on); of two, the earlier."""
        if group.readings_seeded or not self.offsets.loaded:
            return
        group.readings_seeded = True
        group.reading_since = merged_readings(group.reading_since, self.offsets.readings.get(group.group_id, {}))

    def _store_readings(self, group: Group) -> None:
        """``group.reading_since`` changed (or may have): store it (``_write_readings``)."""
        group.readings_dirty = True
        self._write_readings(group)

    def _write_readings(self, group: Group) -> None:
        """Append the changes of the group's stored readings that make them ``reading_since``
        (none: nothing is written), at most READINGS_PER_COMMIT_MAX a commit (the next as it
        lands). Waits (stays dirty: the tick tries again) until the offsets are loaded and while
        a change is on its way, and after a failure."""
        gid = group.group_id
        if not self.offsets.loaded or self.offsets.reading_in_flight(gid):
            return
        self._seed_readings(group)
        stored = self.offsets.readings.get(gid, {})
        wall = self.clock.wall_ms()
        changes: dict[str, Reading | None] = {t: None for t in stored if t not in group.reading_since}
        changes.update((t, Reading(v, wall)) for t, v in group.reading_since.items()
                       if t not in stored or stored[t].version != v)
        if not changes:
            group.readings_dirty = False
            return
        more = len(changes) > READINGS_PER_COMMIT_MAX
        if more:
            changes = dict(list(changes.items())[:READINGS_PER_COMMIT_MAX])

        def done(err: RemoteError | None) -> None:
            if self.groups.get(gid) is not group:
                return
            if err is not None:
                log.info("group %s: its reading not stored (tried again): %s", gid, err)
                group.readings_dirty = True
            elif group.readings_dirty:  # changed again while this was on its way
                self._write_readings(group)
            self._answer_held_fetches(gid)  # those waiting for it, at once (not at the next tick)
        try:
            self.offsets.commit(gid, [], allow_backward=True, check_log_end=False, done=done, readings=changes)
        except RemoteError as e:  # buffer_full; the offsets topic not made yet (not_enough_replicas)
            log.debug("group %s: its reading not stored yet: %s", gid, e)  # tried at every tick
            return
        group.readings_dirty = more

    @staticmethod
    def _non_empty(group: Group) -> RemoteError:
        n = len(group.members)
        return RemoteError(P.NON_EMPTY_GROUP, f"group {group.group_id!r} has {n} active member{'s' * (n != 1)}")

    def _expire_offsets(self) -> None:
        """Delete the committed offsets of groups that have had no members, and no commit, for
        longer than the retention (Kafka's offsets.retention.minutes, KIP-211): without it, groups
        nobody uses again stayed for good, up to GROUPS_MAX, and every new group was then refused.
        Their stored readings go with the first part; so do those of a group that has nothing
        else stored (its members were gone when the coordinator restarted and never came back)."""
        if not self.offsets.loaded:
            return
        now = self.clock.now_ms()
        if self._loaded_ms is None:
            self._loaded_ms = now  # who was a member before a restart is unknown: count from now
        horizon = self.clock.wall_ms() - self.offsets_retention_ms  # commit times are wall times (stored)
        stored = self.offsets.readings
        for gid in list(self.offsets.table) + [g for g in stored if g not in self.offsets.table]:
            if self.offsets.pending_count >= P.PENDING_COMMITS_MAX // 2:
                return  # the rest at the next check: live groups' commits keep room
            group = self.groups.get(gid)
            table = self.offsets.table.get(gid, {})
            newest_ms = max([c.commit_ts_ms for c in table.values()]
                            + [r.written_ms for r in stored.get(gid, {}).values()], default=None)
            if newest_ms is None or (group is not None and (group.members or group.pending_members)) \
                    or self.offsets.has_in_flight(gid) or newest_ms > horizon:
                continue
            emptied = group.emptied_ms if group is not None and group.emptied_ms is not None else self._loaded_ms
            if now - emptied < self.offsets_retention_ms:
                continue  # in use until lately (KIP-211): the retention counts from when it emptied
                # (on the monotonic clock: a wall clock stepped forward expires nothing early)
            log.info("group %s: no members and no commit for %d ms: its committed offsets expire",
                     gid, self.offsets_retention_ms)
            if group is not None:  # a group that comes back is a new one: what it read is old
                group.reading_since, group.readings_dirty = {}, False
            parts = deletion_parts(gid, sorted(table)) or [[]]
            try:  # the first part of its tombstones: the next checks delete the rest
                self.offsets.commit(gid, parts[0], allow_backward=True,
                                    check_log_end=False, done=lambda err, gid=gid: err and log.warning(
                                        "group %s: expired offsets not deleted (next check): %s", gid, err),
                                    readings={ALL_TOPICS: None} if gid in stored else None)
            except RemoteError as e:  # commits queued to their bound: the next check goes on
                log.info("offset expiry paused: %s", e)
                return
            if len(parts) == 1:  # its last part: the group's offsets are gone
                self.context.counters["group_offsets_expired"] += 1


def _raise_if(refusal: RemoteError | None) -> None:
    """Raise ``refusal``, if any. Handed over, not kept: an error raised from a local of a
    handler's frame holds that frame in its traceback, a reference cycle that kept the request
    until a cyclic collection."""
    if refusal is not None:
        try:
            raise refusal
        finally:  # this frame is in its traceback too
            del refusal
