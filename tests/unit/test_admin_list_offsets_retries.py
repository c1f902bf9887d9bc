"""``Admin.list_offsets`` across a leadership change, and the gateway's offsets of one partition
while another's leader does not know its end yet -- through the real Admin and GatewayAgent
with scripted brokers (no cluster). A partition whose leader was just elected answers
offset_not_available until its followers fetch; asked again at the same (deposed) leader,
its not_leader reached the caller; and one such partition made every offsets answer of the
gateway wait for it and fail (503), those of the other partitions too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import fabric.client.admin as admin_mod
from fabric import protocol as P
from fabric.client.admin import EARLIEST, LATEST, Admin
from fabric.config import load_config
from fabric.errors import RemoteError
from nodes.gateway.agent import GatewayAgent
from nodes.local_cluster import GATEWAY_NODES, make_config
from tests.unit.fakes import metadata_of


class _Broker:
    """Answers each LIST_OFFSETS with ``answer(topic, partition, spec)`` -> (error, offset)."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.asked: list[list] = []

    def call(self, command: bytes, header: dict, *a: Any, **kw: Any) -> tuple[dict, list]:
        assert command == P.LIST_OFFSETS
        self.asked.append([p for _, p, _ in header["parts"]])
        return {"parts": [[t, p, *self.answer(t, p, spec)] for t, p, spec in header["parts"]]}, []


def _admin(monkeypatch: pytest.MonkeyPatch, metadatas: list, brokers: dict[int, _Broker], timeout_ms: int = 2000) -> Admin:
    monkeypatch.setattr(admin_mod, "LIST_OFFSETS_BACKOFF_S", 0.001)
    admin = Admin("tcp://127.0.0.1:1", timeout_ms=timeout_ms)
    seen = iter(metadatas)
    last: list = [None]

    def metadata(refresh: bool = True, deadline_s: float | None = None) -> Any:
        last[0] = next(seen, last[0])
        return last[0]
    admin.metadata = metadata  # type: ignore[method-assign]
    admin._client = lambda ep: brokers[int(ep.rsplit(":", 1)[1]) - 30_000]  # type: ignore[method-assign]
    return admin


def test_asked_again_at_the_leader_the_metadata_names_then(monkeypatch: pytest.MonkeyPatch) -> None:
    old_answers = iter([(P.OFFSET_NOT_AVAILABLE, 5), (P.NOT_LEADER, -1)])
    old = _Broker(lambda t, p, spec: next(old_answers))
    new = _Broker(lambda t, p, spec: (0, 10))
    admin = _admin(monkeypatch, [metadata_of({"t": 1}, brokers=2, leader=1), metadata_of({"t": 1}, brokers=2, leader=1),
                                 metadata_of({"t": 1}, brokers=2, leader=2)], {1: old, 2: new})
    assert admin.list_offsets("t", LATEST) == {0: 10}
    assert new.asked == [[0]]


def test_a_partition_that_stays_unknown_raises_after_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = _Broker(lambda t, p, spec: (P.OFFSET_NOT_AVAILABLE, 5) if p == 1 else (0, 10))
    admin = _admin(monkeypatch, [metadata_of({"t": 2})], {1: broker}, timeout_ms=50)
    with pytest.raises(RemoteError) as e:
        admin.list_offsets("t")
    assert e.value.code == P.OFFSET_NOT_AVAILABLE and e.value.retriable
    assert admin.list_offsets("t", partial=True) == {0: 10}, "partial: the known ones, at once"
    assert admin.list_offsets("t", partitions=[0]) == {0: 10}
    with pytest.raises(RemoteError) as e:
        admin.list_offsets("t", partitions=[2])
    assert e.value.code == P.UNKNOWN_TOPIC_OR_PARTITION


def test_the_gateways_offsets_of_a_partition_do_not_wait_for_another(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def answer(t: str, p: int, spec: int) -> tuple[int, int]:
        if spec == EARLIEST:
            return 0, 0
        return (0, 10) if p == 0 else (P.OFFSET_NOT_AVAILABLE, 3)
    broker = _Broker(answer)
    agent = GatewayAgent(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))),
                         make_admin=lambda: _admin(monkeypatch, [metadata_of({"t": 2})], {1: broker}, timeout_ms=60_000))
    assert agent.offsets("t", [0]) == {0: (0, 10)}
    assert agent.offsets("t", partial=True) == {0: (0, 10)}, "the v3 partition list shows -1 for partition 1"



