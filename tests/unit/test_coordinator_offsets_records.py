"""Reading the committed-offsets topic at load: a record that cannot be read is counted, logged
and skipped; a bug in applying one that was read is not swallowed.

Before, one ``except Exception`` wrapped both the decoding and the store's ``apply``: a
programmer error in the store was counted as a "bad record" and the load went on, silently,
with the state it had broken."""

from __future__ import annotations

import msgpack
import pytest

from nodes.coordinator import snapshots as S
from nodes.coordinator.offsets_client import OffsetsTopicClient
from nodes.coordinator.offsets_loader import OffsetsLoader, decode_record
from tests.unit.fakes import FakeGroupContext, RecordingClient, two_partition_state


class Store:
    def __init__(self) -> None:
        self.applied: list = []

    def apply(self, group: str, entries: list, ts: int, topic_ids: dict | None = None) -> None:
        self.applied.append((group, entries, ts))

    def loaded_all(self) -> None:
        pass


def _loader(store: Store) -> tuple[OffsetsLoader, FakeGroupContext]:
    context = FakeGroupContext(two_partition_state())
    return OffsetsLoader(context, OffsetsTopicClient(context, lambda endpoint: RecordingClient()), store), context


def _key(*parts: object) -> bytes:
    return msgpack.packb(list(parts), use_bin_type=True)


def test_commits_tombstones_and_snapshots_decode() -> None:
    # older: no topic id, no leader epoch (-1: not known)
    assert decode_record(_key("g", "t", 1), _key(42, "m", 7)) == [("g", "t", 1, 42, "m", 7, "", -1)]
    assert decode_record(_key("g", "t", 1), _key(42, "m", 7, "id-1")) == [("g", "t", 1, 42, "m", 7, "id-1", -1)]
    assert decode_record(_key("g", "t", 1), _key(42, "m", 7, "id-1", 4)) == [("g", "t", 1, 42, "m", 7, "id-1", 4)]
    assert decode_record(_key("g", "t", 1), b"") == [("g", "t", 1, None, "", 0, "", -1)]
    # a snapshot's entries go as older code wrote them (and reads them), and those whose epoch is
    # known again, whole, in an epoch record of the same append, which older code skips
    (snapshot, epochs), = S.snapshot_appends("snap-1", [("g", "t", 0, 5, "", 9, "id-1", -1),
                                                        ("g", "t", 1, 6, "", 9, "id-1", 3)])
    assert decode_record(*snapshot) == [("g", "t", 0, 5, "", 9, "id-1", -1), ("g", "t", 1, 6, "", 9, "id-1", -1)]
    assert [len(e) for e in msgpack.unpackb(snapshot[1])] == [7, 7]
    assert decode_record(*epochs) == [("g", "t", 1, 6, "", 9, "id-1", 3)] and S.is_epochs_key(epochs[0])
    # as code that wrote the epoch in the entry wrote it
    assert decode_record(snapshot[0], _key(["g", "t", 1, 6, "", 9, "id-1", 3])) == [("g", "t", 1, 6, "", 9, "id-1", 3)]
    (key, value), = S.snapshot_records("snap-2", [])
    assert decode_record(key, value) == []


