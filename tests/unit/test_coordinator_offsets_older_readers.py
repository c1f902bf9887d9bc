"""What the coordinator appends to the offsets topic, read by a coordinator of older code -- one
that knows no committed leader epoch (a rolling upgrade's older node taking over the group
coordinator, or a rollback): every record it takes for a commit or a snapshot by its key it
reads whole, and a record only newer code reads has a key it skips, so it loads every committed
offset as before, without the epochs. A commit record or a snapshot entry it could not read was
skipped -- a snapshot record whole, every group's offsets in it with it -- and the groups
started at auto_offset_reset, past records nobody read (``latest``).

``_older_decode`` is the older reader (nodes/coordinator/offsets_loader.py's ``decode_record``
and snapshots.py's ``decode_entries`` before the epoch), kept here as it was."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from fabric import protocol as P
from nodes.coordinator import snapshots as S
from nodes.coordinator.group_readings import parse_reading_key
from nodes.coordinator.offsets import OffsetStore
from nodes.coordinator.offsets_loader import FENCE_KEY
from tests.unit.fakes import admin_commit, loaded_group_coordinator, offsets_log_table, offsets_records


class _Skipped(Exception):
    """The older reader skips this record by its key (it is no commit and no snapshot to it)."""


def _older_decode(key: bytes | None, value: bytes) -> list[tuple]:
    """(group, topic, partition, offset) of each entry, as the older loader reads a record;
    raises _Skipped for a key it skips, ValueError for a record it takes for a commit or a
    snapshot but cannot read (and skips, with everything in it)."""
    if S.parse_key(key) is not None:
        raw = msgpack.unpackb(value, raw=False)
        if not isinstance(raw, list):
            raise ValueError("a snapshot value is a list of entries")
        for e in raw:
            if not (isinstance(e, list) and len(e) in (6, 7) and isinstance(e[0], str) and isinstance(e[1], str)
                    and isinstance(e[2], int) and isinstance(e[3], int) and isinstance(e[5], int)):
                raise ValueError(f"bad snapshot entry {e!r}")
        return [(e[0], e[1], e[2], e[3]) for e in raw]
    if key == FENCE_KEY:
        return []
    try:
        group, topic, p = msgpack.unpackb(key, raw=False)
    except ValueError as e:
        raise _Skipped() from e
    if not (isinstance(group, str) and isinstance(topic, str) and isinstance(p, int)):
        raise _Skipped()
    if not value:
        return [(group, topic, p, None)]
    fields = msgpack.unpackb(value, raw=False)
    if not isinstance(fields, list) or len(fields) not in (3, 4):
        raise ValueError(f"bad commit value {fields!r}")
    if not (isinstance(fields[0], int) and isinstance(fields[2], int)):
        raise ValueError(f"bad commit value {fields!r}")
    return [(group, topic, p, fields[0])]


def _groups_of_partition_0(n: int) -> list[str]:
    return [g for g in (f"g{i}" for i in range(200)) if OffsetStore.partition_for_group(g) == 0][:n]


def test_an_older_coordinator_reads_every_committed_offset_of_commits_and_snapshots_that_carry_epochs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S, "SNAPSHOT_COMMIT_RECORDS", 3)
    gc, context, client = loaded_group_coordinator(tmp_path)
    groups = _groups_of_partition_0(3)
    admin_commit(gc, client, groups[0], 0, offsets=[["t", 0, 10, "m", 4], ["t", 1, 3]])
    admin_commit(gc, client, groups[1], 0, offsets=[["t", 0, 11, "", 2]], base_offset=4)
    admin_commit(gc, client, groups[2], 0, offsets=[["t", 1, 12]], base_offset=8)
    gc.tick()  # the snapshot of partition 0: its records, each answered
    base = 12
    while len(client.of(P.PRODUCE)) > 3 and client.of(P.PRODUCE)[-1][3] is not None:
        produce = client.of(P.PRODUCE)[-1]
        produce[3]({"results": [[base, 0, "", 0]]}, [], None)
        base += 4
        if produce is client.of(P.PRODUCE)[-1]:
            break
    appends = [payloads[0] for _cmd, _h, payloads, _cb in client.of(P.PRODUCE)]
    assert len(appends) > 3, "no snapshot was written"
    older: dict[str, dict[tuple[str, int], int]] = {}
    skipped = 0
    for r in (r for a in appends for r in offsets_records(a, 0)):
        if parse_reading_key(r.key) is not None:
            continue
        try:
            entries = _older_decode(r.key, r.value)
        except _Skipped:
            skipped += 1
            continue
        for group, topic, p, offset in entries:
            if offset is None:
                older.setdefault(group, {}).pop((topic, p), None)
            else:
                older.setdefault(group, {})[(topic, p)] = offset
    expected = {groups[0]: {("t", 0): 10, ("t", 1): 3}, groups[1]: {("t", 0): 11}, groups[2]: {("t", 1): 12}}
    assert older == expected, "the older coordinator lost committed offsets"
    # newer code reads the epochs too, from the records the older one skips
    assert offsets_log_table(appends, epochs=True) == {
        groups[0]: {("t", 0): (10, 4), ("t", 1): (3, -1)}, groups[1]: {("t", 0): (11, 2)}, groups[2]: {("t", 1): (12, -1)}}