def test_a_leader_that_has_not_opened_a_new_partition_yet_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A topic just made: the coordinator's metadata names its leaders before each has applied
    it and opened the partition, and the leader answers unknown_topic_or_partition for a while
    (milliseconds). That is the metadata's lag, not a topic that does not exist: asked again
    (answered once the leader knows it) -- and, ``partial``, left out (-1 in the gateway's
    partition list) -- instead of raised: the dashboard's partitions view of a topic it had just
    made was answered 404."""
    answers = iter([(P.UNKNOWN_TOPIC_OR_PARTITION, -1), (P.UNKNOWN_TOPIC_OR_PARTITION, -1)])
    broker = _Broker(lambda t, p, spec: next(answers, (0, 7)))
    admin = _admin(monkeypatch, [metadata_of({"t": 1})], {1: broker})
    assert admin.list_offsets("t", partial=True) == {}, "partial: left out at once, not raised"
    assert admin.list_offsets("t") == {0: 7}
    assert broker.asked == [[0], [0], [0]]


def test_a_topic_gone_from_fresh_metadata_is_unknown_when_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = _Broker(lambda t, p, spec: (P.UNKNOWN_TOPIC_OR_PARTITION, -1))
    admin = _admin(monkeypatch, [metadata_of({"t": 1}), metadata_of({"u": 1})], {1: broker})
    with pytest.raises(RemoteError) as e:  # deleted meanwhile: the next round's metadata says so
        admin.list_offsets("t")
    assert e.value.code == P.UNKNOWN_TOPIC_OR_PARTITION and broker.asked == [[0]]

class _Clock:
    """Stands in for the admin module's ``time``: sleeps advance it, and are counted."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps += 1
        self.now += s


def test_group_lag_with_an_offline_partition_answers_at_once_with_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """lag() shows an unknown end as such, but list_offsets waited its whole timeout for a
    partition without a leader (`loom group describe`, the gateway's lag, a worker held), then
    showed every partition of the topic unknown: it asks for what is known, at once."""
    from fabric.client.group_admin import GroupAdmin
    from fabric.metadata import BrokerInfo, ClusterMetadata, PartitionInfo, TopicInfo
    clock = _Clock()
    monkeypatch.setattr(admin_mod, "time", clock)
    md = ClusterMetadata(1, "test", {1: BrokerInfo(1, "127.0.0.1", 30_001, 31_001)}, {
        "t": TopicInfo("t", (PartitionInfo("t", 0, 1, 0, (1,), (1,)),
                             PartitionInfo("t", 1, -1, 0, (2,), ())))})  # its only replica is down
    admin = _admin(monkeypatch, [md], {1: _Broker(lambda t, p, spec: (0, 10))}, timeout_ms=10_000)
    ga = GroupAdmin(admin)
    ga.describe = lambda group: {"members": [], "offsets": [["t", 0, 4], ["t", 1, 4]]}  # type: ignore[method-assign]
    rows = ga.lag("g")
    assert clock.sleeps == 0, "lag waited for a partition without a leader"
    assert [(r.partition, r.log_end_offset) for r in rows] == [(0, 10), (1, -1)]