@pytest.mark.parametrize("key, value", [
    (b"\xc1", b""),                        # not msgpack
    (_key("g", "t"), b""),                 # two fields
    (_key("g", "t", "zero"), b""),         # a partition that is not a number
    (_key(["g"], "t", 0), b""),            # a group that is not a string
    (_key("g", "t", 0), _key("x", "", 1)),  # an offset that is not a number
    (None, _key(1, "", 1)),                # no key
    (_key("g", "t", 0), b"\x93\x01"),      # a truncated value
    # a snapshot entry whose commit time is not an integer (int() of an infinite float raised
    # OverflowError, which stopped the coordinator at every start while the record was in the log)
    (_key(S.SNAPSHOT_KEY_TAG, "s", 0, True), _key(["g", "t", 0, 5, "", float("inf")])),
    (_key(S.SNAPSHOT_KEY_TAG, "s", 0, True), _key(["g", "t", 0, 5, "", "9"])),
    # a leader epoch that is not one
    (_key("g", "t", 0), _key(3, "", 1, "id-1", "4")),
    (_key("g", "t", 0), _key(3, "", 1, "id-1", True)),
    (_key("g", "t", 0), _key(3, "", 1, "id-1", -2)),
    (_key("g", "t", 0), _key(3, "", 1, "id-1", 4, "more")),
    (_key(S.SNAPSHOT_KEY_TAG, "s", 0, True), _key(["g", "t", 0, 5, "", 9, "id-1", 1.5])),
])
def test_a_record_that_cannot_be_read_is_counted_logged_and_skipped(
        key: bytes | None, value: bytes, caplog: pytest.LogCaptureFixture) -> None:
    store = Store()
    loader, context = _loader(store)
    loader.apply_record(key, value)
    loader.apply_record(_key("g", "t", 0), _key(3, "", 1))
    assert context.counters["offsets_bad_records"] == 1
    assert "cannot be read" in caplog.text
    assert store.applied == [("g", [("t", 0, 3, "", -1)], 1)]


def test_a_bug_in_applying_a_record_is_not_counted_as_a_bad_record() -> None:
    class BrokenStore(Store):
        def apply(self, group: str, entries: list, ts: int, topic_ids: dict | None = None) -> None:
            raise TypeError("a bug in the store")
    loader, context = _loader(BrokenStore())
    with pytest.raises(TypeError, match="a bug in the store"):
        loader.apply_record(_key("g", "t", 0), _key(3, "", 1))
    assert context.counters["offsets_bad_records"] == 0


class ReadingsStore(Store):
    def __init__(self) -> None:
        super().__init__()
        self.readings: list = []

    def apply_readings(self, group: str, changes: dict) -> None:
        self.readings.append((group, changes))


@pytest.mark.parametrize("value", [
    _key(-1, 5),              # a negative metadata version: every partition would look newer, for good
    _key(2**63 - 1, 5),       # beyond the state's version: no partition would ever look newer (skipped records)
    _key(3, -5),              # a negative time
    _key("3", 5),             # not numbers
    _key(True, 5),
    _key(3),                  # one field
    _key({"v": 3}),           # not a list
    b"\x93\x01",              # truncated
])
def test_a_reading_record_that_cannot_be_read_is_counted_logged_and_skipped(
        value: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """A group's reading whose version no coordinator of this state could have written (negative,
    or beyond the metadata version there is now) is no evidence: taken, a version too high made
    every partition look older than the group's reading -- started by the policy (``latest``
    skips) -- and one below zero made every partition of the topic look newer for as long as the
    group lives (the earlier reading wins)."""
    store = ReadingsStore()
    loader, context = _loader(store)
    context.state.version = 10
    loader.apply_record(_key("loom.offsets.reading", "g", "t"), _key(10, 5))
    loader.apply_record(_key("loom.offsets.reading", "g", "t"), value)
    assert context.counters["offsets_bad_records"] == 1
    assert "cannot be read" in caplog.text
    assert [(g, {t: tuple(r) for t, r in c.items()}) for g, c in store.readings] == [("g", {"t": (10, 5)})]


def test_a_reading_of_every_topic_is_only_ever_a_deletion(caplog: pytest.LogCaptureFixture) -> None:
    """The topic "" (every topic of the group) with a value is no record a coordinator writes:
    taken as the deletion it would be applied as, it forgot the group's readings, and after a
    restart its first generation began them anew -- later than the group's reading."""
    store = ReadingsStore()
    loader, context = _loader(store)
    context.state.version = 10
    loader.apply_record(_key("loom.offsets.reading", "g", ""), _key(3, 5))
    loader.apply_record(_key("loom.offsets.reading", "g", ""), b"")
    assert context.counters["offsets_bad_records"] == 1
    assert store.readings == [("g", {"": None})]
