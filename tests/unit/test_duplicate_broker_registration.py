"""Two live processes with one broker id (Kafka's DUPLICATE_BROKER_REGISTRATION).

Two configs that give the same ``broker_id`` different data directories (a copied config, a
second machine) -- the data-directory lock cannot see that. Each registration of the second
process was taken for a restart of the first: the first, fenced, registered again as a new
process, which replaced the second, and so on, every partition of the broker fenced and
re-elected at each turn, leadership of it alternating between two different logs.

Every broker data directory now has an id of its own (``directory.id`` in ``meta.properties``,
as Kafka's), and a broker names it in its registration and heartbeats. While the broker's
current process is alive, the coordinator refuses a process of it that names another directory
(``duplicate_broker_registration``) and ignores its heartbeats; that process asks again, slowly,
and is taken once the current one is dead (a replaced disk, restarted at once, waits out the
old process's session). A new process from the same directory is a restart, taken at once: the
data-directory lock says the previous one is gone."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric import protocol as P
from fabric import wire
from fabric.errors import RemoteError
from fabric.metadata import ClusterMetadata
from nodes.broker.messages import AppendRequest, FetchInput, ProduceInput
from nodes.broker.identity import FILE_NAME, MetadataGuard, read_properties
from nodes.coordinator.store import PartitionState, StateStore, TopicState
from tests.unit.builders_broker import batch, start
from tests.unit.fakes import RecordingClient


def _register(coord, bid: int, incarnation: str, directory: str | None) -> tuple[dict | None, RemoteError | None]:  # noqa: ANN001
    header = {"id": 1, "broker_id": bid, "incarnation": incarnation, "cluster_id": coord.state.cluster_id}
    if directory is not None:
        header["directory_id"] = directory
    try:
        return coord.server.handlers[P.BROKER_REGISTER](wire.Request([b"b"], P.BROKER_REGISTER, header, [])), None
    except RemoteError as e:
        return None, e


def _heartbeat(coord, bid: int, incarnation: str, directory: str | None) -> list:  # noqa: ANN001
    fields = {"directory_id": directory} if directory is not None else {}
    return wire.encode_heartbeat(wire.Heartbeat(f"broker-{bid}", "broker", 4242, coord.clock.wall_ms(), broker_id=bid,
                                                incarnation=incarnation, cluster_id=coord.state.cluster_id, **fields))


def test_a_second_live_process_of_a_broker_from_another_directory_is_refused(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    assert _register(coord, 2, "first", "dir-a")[1] is None
    version, epochs = coord.state.version, [p.to_list() for p in coord.state.topics["t"].partitions]
    header, err = _register(coord, 2, "second", "dir-b")
    assert header is None and err is not None and err.code == P.DUPLICATE_BROKER_REGISTRATION, err
    assert "dir-a" in err.message and "dir-b" in err.message and "broker 2" in err.message
    assert coord.state.incarnations[2] == "first", "the second process was taken for a restart"
    assert coord.state.version == version and [p.to_list() for p in coord.state.topics["t"].partitions] == epochs
    # its heartbeats are neither a restart nor a sign of life of the broker
    seen = coord.last_seen_ms[2]
    broker.clock.advance(500)
    coord._on_heartbeat(_heartbeat(coord, 2, "second", "dir-b"))
    assert coord.state.incarnations[2] == "first" and coord.state.version == version
    assert coord.last_seen_ms[2] == seen, "the refused process's heartbeat kept the broker's session"
    assert coord.counters["duplicate_broker_registrations"] == 1 and coord.counters["duplicate_broker_heartbeats"] == 1
    # the first process dead, the second one's next heartbeat is a restart of broker 2
    coord.alive.discard(2)
    coord._on_broker_down(2)
    coord._on_heartbeat(_heartbeat(coord, 2, "second", "dir-b"))
    assert coord.state.incarnations[2] == "second" and 2 in coord.alive


def test_once_the_current_process_is_dead_the_other_directory_is_taken_as_a_restart(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    assert _register(coord, 2, "first", "dir-a")[1] is None
    coord.alive.discard(2)  # its session ran out (a replaced disk, the broker restarted on it)
    coord._on_broker_down(2)
    assert _register(coord, 2, "second", "dir-b")[1] is None
    assert coord.state.incarnations[2] == "second" and "first" in coord.state.replaced_incarnations[2]
    assert 2 in coord.alive
    # and now the first one is the other process: its late registration is refused as replaced
    assert _register(coord, 2, "first", "dir-a")[1].code == P.STALE_BROKER_EPOCH
    # a new process of the first one's directory is refused while the second lives
    assert _register(coord, 2, "third", "dir-a")[1].code == P.DUPLICATE_BROKER_REGISTRATION


def test_a_new_process_from_the_same_directory_is_a_restart_taken_at_once(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    assert _register(coord, 2, "first", "dir-a")[1] is None
    assert 2 in coord.alive
    assert _register(coord, 2, "second", "dir-a")[1] is None  # SIGKILLed and started again at once
    assert coord.state.incarnations[2] == "second"
    assert coord.state.topics["t"].partitions[0].isr == [1, 3], "a restart is out of the ISR"


def test_processes_that_name_no_directory_count_as_before(nodes) -> None:  # noqa: ANN001
    """A broker of an older version names no directory: every new process is a restart."""
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    assert _register(coord, 2, "first", None)[1] is None
    assert _register(coord, 2, "second", "dir-b")[1] is None
    assert _register(coord, 2, "third", None)[1] is None
    assert coord.state.incarnations[2] == "third"


def test_the_current_directory_survives_a_coordinator_restart(nodes, tmp_path: Path) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    assert _register(coord, 2, "first", "dir-a")[1] is None
    state = StateStore(coord.store.dir).load()
    assert state.directories[2] == "dir-a" and state.incarnations[2] == "first"


def test_a_broker_names_its_directory_in_registration_and_heartbeats_and_keeps_it(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    directory = broker.guard.directory_id
    assert len(directory) == 32
    assert read_properties(broker.guard.path)["directory.id"] == directory, "not written before it registers"
    broker._register()
    [(_, header, _callback)] = [r for r in loop.requests if r[0] == P.BROKER_REGISTER]
    assert header["directory_id"] == directory
    assert broker.heartbeat_fields()["directory_id"] == directory
    loop.run_until_idle()
    assert coord.state.directories[1] == directory
    # the same directory has the same id in the next process; cluster id and version still kept
    again = MetadataGuard(broker.guard.path.parent, 1)
    assert again.directory_id == directory and again.cluster_id == coord.state.cluster_id


def test_a_guard_joining_a_cluster_writes_the_cluster_id_next_to_the_directory_id(tmp_path: Path) -> None:
    """meta.properties is now written before the broker joins (for its directory id): joining
    must still write the cluster id although the version it accepted is the one on disk."""
    guard = MetadataGuard(tmp_path, 1)
    assert read_properties(tmp_path / FILE_NAME).get("cluster.id", "") == ""

    class Md:
        cluster_id, state_id, version = "cluster-x", "state-1", -1
    assert guard.admit(Md())  # type: ignore[arg-type]
    assert read_properties(tmp_path / FILE_NAME)["cluster.id"] == "cluster-x"
    assert MetadataGuard(tmp_path, 1).cluster_id == "cluster-x"


def test_a_refused_broker_asks_again_slowly_as_the_same_process(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    coord._observe_incarnation(1, "the-other-process", "someone-else")
    loop.take_pushes()
    broker._registered = False
    broker.incarnation = first = "newcomer"  # this broker as a second process beside that one
    broker._register()
    answers = loop.serve(P.BROKER_REGISTER)
    assert answers[0][2] is not None and answers[0][2].code == P.DUPLICATE_BROKER_REGISTRATION
    loop.deliver(answers)
    assert not broker._registered and broker.incarnation == first, "it took a new identity to get in"
    assert "another live process" in broker.guard.last_refusal
    broker.reactor.run_once(0)
    assert not loop.requests, "asked again at once"
    broker.clock.advance(2_000)
    broker.reactor.run_once(0)
    assert [r[0] for r in loop.requests] == [P.BROKER_REGISTER]


# -- a refused process that had been broker 1 before (the twin that won the start race, or a
# paused process whose successor runs on another disk): it still holds that process's
# metadata and partitions, and its harm must end with the refusal ----------------------------
def _broker_1_replaced_from_another_directory(broker, coord, loop) -> str:  # noqa: ANN001
    """Broker 1 (``broker``, registered) is judged dead -- its heartbeats never reach the
    coordinator -- and a process of broker 1 from another data directory ("x", "dir-x") is
    taken. ``broker`` reads the metadata naming "x", registers again as a new process and is
    refused as a duplicate while "x" lives. Returns the process ``broker`` was."""
    was = broker.incarnation
    coord.alive.discard(1)
    coord._on_broker_down(1)
    assert _register(coord, 1, "x", "dir-x")[1] is None
    for frames in loop.take_pushes():
        loop.push(frames)
    assert broker.incarnation != was and not broker._registered, "it did not register again"
    broker.reactor.run_once(0)
    return was


def _refused(broker, loop) -> None:  # noqa: ANN001
    """``broker``'s registration is answered: refused as a duplicate."""
    answers = loop.serve(P.BROKER_REGISTER)
    assert answers[0][2] is not None and answers[0][2].code == P.DUPLICATE_BROKER_REGISTRATION
    loop.deliver(answers)


