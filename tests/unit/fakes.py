"""Small fakes and builders shared by the unit tests, once each.

The node logic takes its clock, reactor, server and RPC clients injected, so unit tests build
the real objects (Partition, ParkingLot, ReplicaFetcher, GroupCoordinator, Sender, …) with
these in place of sockets: a reactor driven by ``fabric.clock.ManualClock``, a server that
records replies, an RPC client that records requests and lets the test answer them.

Whole-node builders are in ``builders_broker.py``, the segment engine's in
``builders_segment.py``, the producer service's in ``builders_producer_service.py``; fixtures
shared by several modules in ``conftest.py``. Test modules import helpers from these, never
from one another.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import os
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import zmq
from werkzeug.serving import make_server

from engines import batch as B
from fabric import protocol as P
from fabric.apikeys import ROLES, generate_key, hash_key
from fabric import wire
from fabric.clock import Clock, ManualClock
from fabric.config import (GatewayConfig, LimitsConfig, LoomConfig, SecurityConfig, StorageConfig, TopicDefaults,
                           parse_config)
from fabric.metadata import BrokerInfo, ClusterMetadata, PartitionInfo, TopicInfo
from fabric.reactor import Reactor
from fabric.records import build_batch, decode_batches
from fabric.rpc import DEFER
from nodes.broker.core import BrokerCore
from nodes.broker.fetcher import FetchSettings, LeaderEndpoint, ReplicaFetcher
from nodes.broker.handlers import RequestHandlers
from nodes.broker.partition import Partition
from nodes.broker.partition_dirs import PartitionDirs
from nodes.broker.producer_snapshots import SNAPSHOT_SUFFIX
from nodes.coordinator import snapshots as S
from nodes.coordinator.group_readings import parse_reading_key
from nodes.coordinator.groups import GroupCoordinator
from nodes.coordinator.offsets import OFFSETS_TOPIC
from nodes.coordinator.offsets_client import OffsetsTopicClient
from nodes.coordinator.offsets_loader import FENCE_KEY, decode_record
from nodes.coordinator.store import ClusterState, PartitionState, StateStore, TopicState
from webui.app import create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway
from webui.errors import ClusterError
from webui.events import EventHub

BASE_TIMESTAMP_MS = 1_700_000_000_000


def make_batch(n: int = 3, pid: int = -1, epoch: int = -1, seq: int = -1, tag: str = "v",
               timestamp_ms: int = BASE_TIMESTAMP_MS, *, keys: bool = True) -> bytes:
    """A client batch of ``n`` records (keys k0.. or, without ``keys``, none; values {tag}0..;
    timestamps from ``timestamp_ms`` on), optionally idempotent. The one batch builder of the
    unit tests: a test names what its batches mean with a one-line wrapper."""
    recs = [(timestamp_ms + i, f"k{i}".encode() if keys else None, f"{tag}{i}".encode(), None) for i in range(n)]
    return build_batch(recs, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def padded_batch(n: int = 3, pid: int = -1, seq: int = -1, tag: str = "v") -> bytes:
    """A client batch of ``n`` records of ~40-byte values, so that a few dozen fill a 4 KiB
    segment (``broker_core``'s); an idempotent producer's (epoch 0) when ``pid`` >= 0."""
    recs = [(BASE_TIMESTAMP_MS + i, f"k{i}".encode(), f"{tag}{i}".encode() * 20, None) for i in range(n)]
    return build_batch(recs, producer_id=pid, producer_epoch=0 if pid >= 0 else -1, base_sequence=seq)


def drop_producer_snapshots(directory: Path) -> None:
    """Delete every producer-state snapshot under ``directory``: the data directory as a broker
    from before snapshots (or one that crashed before its first) left it."""
    for snapshot in directory.rglob("*" + SNAPSHOT_SUFFIX):
        snapshot.unlink()


def as_leader_wrote(data: bytes, base_offset: int, epoch: int) -> bytes:
    """``data`` as a leader wrote it: numbered from ``base_offset``, in leader epoch ``epoch``."""
    buf = bytearray(data)
    B.set_base_offset(buf, base_offset)
    B.set_leader_epoch(buf, epoch)
    return bytes(buf)


def descriptor_open(fd: int) -> bool:
    """Whether descriptor number ``fd`` is open in this process (a closed one fails fstat)."""
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


@contextmanager
def close_reports_eio(fd: int) -> Iterator[None]:
    """Within: ``os.close(fd)`` closes it and then reports EIO, once (as a network file
    system's late writeback error does: the number is released all the same, and the next
    open may take it); every other close goes as ever."""
    real_close = os.close
    failing = {fd}

    def close(n: int) -> None:
        real_close(n)
        if n in failing:
            failing.discard(n)
            raise OSError(errno.EIO, "Input/output error")

    os.close = close
    try:
        yield
    finally:
        os.close = real_close


@dataclass(order=True)
class _Timer:
    due_ms: int
    seq: int
    fn: Callable[[], Any] = field(compare=False)
    interval_ms: int = field(default=0, compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class FakeReactor:
    """The reactor's timer API on a ManualClock: ``advance(ms)`` runs what fell due, in order."""

    def __init__(self, clock: ManualClock | None = None) -> None:
        self.clock = clock or ManualClock()
        self._timers: list[_Timer] = []
        self._seq = itertools.count()

    def call_later(self, delay_ms: int, fn: Callable[[], Any]) -> _Timer:
        t = _Timer(self.clock.now_ms() + max(delay_ms, 0), next(self._seq), fn)
        heapq.heappush(self._timers, t)
        return t

    def call_every(self, interval_ms: int, fn: Callable[[], Any]) -> _Timer:
        t = _Timer(self.clock.now_ms() + interval_ms, next(self._seq), fn, interval_ms)
        heapq.heappush(self._timers, t)
        return t

    @property
    def pending(self) -> int:
        return sum(1 for t in self._timers if not t.cancelled)

    def run_due(self) -> int:
        """Run every timer due now; returns how many ran."""
        ran = 0
        while self._timers and self._timers[0].due_ms <= self.clock.now_ms():
            t = heapq.heappop(self._timers)
            if t.cancelled:
                continue
            if t.interval_ms:
                t.due_ms += t.interval_ms
                t.seq = next(self._seq)
                heapq.heappush(self._timers, t)
            t.fn()
            ran += 1
        return ran

    def advance(self, ms: int) -> int:
        self.clock.advance(ms)
        return self.run_due()

    def run_once(self, timeout_ms_max: int = 1000) -> None:
        """A pass that found no message: waits its whole timeout (the clock advances) and runs
        the timers that fell due."""
        self.advance(timeout_ms_max)


class RecordingServer:
    """Stands in for an RpcServer: records routes and every reply."""

    def __init__(self) -> None:
        self.routes: dict[bytes, Callable] = {}
        self.replies: list[tuple[wire.Request, dict, list]] = []

    def route(self, command: bytes, fn: Callable) -> None:
        self.routes[command] = fn

    def reply(self, req: wire.Request, header: dict | None = None, payloads: Any = ()) -> None:
        self.replies.append((req, header or {}, list(payloads)))

    def reply_error(self, req: wire.Request, code: int, message: str, **extra: Any) -> None:
        self.replies.append((req, dict(extra, error=code, message=message), []))

    def answer(self, req: wire.Request) -> dict:
        """The one reply to ``req`` (fails on none or several)."""
        found = [h for r, h, _ in self.replies if r is req]
        assert len(found) == 1, f"{len(found)} replies to one request"
        return found[0]


class RecordingClient:
    """Stands in for an RpcClient: keeps each request with its callback, for the test to answer."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, dict, list, Callable]] = []
        self.oneway: list[tuple[bytes, dict, list]] = []
        self.unanswered: list[int] = []  # indexes into ``sent``
        self.cancelled: list[int] = []   # indexes into ``sent``
        self.closed = False
        self.refuse_oneway = False
        self.hold_oneway = False  # one-way messages wait to be written (write_oneway, lose_oneway)
        self.unwritten: list[Callable | None] = []  # their on_written hooks, oldest first

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        """Returns the request id: its index in ``sent`` plus one."""
        self.unanswered.append(len(self.sent))
        self.sent.append((command, header, list(payloads), callback))
        return len(self.sent)

    def cancel(self, request_id: int) -> bool:
        """Forget a request (as RpcClient.cancel): ``answer`` then finds it cancelled."""
        i = request_id - 1
        if i not in self.unanswered:
            return False
        self.unanswered.remove(i)
        self.cancelled.append(i)
        return True

    def send_oneway(self, command: bytes, header: dict, payloads: Any = (),
                    on_written: Callable[[bool], None] | None = None) -> bool:
        """Kept in ``oneway``; refused (False) while ``refuse_oneway``. Written to the kernel
        at once (``on_written(True)``), or while ``hold_oneway`` only when the test says so:
        ``write_oneway`` (written) or ``lose_oneway`` (dropped with the connection)."""
        if self.refuse_oneway:
            return False
        self.oneway.append((command, header, list(payloads)))
        if self.hold_oneway:
            self.unwritten.append(on_written)
        elif on_written is not None:
            on_written(True)
        return True

    def write_oneway(self, n: int | None = None) -> None:
        """The ``n`` oldest held one-way messages (all: None) reach the kernel."""
        self._settle_oneway(len(self.unwritten) if n is None else n, True)

    def lose_oneway(self) -> None:
        """Every held one-way message is dropped unwritten (a lost connection)."""
        self._settle_oneway(len(self.unwritten), False)

    def _settle_oneway(self, n: int, written: bool) -> None:
        settled, self.unwritten = self.unwritten[:n], self.unwritten[n:]
        for hook in settled:
            if hook is not None:
                hook(written)

    def fail_all(self, error: Any) -> None:
        """Answer every request not yet answered with ``error`` (as RpcClient.fail_all)."""
        pending, self.unanswered = self.unanswered, []
        for i in pending:
            self.sent[i][3](None, [], error)

    def of(self, command: bytes) -> list[tuple[bytes, dict, list, Callable]]:
        return [s for s in self.sent if s[0] == command]

    def answer_last(self, command: bytes, header: dict | None, payloads: list | None = None, err: Any = None) -> None:
        """Call the callback of the last ``command`` sent, as a reply (or an error) would."""
        i = max(i for i, s in enumerate(self.sent) if s[0] == command)
        if i in self.unanswered:
            self.unanswered.remove(i)
        self.sent[i][3](header, payloads or [], err)

    def close(self) -> None:
        self.closed = True


def request(command: bytes, payloads: list[bytes] | None = None, **header: Any) -> wire.Request:
    """A decoded request as a handler receives it (from a client identity b"client")."""
    return wire.Request([b"client"], command, header, payloads or [])


class ScriptedCoordinatorLink:
    """Stands in for a group consumer's ``CoordinatorLink``: ``answer(command, header)`` returns
    the reply header or raises (a ``RemoteError``); every call is kept in ``calls``."""

    def __init__(self, answer: Callable[[bytes, dict], dict]) -> None:
        self.answer = answer
        self.calls: list[tuple[bytes, dict]] = []
        self.connected = True

    def call(self, command: bytes, header: dict, **_timeouts: int) -> dict:
        self.calls.append((command, dict(header)))
        return self.answer(command, header)

    def request(self, command: bytes, header: dict, *, callback: Callable, timeout_ms: int = 0) -> None:
        try:
            reply = self.call(command, header)
        except Exception as e:  # the scripted error goes to the callback, as a reply would
            callback(None, [], e)
        else:
            callback(reply, [], None)

    def commands(self) -> list[bytes]:
        return [c for c, _ in self.calls]

    def close(self) -> None:
        self.connected = False


class NoHeartbeat:
    """A group consumer's heartbeat thread that never runs (``heartbeat_factory=NoHeartbeat.make``)."""

    @classmethod
    def make(cls, member: Any, settings: Any, endpoint: Callable[[], str]) -> "NoHeartbeat":
        return cls()

    def stop(self) -> None:
        pass


class FakeGroupContext:
    """Stands in for the coordinator node as the groups' and offsets' ``GroupContext``
    (nodes/coordinator/context.py): a FakeReactor, a RecordingServer, the cluster state, brokers
    1..n on loopback. ``commit()`` and ``save_state()`` count, and write ``store`` if given."""

    def __init__(self, state: Any, *, brokers: int = 3, alive: tuple[int, ...] | None = None,
                 store: Any = None, start_ms: int = 10_000) -> None:
        self.reactor = FakeReactor(ManualClock(start_ms))
        self.clock = self.reactor.clock
        self.server = RecordingServer()
        self.counters: Counter[str] = Counter()
        self.state = state
        self.brokers = {b: BrokerInfo(b, "127.0.0.1", 30_000 + b, 31_000 + b) for b in range(1, brokers + 1)}
        self.alive = set(self.brokers if alive is None else alive)
        self.store = store
        self.commits = 0
        self.saves = 0

    def commit(self) -> None:
        self.commits += 1
        self.save_state()

    def save_state(self) -> None:
        self.saves += 1
        if self.store is not None:
            self.store.save(self.state)

    def electable(self) -> set[int]:
        """Every alive broker: heard, as in a running cluster."""
        return set(self.alive)


# -- the group coordinator and its offsets store on a FakeGroupContext ------------------------------
def two_partition_state() -> ClusterState:
    """Topic ``t``: two partitions led by broker 1, replicas and ISR [1, 2, 3]."""
    return ClusterState(topics={"t": TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3]) for _ in range(2)])})


