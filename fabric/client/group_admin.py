"""Consumer-group administration: list, describe with lag, reset offsets, delete.

Used by ``loom group`` and the gateway. Blocking; not thread-safe (one per thread).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fabric import protocol as P
from fabric.client.admin import EARLIEST, LATEST, Admin
from fabric.client.group_link import read_offset_fetch
from fabric.errors import CodedError, FabricError, NoCommittedOffsetError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LagRow:
    """One line of ``loom group describe``. current_offset -1: nothing committed."""

    group: str
    topic: str
    partition: int
    current_offset: int
    log_end_offset: int
    lag: int | None
    consumer_id: str
    host: str
    client_id: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ResetPlan(dict):
    """``plan_reset``'s plan: (topic, partition) -> (current committed or -1, new offset), and
    ``topic_ids``, the id of the topic it was computed against ({} when the metadata named none):
    ``execute_reset`` names it, so that a plan of a topic deleted and made again before it is
    applied is refused (unknown_topic_id) instead of moving the new topic's offsets.
    ``leader_epochs``: per partition shifted back (``--shift-by`` below zero, or clamped below
    the committed offset), the committed offset's leader epoch, which ``execute_reset`` commits
    with the new offset (KIP-320): the record before an offset lower in the log the group read
    is of that epoch or an older one, so a member starting there is sent back where a leader's
    log parts from that log below it (an unclean election truncated it under the committed
    offset), instead of reading on from the offset -- past the records the new leader wrote
    below it."""

    def __init__(self, entries: dict[tuple[str, int], tuple[int, int]], topic_ids: dict[str, str],
                 leader_epochs: dict[tuple[str, int], int] | None = None) -> None:
        super().__init__(entries)
        self.topic_ids = topic_ids
        self.leader_epochs = leader_epochs or {}


class GroupAdmin:
    def __init__(self, admin: Admin) -> None:
        self.admin = admin

    def _call(self, command: bytes, header: dict, retries: int = 3) -> dict:
        return self.admin.call_coordinator(command, header, retries=retries)

    def list_groups(self) -> list[dict]:
        """[{group, state, generation, assignor, members}] (members: a count)."""
        return self._call(P.LIST_GROUPS, {})["groups"]

    def describe(self, group: str) -> dict:
        """{group, state, generation, assignor, leader, members: [...], offsets: [[t, p, o]]};
        state "Dead" for a group the coordinator does not know."""
        return self._call(P.DESCRIBE_GROUPS, {"groups": [group]})["groups"][0]

    def committed(self, group: str) -> dict[tuple[str, int], int]:
        return {tp: o for tp, (o, _) in self._committed_with_epochs(group).items()}

    def _committed_with_epochs(self, group: str) -> dict[tuple[str, int], tuple[int, int]]:
        """(topic, partition) -> (committed offset, its leader epoch or -1) of every partition
        the group has an offset of."""
        answer = read_offset_fetch(self._call(P.OFFSET_FETCH, {"group": group, "partitions": None}))
        return {(t, p): (o, e) for t, p, o, _, e in answer.offsets}

    def lag(self, group: str) -> list[LagRow]:
        """Per partition the group owns or has committed: committed offset, log end (high
        watermark), lag = log end - committed, and the member that owns it."""
        d = self.describe(group)
        owners: dict[tuple[str, int], dict] = {}
        for m in d["members"]:
            for t, p in m["assignment"]:
                owners[(t, p)] = m
        committed = {(t, p): o for t, p, o in d["offsets"]}
        ends: dict[str, dict[int, int]] = {}
        rows = []
        for tp in sorted(set(owners) | set(committed)):
            if tp[0] not in ends:
                try:
                    ends[tp[0]] = self.admin.list_offsets(tp[0], LATEST, partial=True)  # unknown ends shown so
                except CodedError as e:  # the lag is shown as unknown
                    log.debug("log end offsets of %s: %s", tp[0], e)
                    ends[tp[0]] = {}
            end = ends[tp[0]].get(tp[1], -1)
            cur = committed.get(tp, -1)
            m = owners.get(tp, {})
            lag = end - cur if cur >= 0 and end >= 0 else None
            rows.append(LagRow(group, tp[0], tp[1], cur, end, lag, m.get("member_id", "-"), m.get("host", "-"),
                               m.get("client_id", "-")))
        return rows

    def plan_reset(self, group: str, topic: str, *, to_earliest: bool = False, to_latest: bool = False,
                   to_offset: int | None = None, to_datetime_ms: int | None = None,
                   shift_by: int | None = None,
                   leader_wait_ms: int | None = None) -> ResetPlan:
        """(topic, partition) -> (current committed or -1, new offset), clamped to each
        partition's [log start, log end] as Kafka does. Exactly one target must be given.
        ``leader_wait_ms``: how long a partition without a leader is waited for (given, an
        offline one raises leader_not_available at once: ``Admin.list_offsets``). Raises
        NoCommittedOffsetError for ``shift_by`` when a partition has no committed offset (the
        whole plan is refused, as Kafka's tool does: a shift from the log start is not what
        was asked)."""
        chosen = [to_earliest, to_latest, to_offset is not None, to_datetime_ms is not None, shift_by is not None]
        if sum(bool(c) for c in chosen) != 1:
            raise FabricError("give exactly one of --to-earliest, --to-latest, --to-offset, --to-datetime, --shift-by")
        starts = self.admin.list_offsets(topic, EARLIEST, leader_wait_ms=leader_wait_ms)
        # the topic the offsets are looked up in: the metadata that lookup used (one made again
        # before a later lookup makes the plan the old topic's: refused when executed)
        topic_ids = self.admin.metadata(refresh=False).topic_ids_of([topic])
        ends = self.admin.list_offsets(topic, LATEST, leader_wait_ms=leader_wait_ms)
        with_epochs = self._committed_with_epochs(group)
        committed = {tp: o for tp, (o, _) in with_epochs.items()}
        when = self.admin.list_offsets(topic, to_datetime_ms, leader_wait_ms=leader_wait_ms) \
            if to_datetime_ms is not None else {}
        if shift_by is not None:
            uncommitted = [(topic, p) for p in sorted(ends) if committed.get((topic, p), -1) < 0]
            if uncommitted:
                raise NoCommittedOffsetError(group, uncommitted)
        plan, epochs = {}, {}
        for p in sorted(ends):
            cur = committed.get((topic, p), -1)
            if to_earliest:
                new = starts[p]
            elif to_latest:
                new = ends[p]
            elif to_offset is not None:
                new = to_offset
            elif to_datetime_ms is not None:
                new = when[p]
            else:
                assert shift_by is not None
                new = cur + shift_by
            plan[(topic, p)] = (cur, min(max(new, starts[p]), ends[p]))
            epoch = with_epochs.get((topic, p), (-1, -1))[1]
            if shift_by is not None and plan[(topic, p)][1] <= cur and epoch >= 0:
                epochs[(topic, p)] = epoch  # (ResetPlan: an upper bound of the new offset's)
        return ResetPlan(plan, topic_ids, epochs)

    def execute_reset(self, group: str, plan: dict[tuple[str, int], tuple[int, int]]) -> None:
        """Apply a plan. Raises RemoteError(non_empty_group) while the group has members, and
        RemoteError(unknown_topic_id), changing nothing, when the topic a ``ResetPlan`` was
        computed against was deleted since (perhaps made again under its name)."""
        epochs = getattr(plan, "leader_epochs", {})
        offsets = [[t, p, new, "", epochs[(t, p)]] if (t, p) in epochs else [t, p, new]
                   for (t, p), (_, new) in sorted(plan.items())]
        if offsets:
            self._call(P.OFFSET_COMMIT, {"group": group, "generation": -1, "member_id": "", "offsets": offsets,
                                         "topic_ids": getattr(plan, "topic_ids", {})}, retries=0)

    def delete(self, group: str) -> None:
        self._call(P.DELETE_GROUP, {"group": group}, retries=0)
