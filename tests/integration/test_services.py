"""The producer service and the consumer services on a real cluster."""

from __future__ import annotations

import time

import pytest
import zmq

from fabric import protocol as P
from fabric import wire
from fabric.client import Admin, Consumer, Producer
from fabric.client.group_admin import GroupAdmin
from fabric.client.services import ServiceConsumer, ServiceProducer, ServiceRecord
from fabric.errors import RemoteError
from fabric.records import partition_for_key
from fabric.rpc import make_socket
from tests.harness import Cluster, wait_until

BUFFER_BYTES = 256 * 1024
# what a consumer service's instances fetch ahead, all together: 1 MiB over 16 instances gives
# each the floor's share, 256 KiB (nodes.consumer.fetch_limits)
CONSUMER_BUFFER_BYTES = 1024 * 1024
INSTANCE_SHARE_BYTES = 256 * 1024


# one cluster for the module (tests/conftest.py)
CLUSTER_OPTIONS = {"brokers": 3, "extra_nodes": ("producer", "consumer-1", "consumer-2"),
                   "overrides": {"services": {"producer_buffer_bytes_max": BUFFER_BYTES,
                                              "consumer_instance_idle_timeout_ms": 60_000,
                                              "consumer_buffer_bytes_max": CONSUMER_BUFFER_BYTES,
                                              "consumer_instances_max": 16}}}


@pytest.fixture(scope="module", autouse=True)
def _prepared(module_cluster: Cluster) -> None:
    with Admin(module_cluster.bootstrap) as admin:
        for t in ("svc", "svc-groups"):
            admin.create_topic(t, 3)
            module_cluster.wait_topic_ready(admin, t)


def read_all(cluster: Cluster, topic: str, expected: int) -> list:
    c = Consumer(cluster.bootstrap, auto_offset_reset="earliest")
    try:
        c.assign([(topic, p) for p in c.partitions_for(topic)])
        out: list = []
        deadline = time.monotonic() + 15
        while len(out) < expected and time.monotonic() < deadline:
            out += c.poll(200)
        return out
    finally:
        c.close()


def test_producer_service_partitions_batches_and_returns_offsets(cluster: Cluster) -> None:
    sp = ServiceProducer(cluster.endpoint("producer"))
    try:
        keyed = [ServiceRecord(b"value-%d" % i, key=b"key-%d" % i, headers=[["h", b"%d" % i]]) for i in range(60)]
        pinned = [ServiceRecord(b"pinned-%d" % i, partition=2) for i in range(10)]
        results = sp.produce("svc", keyed + pinned, acks="all")
        assert all(r.ok for r in results), results
        for rec, res in zip(keyed, results):
            assert res.partition == partition_for_key(rec.key, 3)
        assert {r.partition for r in results[60:]} == {2}
        assert len({(r.partition, r.offset) for r in results}) == 70
        stored = {(r.partition, r.offset): r for r in read_all(cluster, "svc", 70)}
        for rec, res in zip(keyed + pinned, results):
            got = stored[(res.partition, res.offset)]
            assert got.value == rec.value and got.key == rec.key
        assert [list(h) for h in stored[(results[0].partition, results[0].offset)].headers] == [["h", b"0"]]
        # acks=0 answers without offsets; an unknown topic and a bad partition fail per record
        assert all(r.ok and r.offset == -1 for r in sp.produce("svc", [ServiceRecord(b"fire")], acks=0))
        bad = sp.produce("svc", [ServiceRecord(b"x", partition=9)])
        assert bad[0].error == P.UNKNOWN_TOPIC_OR_PARTITION
        with pytest.raises(RemoteError) as e:
            sp.produce("svc", [("not-bytes", "value", None, None)])
        assert e.value.code == P.INVALID_RECORD
    finally:
        sp.close()


