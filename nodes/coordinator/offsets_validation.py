"""The checks a queued offset commit passes before it is appended to ``__consumer_offsets``:
its offsets within each partition's log end (the high watermarks seen, cached, and asked of
the leaders for an offset beyond them), its topics not deleted (or made again) while it
waited, and no offset below the committed one unless the commit may move them backward (or
names a newer leader epoch than the committed one: ``_check_not_backward``).

``CommitValidationMixin`` is that part of ``OffsetStore`` (nodes/coordinator/offsets.py): its
state is the store's own (set by ``OffsetStore.__init__``), and the queues a commit found
valid (or rejected) goes on from are the store's.

Not thread-safe: runs on the coordinator's reactor.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from fabric import protocol as P
from fabric.errors import MalformedFrame, RemoteError
from fabric.replies import ListOffsetsEntry, decode_parts

from nodes.coordinator.offsets_commits import NO_LEADER_EPOCH

if TYPE_CHECKING:
    from nodes.coordinator.context import GroupContext
    from nodes.coordinator.offsets_client import OffsetsTopicClient
    from nodes.coordinator.offsets_commits import Committed, PendingCommit, TopicPartition


class CommitValidationMixin:
    """``OffsetStore``'s log-end check and the checks made just before an append. Part of
    OffsetStore (its state is the store's own)."""

    # the store's state this part uses (set by OffsetStore.__init__)
    client: OffsetsTopicClient
    context: GroupContext
    # per partition, the highest high watermark its leaders answered, and the leader epoch it was
    # asked in (``_hw_known``)
    _hw_seen: dict[TopicPartition, tuple[int, int]]

    if TYPE_CHECKING:  # OffsetStore's, never these
        @staticmethod
        def partition_for_group(group: str) -> int: ...
        def offsets_for(self, group: str) -> dict[TopicPartition, Committed]: ...
        def _topic_id(self, topic: str) -> str: ...
        def _finish(self, pc: PendingCommit, error: RemoteError | None) -> None: ...
        def _pump(self, q: int) -> None: ...

    def forget_topic(self, topic: str) -> None:
        """A topic was deleted: its cached log ends must not vouch for a new topic of that name."""
        for tp in [tp for tp in self._hw_seen if tp[0] == topic]:
            del self._hw_seen[tp]

    def _leader_epoch(self, tp: TopicPartition) -> int:
        t = self.context.state.topics.get(tp[0])
        return t.partitions[tp[1]].leader_epoch if t is not None and 0 <= tp[1] < len(t.partitions) else -1

    def _hw_known(self, tp: TopicPartition) -> int:
        """The highest high watermark of ``tp`` seen under its current leader epoch (-1: none).
        One a leader before answered does not vouch for an offset now: a leader elected since
        may hold less (an unclean election truncated the log under it), and an offset committed
        past its log end would have the next member start past the records it writes there."""
        seen = self._hw_seen.get(tp)
        return seen[0] if seen is not None and seen[1] == self._leader_epoch(tp) else -1

    def _check_log_end(self, pc: PendingCommit) -> None:
        """Reject offsets beyond a partition's high watermark (asks the leaders once for
        partitions whose cached high watermark, under their current leader epoch, is lower than
        the offset)."""
        unknown: dict[str, list[list]] = {}
        epochs: dict[TopicPartition, int] = {}  # the leader epoch of each partition asked, when asked
        for topic, p, offset, *_ in pc.entries:
            if offset is not None and offset > self._hw_known((topic, p)):
                epochs[(topic, p)] = self._leader_epoch((topic, p))
                ep = self.client.leader_endpoint(topic, p)
                if ep is None:
                    self._reject(pc, RemoteError(P.LEADER_NOT_AVAILABLE, f"{topic}-{p} has no leader"))
                    return
                unknown.setdefault(ep, []).append([topic, p, -1])
        if not unknown:
            self._validated(pc)
            return
        waiting = {"n": len(unknown)}
        ends_unknown: set[tuple] = set()
        found: dict[TopicPartition, int] = {}  # what this lookup's answers said

        def on_reply(h: dict | None, _p: list, err: RemoteError | None) -> None:
            waiting["n"] -= 1
            if h is None:
                self._reject(pc, err or RemoteError(P.REQUEST_TIMED_OUT, "log end lookup failed"))
            else:
                try:
                    entries = decode_parts(h, ListOffsetsEntry)
                except MalformedFrame as e:  # a broker's bad answer: the lookup failed
                    self._reject(pc, RemoteError(P.UNKNOWN, f"log end lookup failed: {e}"))
                    entries = []
                replaced = self._topic_replaced(pc)
                if replaced is not None:  # the answer may be the old topic's: kept, it would vouch for the new one
                    self._reject(pc, replaced)
                    entries = []
                for e in entries:
                    tp: TopicPartition = (e.topic, e.partition)  # type: ignore[assignment]  # named: decoded
                    if e.error == P.UNKNOWN_TOPIC_OR_PARTITION:  # we know it: the leader has not heard yet
                        self._reject(pc, RemoteError(P.LEADER_NOT_AVAILABLE, f"{e.topic}-{e.partition}: the leader "
                                                                             "has not learned of the partition yet"))
                    elif e.error and e.error != P.OFFSET_NOT_AVAILABLE:
                        self._reject(pc, RemoteError(e.error, f"{e.topic}-{e.partition}: log end lookup failed"))
                    else:
                        if e.error:  # a new leader's HW so far: the end may be further (_validated)
                            ends_unknown.add(tp)
                        found[tp] = max(e.offset, found.get(tp, -1))
                        self._note_hw(tp, e.offset, epochs.get(tp, -1))
            if waiting["n"] == 0 and not pc.finished:
                self._validated(pc, ends_unknown, found)
        ids = {t: tid for t, tid in pc.topic_ids.items() if tid}
        for ep, parts in unknown.items():
            self.client.log_ends(ep, parts, on_reply, ids)

    def _note_hw(self, tp: TopicPartition, hw: int, epoch: int) -> None:
        """A leader of ``tp`` in ``epoch`` answered ``hw``: the cache keeps the highest of an epoch,
        and an answer of another epoch replaces it."""
        seen = self._hw_seen.get(tp)
        if seen is None or seen[1] != epoch or hw > seen[0]:
            self._hw_seen[tp] = (hw, epoch)

    def _validated(self, pc: PendingCommit, ends_unknown: set | frozenset = frozenset(),
                   found: dict[TopicPartition, int] | None = None) -> None:
        """Refuse offsets past the HW seen (``found``: what the commit's own lookup answered):
        retriably (offset_not_available) where the leader answered only its HW so far (it was
        just elected), for good (out of range) elsewhere."""
        for topic, p, offset, *_ in pc.entries:
            hw = max(self._hw_known((topic, p)), (found or {}).get((topic, p), -1))
            if offset is not None and offset > hw and (topic, p) in ends_unknown:
                self._reject(pc, RemoteError(P.OFFSET_NOT_AVAILABLE, f"{topic}-{p}: its new leader does not know its "
                                                                     f"log end yet (at least {hw}); retry"))
                return
            if offset is not None and offset > hw:
                self._reject(pc, RemoteError(P.OFFSET_OUT_OF_RANGE, f"offset {offset} is beyond the log end {hw} of {topic}-{p}"))
                return
        pc.ready = True
        self._pump(self.partition_for_group(pc.group))

    def _reject(self, pc: PendingCommit, error: RemoteError) -> None:
        self._finish(pc, error)
        self._pump(self.partition_for_group(pc.group))

    def _topic_replaced(self, pc: PendingCommit) -> RemoteError | None:
        """A topic the commit sets an offset of was deleted (and perhaps made again) since it
        was taken. Tombstones (offset None) only delete, and are applied before any commit of a
        topic made again that was queued after them: a group's deletion goes on."""
        setting = {topic for topic, _, offset, *_ in pc.entries if offset is not None}
        return self.ids_refusal({t: i for t, i in pc.topic_ids.items() if t in setting}, pc.named)

    def ids_refusal(self, topic_ids: dict[str, str], named: Collection[str]) -> RemoteError | None:
        """Why offsets of the topics ``topic_ids`` names ({topic: id}; "" names none) may not be
        committed: a topic is no longer the one of that id (deleted, perhaps made again under its
        name). For good (unknown_topic_id) where the committer ``named`` the id (OFFSET_COMMIT's
        ``topic_ids``: its offsets were read in a topic that is gone); else the commit, by name,
        is refused retriably (unknown_topic_or_partition) and may be sent again for the topic
        there is now."""
        for topic, tid in topic_ids.items():
            if tid and self._topic_id(topic) != tid:
                if topic in named:
                    return RemoteError(P.UNKNOWN_TOPIC_ID, f"topic {topic!r} of id {tid} was deleted (and perhaps made "
                                                           "again under its name) since its offsets were read: nothing "
                                                           "was committed")
                return RemoteError(P.UNKNOWN_TOPIC_OR_PARTITION, f"topic {topic!r} was deleted while the commit waited")
        return None

    def _check_not_backward(self, pc: PendingCommit, overlay: dict) -> RemoteError | None:
        """Refuse an offset below the committed one (``overlay``: (group, topic, partition) ->
        (offset, leader epoch) of the commits taken before it into the same append) unless the
        commit may move offsets backward -- or its leader epoch is newer than the committed
        one's: within one log the epoch of the record before an offset never falls as the offset
        grows, so the committed offset was read on a log an unclean election has since cut under
        it, and the member, sent back to where the logs part (KIP-320), commits what it reads
        there. Refused, the committed offset stayed past what the new leader holds: each next
        owner was sent back again, and ``reset-offsets`` clamped it to the log end, past the
        records the new leader wrote below it. Where either epoch is not known nothing says the
        logs differ: refused."""
        if pc.allow_backward:
            return None
        current = self.offsets_for(pc.group)
        for topic, p, offset, _metadata, epoch in pc.entries:
            if offset is None:
                continue
            key = (pc.group, topic, p)
            if key in overlay:
                before, before_epoch = overlay[key]
            elif (topic, p) in current:
                before, before_epoch = current[(topic, p)].offset, current[(topic, p)].leader_epoch
            else:
                before, before_epoch = None, NO_LEADER_EPOCH
            if before is not None and offset < before and not epoch > before_epoch >= 0:
                return RemoteError(P.INVALID_COMMIT_OFFSET,
                                   f"offset {offset} for {topic}-{p} is below the committed {before}: committed "
                                   "offsets only move backward by an explicit reset (loom group reset-offsets)")
        return None