def _following_u_0_led_by_broker_2(broker, coord, loop) -> None:  # noqa: ANN001
    coord.state.topics["u"] = TopicState([PartitionState(2, 0, [2, 1, 3], [2, 3])], {"min.insync.replicas": 2})
    coord.commit()
    broker._register()
    loop.run_until_idle()
    assert broker.partitions[("u", 0)].role == "follower" and 2 in broker.fetchers


def _taken_once_the_other_is_dead(broker, coord, loop) -> None:  # noqa: ANN001
    """The process the coordinator took for broker 1 dies: the refused one, asking again, is
    taken (as a restart)."""
    coord.alive.discard(1)
    coord._on_broker_down(1)
    broker.clock.advance(2_000)
    broker.reactor.run_once(0)
    loop.deliver(loop.serve(P.BROKER_REGISTER))
    assert broker._registered and coord.state.incarnations[1] == broker.incarnation


def test_a_process_registering_again_reports_as_the_process_it_was(nodes) -> None:  # noqa: ANN001
    """Fenced (another broker leads an epoch it thought its own) it registers again as a new
    process, and until an answer its fetchers named that new process: one no metadata names,
    whose reports a leader counts. Here the coordinator had taken another process of broker 1
    ("x", another disk) -- the pushes saying so lost -- and refuses the new one as a duplicate:
    its log (its own directory) counted as broker 1's, broker 1 back in the ISR and the high
    watermark moving on it while "x" was behind ("x" elected: acknowledged records lost). It
    names the process the coordinator took it for last, which leaders list as replaced."""
    broker, coord, loop = nodes
    _following_u_0_led_by_broker_2(broker, coord, loop)
    was = broker.incarnation
    coord.alive.discard(1)
    coord._on_broker_down(1)
    assert _register(coord, 1, "x", "dir-x")[1] is None
    loop.take_pushes()  # lost
    broker._reregister_as_new_incarnation()  # as IsrProposer's on_fenced
    fetcher = broker.fetchers[2]
    fetcher.leader.client = client = RecordingClient()
    fetcher.leader.fetch([FetchInput("u", 0, 0, 1 << 20, 0, 0)], fetcher.settings, lambda *a: None)
    fetcher.leader.ack([broker.partitions[("u", 0)]])
    named = {client.sent[0][1]["incarnation"], client.oneway[0][1]["incarnation"]}
    replaced = ClusterMetadata.from_wire(coord.metadata_wire()).brokers[1].replaced
    assert named == {was} and was in replaced, f"reports name {named}, not a process leaders ignore ({replaced})"
    broker.reactor.run_once(0)
    _refused(broker, loop)
    # "x" dead, the refused process is taken (as a restart): its reports name it from then on
    _taken_once_the_other_is_dead(broker, coord, loop)
    assert broker.fetchers[2].leader.incarnation() == broker.incarnation