def test_asking_again_keeps_within_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-ask started just before the deadline got the whole timeout and two retries again:
    the old leader answering not_leader and the new one silent took timeout + 3 x timeout."""
    from fabric.errors import RequestTimeout
    clock = _Clock()

    class Silent:  # what BlockingClient.call does against a peer that does not answer
        def call(self, command: bytes, header: dict, *a: Any, timeout_ms: int = 5000, retries: int = 0,
                 **kw: Any) -> tuple[dict, list]:
            clock.now += timeout_ms / 1000 * (1 + retries)
            raise RequestTimeout("no reply")
    deposed = _Broker(lambda t, p, spec: (P.NOT_LEADER, -1))
    admin = _admin(monkeypatch, [metadata_of({"t": 1}, brokers=2, leader=1), metadata_of({"t": 1}, brokers=2, leader=2)],
                   {1: deposed, 2: Silent()}, timeout_ms=200)  # type: ignore[dict-item]
    monkeypatch.setattr(admin_mod, "time", clock)
    with pytest.raises(RequestTimeout):
        admin.list_offsets("t")
    assert clock.now <= 0.2 + 0.01, f"list_offsets(timeout_ms=200) took {clock.now:.2f} s"


def _offline_then_led(after_s: float | None, clock: _Clock) -> Any:
    """Metadata of topic t (partition 0 led by broker 1; partition 1 without a leader until
    ``after_s`` on ``clock``, then led by 1; None: never -- its only replica stays down)."""
    from fabric.metadata import BrokerInfo, ClusterMetadata, PartitionInfo, TopicInfo
    brokers = {1: BrokerInfo(1, "127.0.0.1", 30_001, 31_001)}

    def metadata(refresh: bool = True, deadline_s: float | None = None) -> ClusterMetadata:
        led = after_s is not None and clock.now >= after_s
        return ClusterMetadata(1, "test", brokers, {"t": TopicInfo("t", (
            PartitionInfo("t", 0, 1, 0, (1,), (1,)),
            PartitionInfo("t", 1, 1 if led else -1, 1 if led else 0, (1,), (1,) if led else ())))})
    return metadata


@pytest.mark.parametrize("election_s, answered", [(None, False), (1.0, True)], ids=["offline", "election"])
def test_leader_wait_ms_bounds_the_wait_for_a_partition_without_a_leader(monkeypatch: pytest.MonkeyPatch,
                                                                         election_s: float | None,
                                                                         answered: bool) -> None:
    """An offline partition held every caller for the whole timeout (the gateway's admin: 5 s,
    a worker held, then 503); ``leader_wait_ms`` bounds that wait while an election of a second
    still gets its answer."""
    clock = _Clock()
    admin = _admin(monkeypatch, [], {1: _Broker(lambda t, p, spec: (0, 10))}, timeout_ms=10_000)
    admin.metadata = _offline_then_led(election_s, clock)  # type: ignore[method-assign]
    monkeypatch.setattr(admin_mod, "time", clock)
    if answered:
        assert admin.list_offsets("t", leader_wait_ms=1500) == {0: 10, 1: 10}
    else:
        with pytest.raises(RemoteError) as e:
            admin.list_offsets("t", leader_wait_ms=1500)
        assert e.value.code == P.LEADER_NOT_AVAILABLE and "t-1" in str(e.value)
    assert clock.now <= 1.5 + 0.01, f"waited {clock.now:.2f} s for a leader"
    clock.now, clock.sleeps = 0.0, 0
    with pytest.raises(RemoteError) as e:  # 0: no wait at all (the first round only)
        admin.list_offsets("t", leader_wait_ms=0)
    assert e.value.code == P.LEADER_NOT_AVAILABLE and (clock.now, clock.sleeps) == (0.0, 0)


def test_the_gateways_offsets_of_an_offline_partition_answer_503_soon(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The v2 partition-offsets route and the records browser ask for one partition's offsets:
    without a leader they held a worker for the gateway's admin timeout (5 s) before the 503."""
    from nodes.gateway import agent as agent_mod
    from nodes.gateway.translate import ClusterError
    clock = _Clock()
    admin = _admin(monkeypatch, [], {1: _Broker(lambda t, p, spec: (0, 10))}, timeout_ms=agent_mod.ADMIN_TIMEOUT_MS)
    admin.metadata = _offline_then_led(None, clock)  # type: ignore[method-assign]
    monkeypatch.setattr(admin_mod, "time", clock)
    agent = GatewayAgent(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))), make_admin=lambda: admin)
    assert agent.offsets("t", [0]) == {0: (10, 10)}
    with pytest.raises(ClusterError) as e:
        agent.offsets("t", [1])
    assert e.value.kind == "unavailable", e.value
    assert clock.now <= 2.0, f"the gateway waited {clock.now:.2f} s for a partition without a leader"
    clock.now = 0.0  # v3's reset of a group's offsets plans from every partition's offsets too
    with pytest.raises(ClusterError) as e:
        agent.reset_offsets("g", "t", False, to_latest=True)
    assert e.value.kind == "unavailable", e.value
    assert clock.now <= 2.0, f"the offsets reset waited {clock.now:.2f} s for a partition without a leader"


