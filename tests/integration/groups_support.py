"""What the consumer-group integration tests share: a topic made and ready, records produced
with their positions, and a group member polling in its own thread."""

from __future__ import annotations

import threading

from fabric.client import Admin, Producer
from fabric.client.group import Consumer
from tests.harness import Cluster

SESSION_MS = 1500
HEARTBEAT_MS = 200


def make_topic(cluster: Cluster, admin: Admin, name: str, partitions: int = 3) -> None:
    admin.create_topic(name, partitions)
    cluster.wait_topic_ready(admin, name)


def produce(cluster: Cluster, topic: str, n: int, start: int = 0) -> list[tuple[int, int]]:
    with Producer(cluster.bootstrap, linger_ms=2) as p:
        futures = [p.send(topic, b"v%d" % i, key=b"k%d" % i) for i in range(start, start + n)]
        p.flush(20)
        return [(f.result().partition, f.result().offset) for f in futures]


class Member(threading.Thread):
    """A group member polling in its own thread; records what it was given."""

    def __init__(self, bootstrap: str, group: str, topics: list[str], name: str, **kw: object) -> None:
        super().__init__(name=name, daemon=True)
        self.args = dict(group_id=group, auto_offset_reset="earliest", session_timeout_ms=SESSION_MS,
                         heartbeat_interval_ms=HEARTBEAT_MS, auto_commit_interval_ms=200, client_id=name, **kw)
        self.bootstrap, self.topics = bootstrap, topics
        self.lock = threading.Lock()
        self.records: list[tuple[int, int]] = []
        self.assignment: list[tuple[str, int]] = []
        self.generations = 0
        self.stop_event = threading.Event()
        self.error: Exception | None = None

    def _assigned(self, tps: list) -> None:
        with self.lock:
            self.assignment = list(tps)
            self.generations += 1

    def run(self) -> None:
        try:
            c = Consumer(self.bootstrap, on_assign=self._assigned, **self.args)
            c.subscribe(self.topics)
            try:
                while not self.stop_event.is_set():
                    recs = c.poll(100)
                    with self.lock:
                        self.records += [(r.partition, r.offset) for r in recs]
            finally:
                c.close()
        except Exception as e:  # surfaced by the test
            self.error = e

    def seen(self) -> list[tuple[int, int]]:
        with self.lock:
            return list(self.records)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=15)
        assert not self.is_alive(), f"{self.name} did not stop"
        assert self.error is None, f"{self.name} failed: {self.error!r}"