def group_coordinator(context: FakeGroupContext, client: RecordingClient | None = None) -> tuple[GroupCoordinator, RecordingClient]:
    """The real GroupCoordinator (with its OffsetStore and OffsetsLoader) on ``context``, every
    broker request going to one RecordingClient."""
    client = client or RecordingClient()
    return GroupCoordinator(context, OffsetsTopicClient(context, lambda endpoint: client)), client


def offsets_records(payload: bytes, base_offset: int = 0) -> list:
    """The records of one append to the offsets topic, as the broker would number them."""
    data = bytearray(payload)
    B.set_base_offset(data, base_offset)
    return decode_batches(OFFSETS_TOPIC, 0, bytes(data))


def offsets_log_table(batches: Iterable[bytes], epochs: bool = False) -> dict[str, dict[tuple[str, int], Any]]:
    """group -> (topic, partition) -> offset (``epochs``: (offset, committed leader epoch)): what
    a coordinator's load rebuilds from these appends to the offsets topic, read in order
    (commits, tombstones, snapshot records; the groups' readings,
    nodes/coordinator/group_readings.py, left out)."""
    rebuilt: dict[str, dict[tuple[str, int], Any]] = {}
    for r in (r for b in batches for r in offsets_records(b, 0)):
        if parse_reading_key(r.key) is not None:
            continue
        for group, topic, p, offset, _m, _ts, _id, epoch in decode_record(r.key, r.value):
            table = rebuilt.setdefault(group, {})
            if offset is None:
                table.pop((topic, p), None)
            else:
                table[(topic, p)] = (offset, epoch) if epochs else offset
    return {g: t for g, t in rebuilt.items() if t}