def test_producer_service_backpressure_is_bounded(cluster: Cluster) -> None:
    """Many large requests at once: some are refused with buffer_full, none is lost, and
    the service keeps serving."""
    ctx = zmq.Context.instance()
    sock = make_socket(ctx, zmq.DEALER, "flood")
    sock.connect(cluster.endpoint("producer"))
    value = b"x" * 16 * 1024
    n = 60  # 60 x 4 x 16 KiB = 3.75 MiB against a 256 KiB buffer
    try:
        for i in range(n):
            header = {"id": i + 1, "topic": "svc", "acks": -1, "records": [[None, value, None, None]] * 4}
            sock.send_multipart(wire.encode_request(P.SERVICE_PRODUCE, header))
        replies = {}
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        deadline = time.monotonic() + 30
        while len(replies) < n and time.monotonic() < deadline:
            if poller.poll(500):
                h, _ = wire.decode_reply(sock.recv_multipart())
                replies[h["id"]] = h
    finally:
        sock.close(0)
    assert len(replies) == n, "every request is answered"
    full = [h for h in replies.values() if h.get("error") == P.BUFFER_FULL]
    ok = [h for h in replies.values() if not h.get("error")]
    assert full and ok and len(full) + len(ok) == n
    assert all(r[2] == 0 for h in ok for r in h["results"])
    stats = cluster.stats("producer")
    assert stats["buffered_bytes"] == 0 and stats["buffer_bytes_max"] == BUFFER_BYTES


def test_an_instance_reads_a_backlog_many_times_its_share_from_every_leader(cluster: Cluster) -> None:
    """A hosted instance fetches ahead no more than its share of the service's budget (256 KiB
    here), shared by the leaders of its partitions: 3 MiB over three partitions, led by more
    than one broker, come through whole and in order (a bound given whole to the first leader
    asked starved the others once that one's partition was read to its end)."""
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("svc-backlog", 3)
        cluster.wait_topic_ready(admin, "svc-backlog")
        assert len({p.leader for p in admin.metadata().topics["svc-backlog"].partitions}) >= 2
    sizes = {0: 2048, 1: 512, 2: 512}  # a partition with more than the others: read after they end
    with Producer(cluster.bootstrap, acks="all") as producer:
        for p, n in sizes.items():
            producer.send_many("svc-backlog", [b"%d-%06d" % (p, i) + b"x" * 1016 for i in range(n)], partition=p)
        producer.flush()
    sc = ServiceConsumer(cluster.endpoint("consumer-1"))
    try:
        inst = sc.create("g-backlog", config={"auto_offset_reset": "earliest", "enable_auto_commit": False})
        inst.subscribe(["svc-backlog"])
        got: dict[int, list[int]] = {p: [] for p in sizes}
        deadline = time.monotonic() + 60
        while sum(map(len, got.values())) < sum(sizes.values()) and time.monotonic() < deadline:
            for r in inst.fetch(timeout_ms=500, max_bytes=64 * 1024):
                got[r.partition].append(r.offset)
                assert r.value[:8] == b"%d-%06d" % (r.partition, r.offset)
        assert {p: offsets for p, offsets in got.items()} == {p: list(range(n)) for p, n in sizes.items()}
        inst.delete()
    finally:
        sc.close()