def test_a_refused_process_replicates_nothing_until_it_is_taken(nodes) -> None:  # noqa: ANN001
    """Reports naming the replaced process are ignored only while leaders list it replaced:
    the latest REPLACED_PROCESSES_KEPT. A twin left running while broker 1 restarted that many
    times was a process nobody listed again, its reports counted as broker 1's (and fetching, it
    kept its own log growing as if it were a replica). Refused, it follows and leads nothing."""
    broker, coord, loop = nodes
    _following_u_0_led_by_broker_2(broker, coord, loop)
    was = _broker_1_replaced_from_another_directory(broker, coord, loop)
    _refused(broker, loop)
    for i in range(P.REPLACED_PROCESSES_KEPT):  # "x" restarted (its own directory: each taken at once)
        assert _register(coord, 1, f"x-{i}", "dir-x")[1] is None
    assert was not in coord.metadata().brokers[1].replaced
    assert not broker.fetchers, "a refused process still fetches as broker 1"
    assert broker.partitions[("u", 0)].leader_id == -1
    broker._refresh_metadata()  # a snapshot installed meanwhile changes nothing
    loop.deliver(loop.serve(P.METADATA))
    assert not broker.fetchers and not broker.led_partitions
    coord.alive.discard(1)  # "x" dead: it is taken, and follows again
    coord._on_broker_down(1)
    broker.clock.advance(2_000)
    broker.reactor.run_once(0)
    loop.deliver(loop.serve(P.BROKER_REGISTER))
    assert broker._registered and list(broker.fetchers) == [2]
    assert broker.partitions[("u", 0)].leader_id == 2