def loaded_group_coordinator(store_dir: Any) -> tuple[GroupCoordinator, FakeGroupContext, RecordingClient]:
    """A group coordinator with the offsets topic, loaded from three empty offsets partitions,
    each of which got (and acknowledged) its first, empty snapshot; the client's log cleared."""
    context = FakeGroupContext(two_partition_state(), store=StateStore(store_dir))
    gc, client = group_coordinator(context)
    gc.offsets.ensure_topic()
    gc.offsets.start_loading()
    for q, (_, _, _, cb) in enumerate(client.of(P.FETCH)):  # every offsets partition is empty
        cb({"parts": [[OFFSETS_TOPIC, q, 0, 0, 0, 0, None]]}, [b""], None)
    assert gc.offsets.loaded
    for _, h, _, cb in client.of(P.PRODUCE):  # each partition's fence (nodes/coordinator/offsets_producer.py)
        cb({"results": [[0, 0, "", 0]]}, [], None)
    gc.tick()  # read without a snapshot: each partition gets its first (empty) one at once
    snaps = client.of(P.PRODUCE)[3:]
    assert len(snaps) == 3
    for _, _, payloads, cb in snaps:
        (record,) = offsets_records(payloads[0])
        assert S.parse_key(record.key)[1:] == (0, True) and S.decode_entries(record.value) == []
        cb({"results": [[0, 0, "", 0]]}, [], None)
    assert sorted(context.state.offsets_snapshots) == [0, 1, 2]
    client.sent.clear()
    client.unanswered.clear()
    return gc, context, client


