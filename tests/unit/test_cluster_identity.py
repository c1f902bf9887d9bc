"""A broker takes metadata only from its own cluster's coordinator and never from an older
state of it; the coordinator makes its cluster id once and keeps it. Real MetadataGuard,
Broker and StateStore over temporary directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fabric.metadata import ClusterMetadata
from nodes.broker.identity import IdentityError, MetadataGuard
from nodes.coordinator.store import DELETED_TOPIC_IDS_MAX, ClusterState, StateStore, TopicState
from tests.unit.builders_broker import CLUSTER, OLD_ID, OTHER_CLUSTER, md, new_broker


def _guard_sees(guard: MetadataGuard, version: int, state_id: str = "s1", cluster_id: str = CLUSTER) -> bool:
    return guard.admit(ClusterMetadata.from_wire(md(version, {}, cluster_id=cluster_id, state_id=state_id)))


def test_a_broker_refuses_another_clusters_coordinator_and_keeps_its_partitions(tmp_path: Path) -> None:
    b = new_broker(tmp_path)
    try:
        b.apply_metadata(md(1, {"t": OLD_ID}))
        assert b.guard.cluster_id == CLUSTER
    finally:
        b.close()
    props = (tmp_path / "data" / "broker-1" / "meta.properties").read_text()
    assert f"cluster.id={CLUSTER}" in props and "broker.id=1" in props
    b = new_broker(tmp_path)  # restarted; the coordinator lost its state: a new cluster id
    try:
        b.apply_metadata(md(1, {}, cluster_id=OTHER_CLUSTER, state_id="s2"))
        assert b.metadata.version == -1
        assert set(b.partitions) == {("t", 0)} and (b.data_dir / "t-0").is_dir()
        assert OTHER_CLUSTER in b.stats()["metadata_refused"]
        # its own cluster's coordinator (its state restored) is taken again
        b.apply_metadata(md(2, {"t": OLD_ID}, state_id="s3"))
        assert b.metadata.version == 2 and b.stats()["metadata_refused"] == ""
        assert b.partitions[("t", 0)].is_leader
    finally:
        b.close()


def test_a_coordinator_restored_from_an_older_state_is_refused_until_it_is_new_enough(tmp_path: Path) -> None:
    guard = MetadataGuard(tmp_path, 1)
    assert _guard_sees(guard, 10)
    guard.persist()
    guard = MetadataGuard(tmp_path, 1)  # the broker restarted
    assert not _guard_sees(guard, 5, "s2")
    assert "version 5" in guard.last_refusal and "restored" in guard.last_refusal
    assert not _guard_sees(guard, 12, "s2"), "that coordinator process stays refused: its history forked"
    assert _guard_sees(guard, 10, "s3"), "a coordinator that has everything the broker saw is taken"


def test_a_push_that_arrives_after_a_newer_reply_is_no_refusal(tmp_path: Path) -> None:
    guard = MetadataGuard(tmp_path, 1)
    assert _guard_sees(guard, 12)
    assert _guard_sees(guard, 11), "within one coordinator process an older version is only late"
    assert guard.last_refusal == ""


def test_meta_properties_of_another_broker_stops_the_broker(tmp_path: Path) -> None:
    (tmp_path / "meta.properties").write_text(f"version=1\ncluster.id={CLUSTER}\nbroker.id=2\n")
    with pytest.raises(IdentityError, match="broker 2"):
        MetadataGuard(tmp_path, 1)


def test_the_coordinator_makes_its_cluster_id_once(tmp_path: Path) -> None:
    first = StateStore(tmp_path).load()
    assert StateStore(tmp_path).load().cluster_id == first.cluster_id, "saved at once, before any change"
    assert StateStore(tmp_path / "elsewhere").load().cluster_id != first.cluster_id


def test_a_state_file_from_before_ids_gets_them_once(tmp_path: Path) -> None:
    (tmp_path / "cluster-state.json").write_text(json.dumps(
        {"version": 7, "next_producer_id": 3, "topics": {"t": {"configs": {}, "partitions": [[1, 0, [1], [1]]]}}}))
    a = StateStore(tmp_path).load()
    b = StateStore(tmp_path).load()
    assert a.version == 7 and a.cluster_id and a.topics["t"].topic_id
    assert (b.cluster_id, b.topics["t"].topic_id) == (a.cluster_id, a.topics["t"].topic_id)


def test_deleted_topic_ids_are_kept_bounded_and_saved(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    state = ClusterState(topics={"t": TopicState([])})
    for i in range(DELETED_TOPIC_IDS_MAX + 5):
        state.topic_deleted(f"id-{i}")
    store.save(state)
    loaded = store.load()
    assert len(loaded.deleted_topic_ids) == DELETED_TOPIC_IDS_MAX
    assert loaded.deleted_topic_ids[-1] == f"id-{DELETED_TOPIC_IDS_MAX + 4}"
    assert loaded.topics["t"].topic_id == state.topics["t"].topic_id


def test_recovery_paths_for_an_operator(tmp_path: Path) -> None:
    """docs/replication.md: deleting `metadata.version` accepts an older state; deleting
    meta.properties joins a new cluster, and the partitions it does not know are set aside."""
    b = new_broker(tmp_path)
    try:
        b.apply_metadata(md(9, {"t": OLD_ID}))
    finally:
        b.close()
    props = tmp_path / "data" / "broker-1" / "meta.properties"
    props.write_text("".join(ln + "\n" for ln in props.read_text().splitlines() if not ln.startswith("metadata.version")))
    b = new_broker(tmp_path)
    try:
        b.apply_metadata(md(3, {"t": OLD_ID}, state_id="old-copy"))
        assert b.metadata.version == 3 and b.partitions[("t", 0)].is_leader
    finally:
        b.close()
    props.unlink()
    b = new_broker(tmp_path)
    try:
        b.apply_metadata(md(0, {}, cluster_id=OTHER_CLUSTER, state_id="new"))
        assert b.guard.cluster_id == OTHER_CLUSTER and b.partitions == {}
        assert b.stats()["stray_partitions"] == [f"t-0.{OLD_ID}.stray"]
    finally:
        b.close()