# -- a leader that does not answer: killed or paused while the metadata still names it ----------
COORDINATOR_ID = 9  # the fake coordinator's place in ``_admin``'s brokers (port 30_009)


class _Coordinator:
    """Answers METADATA with ``metadata()``."""

    def __init__(self, metadata: Any) -> None:
        self.metadata = metadata
        self.asked = 0

    def call(self, command: bytes, header: dict, *a: Any, **kw: Any) -> tuple[dict, list]:
        assert command == P.METADATA
        self.asked += 1
        return {"metadata": self.metadata().to_wire()}, []


class _Unanswering:
    """What BlockingClient.call does at a leader that will not answer: it fails at once with
    ConnectionLost (``lost``: killed with the request), or lets the clock run in steps of
    GIVE_UP_CHECK_MS, asking ``give_up``, to the call's deadline (paused, or killed before)."""

    def __init__(self, clock: _Clock, lost: bool = False) -> None:
        self.clock = clock
        self.lost = lost
        self.asked = 0

    def call(self, command: bytes, header: dict, *a: Any, timeout_ms: int = 5000, retries: int = 0,
             give_up: Any = None, **kw: Any) -> tuple[dict, list]:
        from fabric.errors import ConnectionLost, RequestTimeout
        from fabric.blocking_client import GIVE_UP_CHECK_MS
        for _ in range(1 + retries):
            self.asked += 1
            if self.lost:
                raise ConnectionLost("connection lost before the reply")
            deadline = self.clock.now + timeout_ms / 1000
            while self.clock.now < deadline:
                self.clock.now = min(deadline, self.clock.now + GIVE_UP_CHECK_MS / 1000)
                if give_up is not None and give_up():
                    raise RequestTimeout("gave up waiting: it is down")
        raise RequestTimeout(f"no reply within {timeout_ms} ms")


def _led_by(leader: int, coordinator: bool = True) -> Any:
    import dataclasses
    md = metadata_of({"t": 1}, brokers=2, leader=leader)
    return dataclasses.replace(md, coordinator="tcp://127.0.0.1:30009" if coordinator else "")