def is_fence(payload: bytes) -> bool:
    """An append to the offsets topic that begins a producer epoch (nodes/coordinator/offsets_producer.py)."""
    return [r.key for r in offsets_records(payload)] == [FENCE_KEY]


def ack_fences(client: RecordingClient, base_offset: int) -> int:
    """Acknowledge every unanswered fence at ``base_offset``; how many."""
    fences = [i for i in client.unanswered if client.sent[i][0] == P.PRODUCE and is_fence(client.sent[i][2][0])]
    for i in fences:
        client.unanswered.remove(i)
        client.sent[i][3]({"results": [[base_offset, 0, "", 0]]}, [], None)
    return len(fences)


def is_readings(payload: bytes) -> bool:
    """An append to the offsets topic of groups' readings only (nodes/coordinator/group_readings.py)."""
    return all(parse_reading_key(r.key) is not None for r in offsets_records(payload))


def ack_readings(client: RecordingClient, base_offset: int = 0) -> int:
    """Acknowledge every unanswered append of groups' readings at ``base_offset`` (also those
    sent by the acknowledgements); how many."""
    n = 0
    while True:
        waiting = [i for i in client.unanswered if client.sent[i][0] == P.PRODUCE and is_readings(client.sent[i][2][0])]
        if not waiting:
            return n
        client.unanswered.remove(waiting[0])
        client.sent[waiting[0]][3]({"results": [[base_offset, 0, "", 0]]}, [], None)
        n += 1


