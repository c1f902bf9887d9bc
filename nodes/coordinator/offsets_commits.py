"""One commit of a group's offsets as the offset store holds it while it waits for its append
(``PendingCommit``), an offset once committed (``Committed``), and what a commit costs in the
log (``commit_bytes``: the bounds the store's queue and each append keep) -- so also how a
group's deletion is cut into commits that keep them (``deletion_parts``). The store that queues,
appends and applies them is nodes/coordinator/offsets.py.

Plain data, no I/O; not thread-safe (the coordinator's reactor owns every instance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable

from fabric import protocol as P
from fabric.errors import RemoteError

if TYPE_CHECKING:
    from nodes.coordinator.group_readings import Reading

ENTRY_BYTES = 100                  # what an entry of a waiting commit costs besides its strings
APPEND_BYTES_MAX = 4 * 1024 * 1024  # the bytes of the commits folded into one append (a commit always
#                                    goes, alone if it must): well within the broker's batch limit
#                                    (16 MiB by default)
READINGS_PER_COMMIT_MAX = 5000    # changes of a group's stored readings in one commit (~3 MiB at most,
#                                    within APPEND_BYTES_MAX); more go in the next ones
DELETION_PARTS_IN_BUFFER = 8       # a part of a group's deletion takes at most this share of
#                                    P.PENDING_COMMIT_BYTES_MAX (and at most APPEND_BYTES_MAX)

TopicPartition = tuple[str, int]
DoneCallback = Callable[[RemoteError | None], None]
NO_LEADER_EPOCH = P.NO_LEADER_EPOCH  # a committed offset whose record before it is of an epoch not known
# one offset of a commit: topic, partition, offset (None: delete), metadata, and the leader epoch of
# the record before the offset, as the committer read it (NO_LEADER_EPOCH: not known) -- Kafka's
# committed leader epoch (KIP-320): a consumer that starts from the offset names it in its first
# fetch, and a leader whose log parts from the one read there (an unclean election) says where
CommitEntry = tuple[str, int, int | None, str, int]


def commit_bytes(group: str, entries: list[CommitEntry], readings: Iterable[str] = ()) -> int:
    """A commit's bytes in the log, about (each entry's record repeats the group id), as
    P.PENDING_COMMIT_BYTES_MAX and APPEND_BYTES_MAX count them; ``readings``: the topics of the
    reading records it carries."""
    per_entry = ENTRY_BYTES + len(group.encode())
    # an entry with a known leader epoch is written twice: its commit record and, whole, its
    # epoch record (snapshots.epoch_records)
    return sum((per_entry + len(e[0].encode()) + len(e[3].encode())) * (2 if e[4] >= 0 else 1) for e in entries) \
        + sum(per_entry + len(t.encode()) for t in readings)


def deletion_parts(group: str, partitions: list[TopicPartition]) -> list[list[CommitEntry]]:
    """The tombstones of ``partitions`` in parts of at most DELETION_PART_BYTES (as
    ``commit_bytes`` counts them; each part at least one), in order: a group's deletion goes as
    these commits, one after another (the groups' DELETE_GROUP)."""
    limit = min(APPEND_BYTES_MAX, P.PENDING_COMMIT_BYTES_MAX // DELETION_PARTS_IN_BUFFER)
    parts: list[list[CommitEntry]] = []
    size = 0
    for t, p in partitions:
        entry: CommitEntry = (t, p, None, "", NO_LEADER_EPOCH)
        n = commit_bytes(group, [entry])
        if not parts or size + n > limit:
            parts.append([])
            size = 0
        parts[-1].append(entry)
        size += n
    return parts


@dataclass
class PendingCommit:
    """One commit request (or group deletion) waiting for its append."""

    group: str
    entries: list[CommitEntry]
    allow_backward: bool
    done: DoneCallback
    deadline_ms: int
    ready: bool = True      # False while the log-end check is still out
    finished: bool = False
    # re-checked just before the append: a commit validated for a generation that a rebalance
    # has since ended must not land after the partition's new owner read the committed offsets
    recheck: Callable[[], RemoteError | None] | None = None
    error: RemoteError | None = None
    # An append carrying it may have landed (it went out and no answer said it was not
    # written): every retry is then the same append and is not judged again (a rebalance
    # meanwhile must not turn it into illegal_generation). Never reset: a later attempt that
    # the broker refuses does not undo an earlier one that may be in the log.
    maybe_in_log: bool = False
    size: int = 0  # its bytes as P.PENDING_COMMIT_BYTES_MAX and APPEND_BYTES_MAX count them (commit_bytes)
    # the id of each entry's topic when the commit was taken: a topic deleted and made again
    # under its name before the append does not get the old topic's offset
    topic_ids: dict[str, str] = field(default_factory=dict)
    # the topics whose id the committer named (OFFSET_COMMIT's topic_ids): their offsets were read
    # in that topic, and one replaced meanwhile refuses the commit for good (unknown_topic_id)
    named: set[str] = field(default_factory=set)
    # changes of the group's stored readings it carries (topic -> Reading, None: deleted;
    # group_readings.ALL_TOPICS: every one), appended after its offsets
    readings: dict[str, Reading | None] = field(default_factory=dict)


@dataclass
class Committed:
    offset: int
    metadata: str = ""
    commit_ts_ms: int = 0
    topic_id: str = ""  # the id of the topic it was committed for ("" in records older than the field)
    leader_epoch: int = NO_LEADER_EPOCH  # of the record before ``offset``, as committed (CommitEntry)