def test_a_leader_killed_with_the_request_is_not_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its request lost with it, the call tried it twice more (the same dead endpoint, a whole
    timeout each) and failed: the partition is asked again where the metadata points next."""
    clock = _Clock()
    dead = _Unanswering(clock, lost=True)
    new = _Broker(lambda t, p, spec: (0, 10))
    brokers: dict = {1: dead, 2: new}
    admin = _admin(monkeypatch, [_led_by(1), _led_by(2)], brokers, timeout_ms=10_000)
    monkeypatch.setattr(admin_mod, "time", clock)
    assert admin.list_offsets("t", LATEST, leader_wait_ms=1500) == {0: 10}
    assert (dead.asked, new.asked) == (1, [[0]])
    assert clock.now < 0.5, f"took {clock.now:.2f} s"


@pytest.mark.parametrize("named_s", [0.4, None], ids=["killed", "paused"])
def test_a_silent_leader_is_waited_for_while_it_leads_within_the_wait(monkeypatch: pytest.MonkeyPatch,
                                                                      named_s: float | None) -> None:
    """A leader that died (or stopped) without a word, the metadata still naming it: its
    request waited three times the Admin's whole timeout (30 s), whatever ``leader_wait_ms``
    said. The coordinator is asked meanwhile: once it names another leader (a killed one's
    election, ``named_s``) that one is asked; while it names the silent one (a paused broker
    until its session times out) the call ends with the wait and one last try."""
    from fabric.errors import RequestTimeout
    clock = _Clock()
    silent = _Unanswering(clock)
    new = _Broker(lambda t, p, spec: (0, 10))

    def now_led() -> Any:
        return _led_by(2 if named_s is not None and clock.now >= named_s else 1)
    coordinator = _Coordinator(now_led)
    admin = _admin(monkeypatch, [], {1: silent, 2: new, COORDINATOR_ID: coordinator},  # type: ignore[dict-item]
                   timeout_ms=10_000)
    admin.metadata = lambda refresh=True, deadline_s=None: now_led()  # type: ignore[method-assign]
    admin._metadata = now_led()
    monkeypatch.setattr(admin_mod, "time", clock)
    wait_s = 1.5
    if named_s is not None:
        assert admin.list_offsets("t", LATEST, leader_wait_ms=int(wait_s * 1000)) == {0: 10}
        assert clock.now <= named_s + (admin_mod.LIST_OFFSETS_LEADER_CHECK_MS + 100) / 1000 + 0.1, clock.now
    else:
        with pytest.raises(RequestTimeout) as e:
            admin.list_offsets("t", LATEST, leader_wait_ms=int(wait_s * 1000))
        assert "leader broker 1" in str(e.value)
        assert clock.now <= wait_s + admin_mod.LIST_OFFSETS_TRY_MS_MIN / 1000 + 0.1, f"took {clock.now:.2f} s"
        assert coordinator.asked >= 2, "the coordinator was not asked whether broker 1 still leads"


def _offline(isr_alive: bool) -> Any:
    """Topic t: partition 0 led by broker 1, partition 1 without a leader, its only in-sync
    replica broker 2 (alive or not in the metadata)."""
    from fabric.metadata import BrokerInfo, ClusterMetadata, PartitionInfo, TopicInfo
    brokers = {1: BrokerInfo(1, "127.0.0.1", 30_001, 31_001), 2: BrokerInfo(2, "127.0.0.1", 30_002, 31_002, isr_alive)}
    return ClusterMetadata(1, "test", brokers, {"t": TopicInfo("t", (
        PartitionInfo("t", 0, 1, 0, (1,), (1,)), PartitionInfo("t", 1, -1, 3, (2,), (2,))))})


def test_an_offline_partition_fails_at_once_when_the_caller_bounds_its_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """No leader and no in-sync replica alive: no election comes until a broker is back, and
    `loom group reset-offsets` (and the gateway) waited the whole wait for it first."""
    clock = _Clock()
    monkeypatch.setattr(admin_mod, "time", clock)
    admin = _admin(monkeypatch, [_offline(isr_alive=False)], {1: _Broker(lambda t, p, spec: (0, 10))},
                   timeout_ms=10_000)
    with pytest.raises(RemoteError) as e:
        admin.list_offsets("t", leader_wait_ms=5000)
    assert e.value.code == P.LEADER_NOT_AVAILABLE and "t-1 is offline" in str(e.value)
    assert (clock.now, clock.sleeps) == (0.0, 0)
    assert admin.list_offsets("t", leader_wait_ms=5000, partial=True) == {0: 10}
    with pytest.raises(RemoteError):  # not bounded: waited for, as a broker's restart may bring it back
        admin.list_offsets("t")
    assert clock.now >= 10.0
    clock.now = 0.0  # an in-sync replica alive: being elected, waited for
    admin.metadata = lambda refresh=True, deadline_s=None: _offline(isr_alive=True)  # type: ignore[method-assign]
    with pytest.raises(RemoteError) as e:
        admin.list_offsets("t", leader_wait_ms=1500)
    assert "has no leader" in str(e.value) and 1.5 <= clock.now <= 1.51


def test_a_slow_leader_still_leading_is_waited_for_not_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A healthy leader slowed (a long GC pause, a busy machine) answers late: while the
    coordinator names it, the try waits for it -- no short per-try timeout fails it, and no
    second request joins the first."""
    from fabric.blocking_client import GIVE_UP_CHECK_MS
    clock = _Clock()
    slow_s = 3.0

    class Slow(_Broker):
        def call(self, command: bytes, header: dict, *a: Any, give_up: Any = None, **kw: Any) -> tuple[dict, list]:
            while clock.now < slow_s:
                clock.now += GIVE_UP_CHECK_MS / 1000
                assert give_up is None or not give_up(), "gave up on the leader the coordinator names"
            return super().call(command, header)
    slow = Slow(lambda t, p, spec: (0, 10))
    coordinator = _Coordinator(lambda: _led_by(1))
    admin = _admin(monkeypatch, [_led_by(1)], {1: slow, COORDINATOR_ID: coordinator}, timeout_ms=10_000)
    admin._metadata = _led_by(1)
    monkeypatch.setattr(admin_mod, "time", clock)
    assert admin.list_offsets("t", LATEST) == {0: 10}
    assert slow.asked == [[0]] and coordinator.asked >= 2