def commit_produces(client: RecordingClient) -> list[tuple[bytes, dict, list, Callable]]:
    """The PRODUCEs sent that are not fences nor of groups' readings only."""
    return [s for s in client.of(P.PRODUCE) if not is_fence(s[2][0]) and not is_readings(s[2][0])]


def ack_last_produce(client: RecordingClient, base_offset: int) -> None:
    """Acknowledge the last request sent, which must be a PRODUCE, at ``base_offset``."""
    cmd, _h, _p, cb = client.sent[-1]
    assert cmd == P.PRODUCE
    if len(client.sent) - 1 in client.unanswered:  # answered once (as a real client)
        client.unanswered.remove(len(client.sent) - 1)
    cb({"results": [[base_offset, 0, "", 0]]}, [], None)


def admin_commit(gc: GroupCoordinator, client: RecordingClient, group: str, offset: int,
                 *, ack: bool = True, base_offset: int = 0, offsets: list | None = None) -> wire.Request:
    """An administrative commit of t-0 at ``offset`` (or of ``offsets``, OFFSET_COMMIT's entries),
    the log-end lookup (every log ending at 1000) and the append answered at once."""
    req = request(P.OFFSET_COMMIT, group=group, generation=-1, offsets=offsets or [["t", 0, offset]])
    before = len(client.sent)
    assert gc._on_offset_commit(req) is DEFER
    for cmd, h, _p, cb in client.sent[before:]:
        if cmd == P.LIST_OFFSETS:
            cb({"parts": [[t, p, 0, 1000] for t, p, _spec in h["parts"]]}, [], None)
    if ack:
        ack_last_produce(client, base_offset)
    return req


# -- the broker core, its Loom handlers and a follower's fetcher, without sockets ------------------
def broker_core(directory: Any, broker_id: int = 1, *, engine: str = "memory", clock: Clock | None = None,
                topic_configs: dict | None = None, min_insync_replicas: int = 1) -> BrokerCore:
    """A real BrokerCore on ``directory`` whose metadata has topic ``t`` (with ``topic_configs``);
    small segments (4 KiB) so that retention and resets cross segment files."""
    core = BrokerCore(broker_id, PartitionDirs(directory, engine),
                      StorageConfig(engine=engine, fsync="never", segment_bytes_max=4096, index_interval_bytes=256),
                      LimitsConfig(), TopicDefaults(min_insync_replicas=min_insync_replicas), clock or ManualClock())
    core.metadata = ClusterMetadata(1, "test", {}, {"t": TopicInfo("t", (), dict(topic_configs or {}))})
    return core


def loom_handlers(core: BrokerCore) -> tuple[RequestHandlers, RecordingServer]:
    """The real Loom request handlers on ``core``, answering into a RecordingServer."""
    server = RecordingServer()
    return RequestHandlers(core, server, core.clock, LimitsConfig()), server


def replica_fetcher(reactor: FakeReactor, leader_id: int, follower_id: int, on_progress: Callable[[Partition], None],
                    *, long_poll: bool = False) -> tuple[ReplicaFetcher, RecordingClient]:
    """A real ReplicaFetcher whose leader endpoint sends into a RecordingClient."""
    client = RecordingClient()
    leader = LeaderEndpoint(client, "tcp://leader", leader_id, follower_id)
    return ReplicaFetcher(leader, FetchSettings(long_poll, 200, 64 * 1024), reactor.call_later, on_progress), client


def serve_fetch(client: RecordingClient, leader: RequestHandlers) -> bool:
    """Answer the follower's FETCH in flight with the leader handlers' answer, through msgpack
    as on the wire. False if no FETCH was waiting."""
    waiting = [i for i in client.unanswered if client.sent[i][0] == P.FETCH]
    if not waiting:
        return False
    command, header, payloads, callback = client.sent[waiting[-1]]
    client.unanswered.remove(waiting[-1])
    answer = leader.on_fetch(request(command, payloads, **header))
    assert isinstance(answer, tuple), "a replica fetch without wait is answered at once"
    reply, data = answer
    callback(wire.unpack(wire.pack(reply)), [bytes(d) for d in data], None)
    return True