def _refused_after_a_snapshot_naming_broker_1s_real_process(broker, coord, loop) -> None:  # noqa: ANN001
    """t-0 led by broker 1 (``broker``), ISR [1, 2, 3]. ``broker`` is paused: judged dead,
    broker 1 started on another disk ("x", "dir-x"), caught up and preferred leader again at a
    new epoch. The pushes are lost while ``broker`` is paused; the version beacon shows it a
    gap, and the snapshot it asks for (naming "x") is installed before it sees that it is not
    broker 1's process; it registers again and is refused as a duplicate."""
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    was = broker.incarnation
    coord.alive.discard(1)
    coord._on_broker_down(1)
    assert _register(coord, 1, "x", "dir-x")[1] is None
    coord.state.topics["t"].partitions[0].isr = [1, 2, 3]
    coord.commit()
    coord._restore_preferred_leaders()
    ps = coord.state.topics["t"].partitions[0]
    assert ps.leader == 1 and ps.isr == [1, 2, 3]
    loop.take_pushes()
    coord._publish_metadata()
    for frames in loop.take_pushes():
        loop.push(frames)
    loop.deliver(loop.serve(P.METADATA))
    assert broker.incarnation != was
    broker.reactor.run_once(0)
    answers = loop.serve(P.BROKER_REGISTER)
    assert answers[0][2] is not None and answers[0][2].code == P.DUPLICATE_BROKER_REGISTRATION
    loop.deliver(answers)


def test_a_refused_process_does_not_take_the_leadership_of_its_brokers_real_process(nodes) -> None:  # noqa: ANN001
    """The snapshot made it leader of t-0 at the current epoch -- the one "x" leads -- and
    refused, it dropped every push after: it led at that epoch for as long as "x" lived. A
    client that reached it (a connection made before broker 1 moved) had its writes taken on a
    log that is not broker 1's; its followers, fetching from "x", never reported to it, so it
    proposed them out of the ISR, at the current epochs: accepted, and "x"'s ISR shrank to
    itself (acks=all on one copy; produces refused under min.insync.replicas)."""
    broker, coord, loop = nodes
    _refused_after_a_snapshot_naming_broker_1s_real_process(broker, coord, loop)
    part = broker.partitions[("t", 0)]
    assert not part.is_leader, "a refused process leads its broker's partition at the real process's epoch"
    [[result]] = broker.core.append([AppendRequest(-1, [ProduceInput("t", 0, -1, batch(1))], None)])
    assert result.error == P.NOT_LEADER
    broker.clock.advance(broker.config.replication.replica_lag_time_max_ms + 1)
    broker._check_isr()
    loop.deliver(loop.serve(P.ALTER_ISR))
    assert coord.state.topics["t"].partitions[0].isr == [1, 2, 3]
    # "x" dead, it is taken: the registration's metadata makes it broker 1's process again
    _taken_once_the_other_is_dead(broker, coord, loop)
    ps = coord.state.topics["t"].partitions[0]
    assert part.leader_epoch == ps.leader_epoch and part.is_leader == (ps.leader == 1)


