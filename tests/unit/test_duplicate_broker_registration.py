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

from fabric import protocol as P
from fabric import wire
from fabric.errors import RemoteError
from nodes.broker.identity import FILE_NAME, MetadataGuard, read_properties
from nodes.coordinator.store import StateStore
from tests.unit.builders_broker import start


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