# -- configs and supervised children ---------------------------------------------------------------
def small_cluster_config(tmp_path: Any, **sections: dict) -> LoomConfig:
    """A parsed config of a coordinator, broker 1 and a monitor on fixed ports (nothing is
    started), with ``sections`` added (``liveness={...}``, ``supervisor={...}``…)."""
    raw: dict[str, Any] = {"cluster": {"data_dir": str(tmp_path)},
                           "nodes": {"coordinator": {"role": "coordinator", "port": 19004},
                                     "broker-1": {"role": "broker", "broker_id": 1, "port": 19001},
                                     "monitor": {"role": "monitor", "port": 19010}}}
    raw.update(sections)
    return parse_config(raw, environ={})


class ExitedProc:
    """Stands in for a supervised child that has exited (no process is started)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode = 1

    def poll(self) -> int:
        return self.returncode


def metadata_of(topics: dict[str, int] | None = None, brokers: int = 1, leader: int = 1) -> ClusterMetadata:
    """Real cluster metadata: brokers 1..``brokers`` (alive) and each topic of ``topics``
    (name -> partition count) with every partition led by ``leader``."""
    infos = {b: BrokerInfo(b, "127.0.0.1", 30_000 + b, 31_000 + b) for b in range(1, brokers + 1)}
    return ClusterMetadata(1, "test", infos, {
        t: TopicInfo(t, tuple(PartitionInfo(t, p, leader, 0, (leader,), (leader,)) for p in range(n)))
        for t, n in (topics or {}).items()})


# -- zmtp: the request port's sends, spied ---------------------------------------------------
PASSES_MAX = 200
POLL_MS = 10
BIG = bytes(range(256)) * (P.REPLY_ZERO_COPY_BYTES_MIN // 256 + 1)


class SendSpy:
    """The request port's TCP port (``fabric.tcp_port.TcpPort``), with each write noted;
    ``refuse_at`` makes that write (counted from 0) refused, as a full output refuses it."""

    def __init__(self, port: Any) -> None:
        self.port = port
        self.writes: list[list] = []
        self.refuse_at: int | None = None

    def write(self, conn_id: bytes, pieces: list, **options: Any) -> bool:
        self.writes.append(list(pieces))
        if len(self.writes) - 1 == self.refuse_at:
            return False
        return self.port.write(conn_id, pieces, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.port, name)


def ask(reactor: Reactor, dealer: zmq.Socket, rid: int, big: bool) -> list[bytes] | None:
    """Send PING ``rid`` (big reply or not) and run the reactor until the reply comes (None if not)."""
    dealer.send_multipart(wire.encode_request(P.PING, {"id": rid, "big": big}))
    for _ in range(PASSES_MAX):  # bounded: a round trip on loopback takes a few passes
        reactor.run_once(POLL_MS)
        if dealer.poll(0):
            return dealer.recv_multipart()
    return None


# -- gateway: keys and a cluster agent --------------------------------------------------------
KEYS = {role: generate_key() for role in ROLES}


def gateway_test_client(agent: Any) -> Any:
    """The gateway's Flask app over ``agent`` (cluster "test"; a key per role, KEYS, each
    with that role alone), as Flask's test client. A bug in a request fails the test."""
    def bug() -> None:
        raise AssertionError("a bug in the gateway")
    keys = KeyStore([(role, hash_key(k), [role]) for role, k in KEYS.items()])
    gw = Gateway(agent=agent, hub=EventHub(), keys=keys, limiter=RateLimiter(1000.0, 1000, 100),
                 settings=GatewayConfig(), security=SecurityConfig(), cluster_id="test", on_bug=bug)
    return create_app(gw).test_client()


@contextmanager
def served_wsgi(app: Any) -> Iterator[int]:
    """A WSGI app (the gateway's Flask app) served by werkzeug, a thread per request, on a free
    port of 127.0.0.1; yields the port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class StubAgent:
    """Answers like an empty, healthy cluster; topic "missing" does not exist."""

    def coordinator_reachable(self) -> bool:
        return True

    def coordinator_metadata(self) -> Any:
        return self.metadata()

    def metadata(self) -> Any:
        return metadata_of()

    def topic(self, name: str) -> Any:
        raise ClusterError("topic_not_found", f"topic {name!r} not found")