def test_consumer_services_share_a_group_and_survive_one_service_dying(cluster: Cluster) -> None:
    sp = ServiceProducer(cluster.endpoint("producer"))
    sc = ServiceConsumer([cluster.endpoint("consumer-1"), cluster.endpoint("consumer-2")])
    cfg = {"auto_offset_reset": "earliest", "session_timeout_ms": 1500, "heartbeat_interval_ms": 200,
           "auto_commit_interval_ms": 200}
    try:
        one = sc.create("g-svc", config=cfg)
        two = sc.create("g-svc", config=cfg)
        assert {one.endpoint, two.endpoint} == set(sc.endpoints), "instances are spread over both services"
        named = sc.create("g-other", "named", cfg)
        with pytest.raises(RemoteError) as e:
            sc.create("g-other", "named", cfg)
        assert e.value.code == P.CONSUMER_INSTANCE_EXISTS
        one.subscribe(["svc-groups"])
        two.subscribe(["svc-groups"])
        assert one.subscription() == ["svc-groups"]
        wait_until(lambda: one.assignment() and two.assignment() and len(one.assignment() + two.assignment()) == 3,
                   15, what="both instances to get partitions")
        first = sp.produce("svc-groups", [ServiceRecord(b"a%d" % i, key=b"%d" % i) for i in range(150)])
        seen: dict[str, list] = {"one": [], "two": []}

        def fetch_both() -> int:
            seen["one"] += one.fetch(timeout_ms=200)
            seen["two"] += two.fetch(timeout_ms=200)
            return len(seen["one"]) + len(seen["two"])
        wait_until(lambda: fetch_both() >= 150, 20, what="the first 150 records through both services")
        got = [(r.partition, r.offset) for r in seen["one"] + seen["two"]]
        assert sorted(got) == sorted((r.partition, r.offset) for r in first), "each record to one instance"
        one.commit()
        two.commit()
        cluster.kill("consumer-1" if one.endpoint == cluster.endpoint("consumer-1") else "consumer-2")
        survivor = two
        wait_until(lambda: len(survivor.assignment()) == 3, 10, what="the survivor to take every partition")
        second = sp.produce("svc-groups", [ServiceRecord(b"b%d" % i, key=b"%d" % i) for i in range(150)])
        later: list = []
        wanted = {(r.partition, r.offset) for r in second}

        def fetch_survivor() -> bool:
            later.extend(survivor.fetch(timeout_ms=200))
            return wanted <= {(r.partition, r.offset) for r in later}
        wait_until(fetch_survivor, 20, what="consumption to continue through the other service")
        assert not {(r.partition, r.offset) for r in later} & set(got), "committed records are not redelivered"
        # seek back: records are delivered again (without moving the committed offsets back)
        survivor.seek_to_beginning()
        again: list = []
        wait_until(lambda: again.extend(survivor.fetch(timeout_ms=200)) or any(r.offset == 0 for r in again), 10,
                   what="records from the beginning after a seek")
        named.delete()
        survivor.delete()
        with pytest.raises(RemoteError) as e:
            survivor.fetch(timeout_ms=0)
        assert e.value.code == P.UNKNOWN_CONSUMER_INSTANCE
        with Admin(cluster.bootstrap) as admin:
            wait_until(lambda: not GroupAdmin(admin).describe("g-svc")["members"], 10, what="the group to be empty")
    finally:
        sp.close()
        sc.close()


def test_idle_consumer_instances_expire_and_leave_their_group(cluster: Cluster) -> None:
    alive = "consumer-2" if cluster.procs["consumer-2"].poll() is None else "consumer-1"
    sc = ServiceConsumer(cluster.endpoint(alive))
    try:
        # idle for 3 s: time to be seen joined first (it was 1 s, the join and a look at the
        # group within it on a loaded machine); the session (30 s) is far above both
        inst = sc.create("g-idle", "sleepy", {"auto_offset_reset": "earliest", "idle_timeout_ms": 3000,
                                              "session_timeout_ms": 30_000})
        inst.subscribe(["svc"])
        with Admin(cluster.bootstrap) as admin:
            wait_until(lambda: GroupAdmin(admin).describe("g-idle")["members"], 10, what="the instance to join")
            wait_until(lambda: not GroupAdmin(admin).describe("g-idle")["members"], 15,
                       what="the idle instance to leave (well before its 30 s session timeout)")
        with pytest.raises(RemoteError) as e:
            inst.fetch(timeout_ms=0)
        assert e.value.code == P.UNKNOWN_CONSUMER_INSTANCE
    finally:
        sc.close()
