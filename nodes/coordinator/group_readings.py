"""Which partitions a group has nothing committed of are newer than the group's reading of
their topic: OFFSET_FETCH's ``newer_than_reading``. A member starts those at their log start,
whatever ``auto_offset_reset`` says -- with ``latest`` it skipped every record written to a
partition between its creation and the first fetch of the member that got it, when that member
joined (or restarted) after the partition was made (Kafka's KAFKA-12261, KIP-1327). A partition
that predates the group's reading follows ``auto_offset_reset`` as before.

The coordinator is the one place that knows both facts. A partition is newer than the group's
reading of its topic when any of these shows it (each only ever says "newer" when it is so; a
fact that is not known says nothing, and the partition follows the policy, as before):

1. ``reading_since``: the metadata version when the group's first generation (in this
   coordinator process) that subscribed to the topic was made, against the partition's
   ``created_version`` (nodes/coordinator/store.py). Versions only grow with the stored state:
   no clock step can fool them. Membership lives in memory, so this goes with a coordinator
   restart (a group's first generation after it is made at the version then, newer than every
   partition there is) and with the group (deleted, expired: a group made again is a new one);
   it is kept for the topics subscribed to and those the group has committed offsets of (a
   topic no member reads for a while, and so no commit of it is newer than a partition made
   meanwhile, still shows that partition newer when it is read again).
2. A committed offset of the topic's name for another topic id than the topic has now (the
   topic was deleted and made again since; the committed-offsets table keeps such an entry until
   a commit of the new topic replaces it): the group read the topic before this one was made, so
   every partition of it is newer. No clock. In the offsets topic, but the snapshots keep only
   offsets of the topics as they are (nodes/coordinator/offsets_snapshot_jobs.py): a coordinator
   restarted after the group's offsets partition took its next snapshot has forgotten it.
3. A committed offset of the topic's name whose ``commit_ts_ms`` is below the partition's
   ``created_ms``: the group was reading the topic before the partition was made. Durable, so it
   covers a coordinator restart, as far as the table's latest commit of some partition of the
   topic is older than the partition (a partition read and committed since is not evidence).
   Both times are the coordinator's own wall clock. A step back between a commit and a later
   partition's creation hides the evidence (the policy, as before); a step back between a
   partition's creation and a later commit could make that partition, if it also predates the
   group's reading, look newer -- read from its log start: records again, never one lost -- and
   only for partitions made within the step before that commit.

Pure functions of what they are handed; thread-safe.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from nodes.coordinator.offsets import Committed
from nodes.coordinator.store import TopicState

TopicPartition = tuple[str, int]


def newer_than_reading(uncommitted: Iterable[TopicPartition], topics: Mapping[str, TopicState],
                       table: Mapping[TopicPartition, Committed],
                       reading_since: Mapping[str, int]) -> list[TopicPartition]:
    """Of ``uncommitted`` (partitions the group has no offset of, as OFFSET_FETCH answers), those
    newer than the group's reading of their topic (see the module doc), in the order given.
    ``topics``: the cluster state's; ``table``: the group's committed offsets, also those of
    topics deleted since (``OffsetStore.table``, not ``offsets_for``); ``reading_since``: topic ->
    the metadata version of the group's first generation that subscribed to it. A partition the
    topic does not have (a number out of range, a topic that does not exist) is never newer."""
    wanted = list(uncommitted)
    if not wanted:
        return []
    names = {t for t, _ in wanted}
    earliest_ms: dict[str, int] = {}  # per topic name, its oldest commit in the table
    made_again: set[str] = set()      # topic names with a commit of another topic id than now's
    for (t, _), c in table.items():
        if t not in names:
            continue
        now = topics.get(t)
        if c.topic_id and now is not None and now.topic_id and c.topic_id != now.topic_id:
            made_again.add(t)
        if c.commit_ts_ms > 0:
            earliest_ms[t] = min(c.commit_ts_ms, earliest_ms.get(t, c.commit_ts_ms))
    out = []
    for t, p in wanted:
        ts = topics.get(t)
        if ts is None or not 0 <= p < len(ts.partitions):
            continue
        ps = ts.partitions[p]
        since = reading_since.get(t)
        if t in made_again or (since is not None and ps.created_version > since) \
                or (ps.created_ms > 0 and earliest_ms.get(t, ps.created_ms) < ps.created_ms):
            out.append((t, p))
    return out
