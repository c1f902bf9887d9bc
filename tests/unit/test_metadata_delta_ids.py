"""Metadata deltas carry what a snapshot gives -- topic ids, the cluster id, the coordinator's
state id, the deleted topic ids -- and a broker following deltas and version beacons judges
them as it judges snapshots (MetadataGuard): real ClusterMetadata, Broker and ClusterFacts."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric import protocol as P
from fabric import wire
from fabric.metadata import ClusterMetadata
from nodes.broker.node import Broker
from nodes.monitor.cluster import ClusterFacts
from tests.unit.builders_broker import CLUSTER, NEW_ID, OLD_ID, OTHER_CLUSTER, md, new_broker, write

GONE_ID = "33333333-3333-4333-8333-333333333333"


def _same_partitions(raw: dict, like: dict) -> dict:
    """``raw`` with the partition states of ``like`` (a re-created topic placed as before)."""
    for name, t in raw["topics"].items():
        if name in like["topics"]:
            t["partitions"] = like["topics"][name]["partitions"]
    return raw


def test_a_delta_gives_what_the_snapshot_gives() -> None:
    base_raw = md(1, {"t": OLD_ID, "u": GONE_ID})
    base = ClusterMetadata.from_wire(base_raw)
    # "u" deleted, "t" deleted and re-created under its name, placed exactly as before
    new = ClusterMetadata.from_wire(_same_partitions(md(2, {"t": NEW_ID}, deleted=(GONE_ID, OLD_ID)), base_raw))
    applied, changed = base.apply_delta(wire.unpack(wire.pack(base.delta_to(new))))
    assert applied.to_wire() == new.to_wire()
    assert (applied.cluster_id, applied.state_id) == (CLUSTER, "s1")
    assert applied.topics["t"].topic_id == NEW_ID and applied.deleted_topic_ids == (GONE_ID, OLD_ID)
    assert [(p.topic, p.partition) for p in changed] == [("t", 0)], "another topic: all its partitions are new"
    # the deleted ids travel only when they change; a later delta keeps them
    later = ClusterMetadata.from_wire(md(3, {"t": NEW_ID}, deleted=(GONE_ID, OLD_ID)))
    delta = new.delta_to(later)
    assert "deleted_topic_ids" not in delta
    assert applied.apply_delta(delta)[0].to_wire() == later.to_wire()


@pytest.mark.parametrize("other", [{"state_id": "s2"}, {"cluster_id": OTHER_CLUSTER, "state_id": "s2"}])
def test_a_delta_of_another_coordinator_state_does_not_apply(other: dict) -> None:
    ours = ClusterMetadata.from_wire(md(5, {"t": OLD_ID}))
    theirs = ClusterMetadata.from_wire(md(5, {"t": OLD_ID}, **other))
    delta = theirs.delta_to(ClusterMetadata.from_wire(md(6, {}, **other)))
    assert delta["base_version"] == ours.version
    with pytest.raises(ValueError):
        ours.apply_delta(delta)  # the same version number of another state is another metadata


def _push(b: Broker, kind: bytes, raw: dict) -> None:
    b._on_sub([P.TOPIC_METADATA, P.VERSION, kind, wire.pack(raw)])


def _following(tmp_path: Path, version: int = 5) -> Broker:
    b = new_broker(tmp_path)
    b._registered = True
    b.apply_metadata(md(version, {"t": OLD_ID}))
    write(b, "t")
    return b


def test_a_broker_following_deltas_refuses_another_clusters_delta(tmp_path: Path) -> None:
    b = _following(tmp_path)
    try:
        theirs = ClusterMetadata.from_wire(md(5, {}, cluster_id=OTHER_CLUSTER, state_id="s9"))
        _push(b, P.PUB_METADATA_DELTA, theirs.delta_to(ClusterMetadata.from_wire(md(6, {}, cluster_id=OTHER_CLUSTER,
                                                                                    state_id="s9"))))
        assert b.metadata.version == 5 and b.partitions[("t", 0)].log_end_offset == 3
        assert OTHER_CLUSTER in b.stats()["metadata_refused"]
        assert b.stats()["strays"] == 0
    finally:
        b.close()


def test_a_beacon_of_an_older_coordinator_state_refuses_that_state_for_good(tmp_path: Path) -> None:
    """A coordinator restored from an old copy says so in its first beacon; its deltas stay
    refused after its version passes ours (it never gets a snapshot in edgewise)."""
    b = _following(tmp_path)
    try:
        _push(b, P.PUB_METADATA_VERSION, {"version": 3, "cluster_id": CLUSTER, "state_id": "s2"})
        assert "version 3" in b.stats()["metadata_refused"]
        old = ClusterMetadata.from_wire(md(5, {}, state_id="s2"))
        _push(b, P.PUB_METADATA_DELTA, old.delta_to(ClusterMetadata.from_wire(md(6, {}, state_id="s2"))))
        b.apply_metadata(md(6, {}, state_id="s2"), same_version=True)
        assert b.metadata.version == 5 and b.partitions[("t", 0)].log_end_offset == 3 and not b.dirs.strays
    finally:
        b.close()


def test_a_beacon_of_a_restarted_coordinator_asks_for_its_snapshot(tmp_path: Path) -> None:
    b = _following(tmp_path)
    try:
        _push(b, P.PUB_METADATA_VERSION, {"version": 5, "cluster_id": CLUSTER, "state_id": "s2"})
        assert b._refresh_in_flight and b.stats()["metadata_refused"] == ""
        b._refresh_in_flight = False
        b.apply_metadata(md(5, {"t": OLD_ID}, state_id="s2"), same_version=True)  # its answer
        assert b.metadata.state_id == "s2"
        _push(b, P.PUB_METADATA_DELTA, b.metadata.delta_to(ClusterMetadata.from_wire(md(6, {"t": OLD_ID}, state_id="s2"))))
        assert b.metadata.version == 6 and b.partitions[("t", 0)].leader_epoch == 6
    finally:
        b.close()


def test_a_topic_recreated_under_its_name_is_not_served_from_the_old_replica_via_deltas(tmp_path: Path) -> None:
    b = _following(tmp_path)
    try:
        before = md(5, {"t": OLD_ID})
        after = _same_partitions(md(6, {"t": NEW_ID}), before)  # deleted ids forgotten: set aside
        _push(b, P.PUB_METADATA_DELTA, ClusterMetadata.from_wire(before).delta_to(ClusterMetadata.from_wire(after)))
        assert b.metadata.version == 6
        assert b.dirs.topic_id(("t", 0)) == NEW_ID and b.partitions[("t", 0)].log_end_offset == 0
        assert list(b.dirs.strays.values()) == [OLD_ID]
        gone = md(7, {}, deleted=(OLD_ID,))  # now its id is deleted explicitly: the stray goes
        _push(b, P.PUB_METADATA_DELTA, ClusterMetadata.from_wire(after).delta_to(ClusterMetadata.from_wire(gone)))
        assert list(b.dirs.strays.values()) == [NEW_ID], f"{NEW_ID} was not deleted: its replica is set aside"
        assert [p.name for p in b.data_dir.glob("*.stray")] == [f"t-0.{NEW_ID}.stray"]
    finally:
        b.close()


def test_the_monitor_follows_a_coordinator_that_restarted_with_a_lower_version() -> None:
    facts = ClusterFacts()
    facts.apply_metadata(ClusterMetadata.from_wire(md(9, {"t": OLD_ID})))
    facts.apply_metadata(ClusterMetadata.from_wire(md(8, {"t": OLD_ID})))  # a late push of the same state
    assert facts.metadata.version == 9
    facts.apply_metadata(ClusterMetadata.from_wire(md(2, {}, cluster_id=OTHER_CLUSTER, state_id="s2")))
    assert facts.metadata.version == 2 and not facts.metadata.topics