def test_the_coordinator_refuses_an_isr_change_from_another_process_of_the_leader(nodes) -> None:  # noqa: ANN001
    """A proposal at the current epochs, naming a process of the leader that is not its current
    one (a refused duplicate still leading in its own view): refused as a whole, nothing applied;
    naming the current process, or none (an older broker), it is judged as before."""
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    ps = coord.state.topics["t"].partitions[0]
    change = {"topic": "t", "partition": 0, "leader_epoch": ps.leader_epoch, "partition_epoch": ps.partition_epoch,
              "isr": [1]}
    with pytest.raises(RemoteError) as refused:
        coord._on_alter_isr(wire.Request([b"b"], P.ALTER_ISR, {"broker_id": 1, "incarnation": "twin", "parts": [change]}, []))
    assert refused.value.code == P.STALE_BROKER_EPOCH and ps.isr == [1, 2, 3]
    header = {"broker_id": 1, "incarnation": broker.incarnation, "parts": [change]}
    assert coord._on_alter_isr(wire.Request([b"b"], P.ALTER_ISR, header, []))["parts"][0]["error"] == 0
    assert ps.isr == [1]


def test_a_broker_on_a_full_disk_still_starts_and_stores_its_directory_id_later(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """meta.properties is written at construction for the directory id: on a full disk (an
    upgrade from before directory ids, a new directory) that raised StorageFull out of the
    broker's constructor -- a broker that started before could not start at all (a crash loop:
    no serving, no retention freeing space). It names its new id from the start (a twin is
    refused all the same), and ``persist`` stores that id once it can (a restart before then
    makes another: taken once this process is judged dead, as a broker on a new disk)."""
    from engines.api import StorageFull
    from nodes.broker import identity

    (tmp_path / FILE_NAME).write_text("version=1\ncluster.id=c-1\nbroker.id=1\nmetadata.version=7\n")
    real = identity.replace_file

    def full(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise StorageFull("write meta.properties: No space left on device")
    monkeypatch.setattr(identity, "replace_file", full)
    guard = MetadataGuard(tmp_path, 1)
    named = guard.directory_id
    assert (guard.cluster_id, guard.version_seen, len(named)) == ("c-1", 7, 32)
    assert "directory.id" not in read_properties(tmp_path / FILE_NAME)
    with pytest.raises(StorageFull):
        guard.persist()
    monkeypatch.setattr(identity, "replace_file", real)
    guard.persist()  # the timer, once there is space
    props = read_properties(tmp_path / FILE_NAME)
    assert props["directory.id"] == guard.directory_id == named
    assert (props["cluster.id"], props["metadata.version"]) == ("c-1", "7")
    assert MetadataGuard(tmp_path, 1).directory_id == guard.directory_id


def test_meta_properties_deleted_under_a_running_broker_is_written_again(tmp_path: Path) -> None:
    """As before directory ids: the next ``persist`` writes it back (with the same directory
    id), not only once the metadata version moves -- a restart in between came back with a new
    directory id (refused as another broker while its predecessor's session lasted) and no
    cluster id (metadata of any cluster taken)."""
    guard = MetadataGuard(tmp_path, 1)

    class Md:
        cluster_id, state_id, version = "cluster-x", "state-1", 3
    assert guard.admit(Md())  # type: ignore[arg-type]
    guard.persist()
    (tmp_path / FILE_NAME).unlink()
    guard.persist()
    again = MetadataGuard(tmp_path, 1)
    assert (again.directory_id, again.cluster_id, again.version_seen) == (guard.directory_id, "cluster-x", 3)


def test_a_process_naming_no_directory_in_its_heartbeat_is_a_restart(nodes) -> None:  # noqa: ANN001
    """An empty directory id names none (as in a registration): not a duplicate."""
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    assert _register(coord, 2, "first", "dir-a")[1] is None
    coord._on_heartbeat(_heartbeat(coord, 2, "second", ""))
    assert coord.state.incarnations[2] == "second" and 2 not in coord.state.directories
    assert broker.heartbeat_fields()["directory_id"] == broker.guard.directory_id != ""
