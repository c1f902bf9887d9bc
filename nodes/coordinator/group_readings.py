"""Which partitions a group has nothing committed of are newer than the group's reading of
their topic: OFFSET_FETCH's ``newer_than_reading``. A member starts those at their log start,
whatever ``auto_offset_reset`` says -- with ``latest`` it skipped every record written to a
partition between its creation and the first fetch of the member that got it, when that member
joined (or restarted) after the partition was made (Kafka's KAFKA-12261, KIP-1327). A partition
that predates the group's reading follows ``auto_offset_reset`` as before.

The coordinator is the one place that knows both facts. A partition is newer than the group's
reading of its topic when any of these shows it (each only ever says "newer" when it is so; a
fact that is not known says nothing, and the partition follows the policy, as before):

1. The group's reading of the topic: the metadata version when the group's first generation
   that subscribed to it was made (``Group.reading_since``), against the partition's
   ``created_version`` (nodes/coordinator/store.py). Versions only grow with the stored state:
   no clock step can fool them. Kept for the topics subscribed to and those the group has
   committed offsets of (a topic no member reads for a while, and so no commit of it is newer
   than a partition made meanwhile, still shows that partition newer when it is read again), and
   stored in the group's offsets partition (``OffsetStore.readings``: the reading records below,
   also in its snapshots), so that it survives a coordinator restart: the restarted coordinator
   takes the stored reading, the earlier of the two where its own first generation of the group
   also has one. Written (its changes only) when a rebalance or the group's emptying changes it,
   and OFFSET_FETCH of the group waits until it is stored (its answer is held: at most
   ``OFFSET_FETCH_HOLD_MS``, then the retriable ``unstable_offset_commit``): no member starts a partition by the policy before the reading is durable, so a
   restart can forget only a reading that no member has started by (the group's reading then
   begins after the restart, as it did for whoever starts by it). Goes with the group (deleted,
   expired: a group made again is a new one), in the commit of its first tombstones.
2. A committed offset of the topic's name for another topic id than the topic has now (the
   topic was deleted and made again since; the committed-offsets table keeps such an entry until
   a commit of the new topic replaces it or the group goes): the group read the topic before
   this one was made, so every partition of it is newer. No clock. In the offsets topic, and the
   snapshots keep such entries too (nodes/coordinator/offsets_snapshot_jobs.py): a restarted
   coordinator knows what the running one knew.
3. A committed offset of the topic's name whose ``commit_ts_ms`` is below the partition's
   ``created_ms``: the group was reading the topic before the partition was made. Durable, as
   far as the table's latest commit of some partition of the topic is older than the partition
   (a partition read and committed since is not evidence). Both times are the coordinator's own
   wall clock. A step back between a commit and a later partition's creation hides the evidence
   (the others may still show it); a step back between a partition's creation and a later commit
   could make that partition, if it also predates the group's reading, look newer -- read from
   its log start: records again, never one lost -- and only for partitions made within the step
   before that commit.

What is not known says nothing: partitions made before the coordinator kept ``created_version``
(a state file from older code), a group's reading begun on a coordinator that did not store it
(older code) and not shown by 2 or 3. A downgrade to such code forgets the stored readings (its
loader skips the reading records: below) and judges as before.

Reading records in ``__consumer_offsets``: key msgpack ``["loom.offsets.reading", group,
topic]``, value msgpack ``[version, written_ms]`` or empty bytes (deleted; the topic ``""``,
``ALL_TOPICS``: every reading of the group). A commit key is ``[group, topic, partition]``, so
older code's ``decode_record`` refuses this one (its third element is no partition number) and
its loader counts and skips it: it loads the offsets as before.

Pure functions of what they are handed; thread-safe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping, NamedTuple

import msgpack

if TYPE_CHECKING:
    from nodes.coordinator.offsets_commits import Committed
    from nodes.coordinator.store import TopicState

TopicPartition = tuple[str, int]

READING_KEY_TAG = "loom.offsets.reading"
ALL_TOPICS = ""  # a reading change of this "topic" (always a deletion) forgets every reading of the group


class Reading(NamedTuple):
    """A group's reading of a topic as stored: ``version``, the metadata version of the group's
    first generation that subscribed to it; ``written_ms``, the coordinator's wall clock when it
    was stored (the expiry of a group that holds nothing else)."""

    version: int
    written_ms: int


def reading_key(group: str, topic: str) -> bytes:
    """The offsets-topic key of the group's reading of ``topic`` (ALL_TOPICS: of all of them)."""
    return msgpack.packb([READING_KEY_TAG, group, topic], use_bin_type=True)


def reading_value(reading: Reading | None) -> bytes:
    """Its value: msgpack ``[version, written_ms]``, or empty bytes for a deletion."""
    return b"" if reading is None else msgpack.packb(list(reading), use_bin_type=True)


def parse_reading_key(key: bytes | None) -> tuple[str, str] | None:
    """(group, topic) of a reading record's key; None for any other key."""
    if not key:
        return None
    try:
        k = msgpack.unpackb(key, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if isinstance(k, list) and len(k) == 3 and k[0] == READING_KEY_TAG and isinstance(k[1], str) \
            and isinstance(k[2], str):
        return k[1], k[2]
    return None


def decode_reading(value: bytes, version_max: int) -> Reading | None:
    """A reading record's value (None: deleted). ``version_max``: the metadata version there is
    now (every one a coordinator of this state wrote is at most that: versions are stored before
    they are used). Raises ValueError / TypeError / msgpack.UnpackException for a value that is
    not one -- also a version below 0 or above ``version_max``, or a negative time: taken, one
    too high made partitions made since the group's reading look older (started by the policy:
    ``latest`` skips their records), and one below 0, the earlier reading winning, made every
    partition of the topic look newer for as long as the group lives."""
    if not value:
        return None
    fields = msgpack.unpackb(value, raw=False)
    if not (isinstance(fields, list) and len(fields) >= 2 and type(fields[0]) is int and type(fields[1]) is int):
        raise ValueError(f"bad reading value {fields!r}")  # more fields: a newer writer's, ignored
    if not (0 <= fields[0] <= version_max and fields[1] >= 0):
        raise ValueError(f"bad reading value {fields!r} (the metadata version is {version_max})")
    return Reading(fields[0], fields[1])


def reading_records(group: str, changes: Mapping[str, Reading | None]) -> list[tuple[bytes, bytes]]:
    """(key, value) of each change of the group's stored readings, in the order given."""
    return [(reading_key(group, t), reading_value(r)) for t, r in changes.items()]


def apply_readings(readings: dict[str, dict[str, Reading]], group: str,
                   changes: Mapping[str, Reading | None]) -> None:
    """Apply stored changes of ``group``'s readings to ``readings`` (group -> topic -> Reading),
    in order; a group left without any is dropped."""
    mine = readings.setdefault(group, {})
    for t, r in changes.items():
        if t == ALL_TOPICS:
            mine.clear()
        elif r is None:
            mine.pop(t, None)
        else:
            mine[t] = r
    if not mine:
        del readings[group]


def merged_readings(memory: Mapping[str, int], stored: Mapping[str, Reading]) -> dict[str, int]:
    """The group's reading of each topic: the earlier of the one in memory and the stored one
    (the first generation that subscribed to a topic may be older than this process)."""
    out = {t: r.version for t, r in stored.items()}
    for t, v in memory.items():
        out[t] = min(v, out.get(t, v))
    return out


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