@pytest.mark.parametrize("answered_first, all_led", [(False, False), (True, False), (False, True)],
                         ids=["stopped", "stopped-after-its-first-answer", "stopped-every-partition-led"])
def test_a_stopped_coordinator_does_not_stretch_the_bound(monkeypatch: pytest.MonkeyPatch,
                                                          answered_first: bool, all_led: bool) -> None:
    """``leader_wait_ms`` bounded the waits for a leader, but not the metadata asks of the call:
    each asked a stopped (SIGSTOP) coordinator for its own timeout (3 s) before a broker's copy,
    so a call bounded to 1.5 s took over 3 s -- at its start, or at a round's refresh while a
    partition waits for its election. Every ask is cut to what is left of the bound: the call
    ends within it, a try's minimum included. The coordinator's ask is not given all of it: a
    broker's copy, asked next, answers a call whose partitions all have a leader (cut to what
    the coordinator left, nothing, such a call failed while the coordinator was down)."""
    import dataclasses

    import fabric.client.bootstrap as bootstrap_mod
    from fabric.errors import CodedError, RequestTimeout
    clock = _Clock()
    monkeypatch.setattr(admin_mod, "time", clock)
    monkeypatch.setattr(bootstrap_mod, "time", clock, raising=False)
    coordinator = "tcp://127.0.0.1:30009"
    md = dataclasses.replace(_offline_then_led(0, clock)() if all_led else _offline(isr_alive=True),
                             coordinator=coordinator)  # unless all_led, t-1 waits for an election
    asked = {coordinator: 0}

    class MetadataClient:
        """``fetch_metadata``'s client: the coordinator stopped (silent to the timeout) once it
        has answered, if ``answered_first``; a broker answering with its copy."""

        def __init__(self, ctx: Any, endpoint: str, *a: Any, **kw: Any) -> None:
            self.endpoint = endpoint

        def call(self, command: bytes, header: dict | None = None, *a: Any, timeout_ms: int = 5000,
                 **kw: Any) -> tuple[dict, list]:
            assert command == P.METADATA
            asked[self.endpoint] = asked.get(self.endpoint, 0) + 1
            if self.endpoint == coordinator and not (answered_first and asked[coordinator] == 1):
                clock.now += timeout_ms / 1000
                raise RequestTimeout(f"no reply within {timeout_ms} ms")
            return {"metadata": md.to_wire()}, []

        def late_reply(self, timeout_ms: int = 0) -> tuple[dict, list]:
            clock.now += timeout_ms / 1000  # the stopped coordinator's answer never comes
            raise RequestTimeout(f"no reply within {timeout_ms} ms")

        def close(self) -> None:
            pass
    monkeypatch.setattr(bootstrap_mod, "BlockingClient", MetadataClient)
    admin = Admin(f"{coordinator},tcp://127.0.0.1:30001", timeout_ms=10_000)
    brokers: dict = {1: _Broker(lambda t, p, spec: (0, 10)), COORDINATOR_ID: _Unanswering(clock)}
    admin._client = lambda ep: brokers[int(ep.rsplit(":", 1)[1]) - 30_000]  # type: ignore[method-assign]
    admin._metadata = md
    wait_s = 1.5
    if all_led:
        assert admin.list_offsets("t", LATEST, leader_wait_ms=int(wait_s * 1000)) == {0: 10, 1: 10}
    else:
        with pytest.raises(CodedError) as e:
            admin.list_offsets("t", LATEST, leader_wait_ms=int(wait_s * 1000))
        assert e.value.retriable, e.value
    bound_s = wait_s + admin_mod.LIST_OFFSETS_TRY_MS_MIN / 1000
    assert clock.now <= bound_s + 0.01, f"list_offsets(leader_wait_ms=1500) took {clock.now:.2f} s"
    assert asked[coordinator] >= 1 + answered_first, "the stopped coordinator was not asked"
