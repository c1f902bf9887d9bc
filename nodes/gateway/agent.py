"""The gateway's agent: everything the Flask app (webui) asks of the cluster, over the fabric.

Produce goes through the producer service and consumer instances live on the consumer
services (``fabric.client.services``); metadata, topics, offsets and groups go to the
coordinator and brokers (``fabric.client.admin``, ``fabric.client.group_admin``). Fabric errors
become ``webui.errors.ClusterError`` here (``nodes.gateway.translate``), so the app never sees
ZeroMQ.

Consumer instances: the agent remembers each instance's service, configuration and
subscription. When the instance's consumer service does not answer (it died), the agent makes
the instance again, under the same name and group, on a live service, subscribes it again and
retries the request: the group hands it the partitions, and it resumes from the committed
offsets (records after the last commit are delivered again, as after any rebalance). The same
when the service restarted (the supervisor brings it back on its endpoint before the health
watcher sees it down): it answers that it does not know the instance, or a request the killed
process took times out or loses its connection (seen at once: ``ConnectionLost``; PING is then
asked again while the service starts), and another process (pid, from PING) than the one that
made the instance serves the endpoint. An instance unknown to the process that made it expired or was
deleted: 404, and forgotten.

Metadata: one fetch in flight per gateway process (``MetadataFlight``): a request thread that
needs metadata while another thread's fetch is in flight waits for it instead of asking the
cluster too; ``metadata()`` answers from a fetch begun after the call (a topic just made is
seen). The request threads' clients share one ``CoordinatorSilence``: a coordinator one thread
found silent is asked after the brokers by every thread (each waited for it on its own first),
and so are the nodes the health watcher sees down.

Produce: ``GatewayProduce`` (nodes/gateway/agent_produce.py), a base of ``GatewayAgent``; it
trusts metadata from a fetch begun at most ``PRODUCE_METADATA_MAX_AGE_MS`` ago (``_recent_metadata``).

Thread-safety: thread-safe. Every request thread gets its own clients (``threading.local``:
the fabric's blocking clients are not thread-safe); the instance table has a lock, and the
metadata fetch and the coordinator's silence are thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Callable

from fabric.client.admin import EARLIEST, LATEST, METADATA_ASK_TIMEOUT_MS, Admin
from fabric.client.consumer import Consumer
from fabric.client.coordinator_silence import CoordinatorSilence
from fabric.client.group_admin import GroupAdmin
from fabric.client.services import ServiceConsumer, ServiceProducer, service_endpoints
from fabric.config import LoomConfig
from fabric.records import Record
from nodes.gateway.agent_instances import ConsumerInstances, InstanceEntry
from nodes.gateway.agent_produce import GatewayProduce
from nodes.gateway.left_behind import LeftBehind
from nodes.gateway.metadata_flight import MetadataFlight
from nodes.gateway.monitor_link import MonitorAccess
from nodes.gateway.translate import translated
from webui.errors import ClusterError

log = logging.getLogger(__name__)

BROWSE_WAIT_MS_MAX = 2000              # how long a records-browser read polls for data it knows exists
# the records browser's consumer (one per request thread: 48) reads a page at a time: what it
# fetches ahead is bounded to this (a consumer's default, 64 MiB and 8 MiB per FETCH, made 48
# threads hold up to 8 MiB each between their reads), and let go after each read
BROWSE_BUFFER_BYTES = 1024 * 1024
ADMIN_TIMEOUT_MS = 5000
# how long a partition's offsets (a partition's, the browser's, an offsets reset's) wait for a
# leader: an election (about 0.7 s after a leader's SIGKILL) is waited out, an offline
# partition answers 503 then instead of holding a worker for ADMIN_TIMEOUT_MS
OFFSETS_LEADER_WAIT_MS = 1500
PRODUCE_METADATA_MAX_AGE_MS = 1000   # how old the topic list that produce trusts may be
# a request waiting for another's metadata fetch gives up this long after the longest the
# fetch's asks can take (each bootstrap endpoint's timeout, one after the other): it hangs
METADATA_WAIT_SLACK_MS = 1000



class GatewayAgent(GatewayProduce, ConsumerInstances):
    def __init__(self, config: LoomConfig, is_up: Callable[[str], bool] | None = None, *,
                 takes_work: Callable[[str], bool] | None = None,
                 make_admin: Callable[[], Any] | None = None, make_producer: Callable[[], Any] | None = None,
                 owner: str = "", metadata_wait_ms_max: int | None = None) -> None:
        """``is_up(endpoint)``: False when the health watcher saw that node down (fail fast).
        ``takes_work(endpoint)``: False also while it is up but stopping (it drains after
        SIGTERM): new work goes elsewhere, what it took is waited for (default: ``is_up``).
        ``make_admin()`` / ``make_producer()``: a request thread's Admin / producer-service
        client (default: to the cluster of ``config``, sharing ``md_silence``). ``owner``: this
        gateway's name for the consumer instances it makes (``reclaim_instances``); each process
        adds its own id. ``metadata_wait_ms_max``: how long a request waits at most for another's
        metadata fetch, from its start (default: the longest its asks take, and
        METADATA_WAIT_SLACK_MS)."""
        self.config = config
        self.owner_base = owner
        self.owner = f"{owner}:{uuid.uuid4().hex[:12]}" if owner else ""
        self.bootstrap = config.bootstrap()
        self.producer_endpoints = service_endpoints(config, "producer")
        self.consumer_endpoints = service_endpoints(config, "consumer")
        self.is_up = is_up or (lambda endpoint: True)
        self._takes_work = takes_work
        self._local = threading.local()
        self._instances: dict[tuple[str, str], InstanceEntry] = {}
        self.left_behind = LeftBehind(self.is_up, self.holder)
        self.monitor = MonitorAccess(config)
        self._lock = threading.Lock()
        # every request thread's view of a silent coordinator; nodes the health watcher sees
        # down asked last (PINGed every health interval, they were waited for first)
        self.md_silence = CoordinatorSilence(down=self._is_down)
        if metadata_wait_ms_max is None:
            metadata_wait_ms_max = len(self.bootstrap) * min(ADMIN_TIMEOUT_MS, METADATA_ASK_TIMEOUT_MS) \
                + METADATA_WAIT_SLACK_MS
        self._metadata_flight = MetadataFlight(metadata_wait_ms_max)
        self._md_floor_s = float("-inf")  # produce trusts no fetch begun before this: a topic deleted then
        self._make_admin = make_admin or (lambda: Admin(self.bootstrap, timeout_ms=ADMIN_TIMEOUT_MS,
                                                        silence=self.md_silence, fetches=self._admin_fetches))
        self._make_producer = make_producer or (lambda: ServiceProducer(self.producer_endpoints,
                                                                        takes_work=self.takes_work))

    # -- per-thread clients ---------------------------------------------------------------
    def _get(self, name: str, make: Callable[[], Any]) -> Any:
        client = getattr(self._local, name, None)
        if client is None:
            client = make()
            setattr(self._local, name, client)
        return client

    def admin(self) -> Admin:
        return self._get("admin", self._make_admin)

    def _groups(self) -> GroupAdmin:
        return GroupAdmin(self.admin())

    def _producer(self) -> ServiceProducer:
        return self._get("producer", self._make_producer)

    def _consumers(self) -> ServiceConsumer:
        return self._get("consumers", lambda: ServiceConsumer(self.consumer_endpoints, is_down=self._is_down))

    def _is_down(self, endpoint: str) -> bool:
        return not self.is_up(endpoint)

    def takes_work(self, endpoint: str) -> bool:
        """Up and not stopping (draining after SIGTERM): new work may go there."""
        return self._takes_work(endpoint) if self._takes_work is not None else self.is_up(endpoint)

    def _browser(self) -> Consumer:
        return self._get("browser", lambda: Consumer(
            self.bootstrap, auto_offset_reset="earliest", silence=self.md_silence, buffered_bytes_max=BROWSE_BUFFER_BYTES,
            fetch_bytes_max=BROWSE_BUFFER_BYTES, partition_fetch_bytes_max=BROWSE_BUFFER_BYTES))

    # -- the monitor (503 / unavailable without one) -----------------------------------------
    def monitor_metrics(self) -> tuple[bytes, str]:
        return self.monitor.metrics_text()

    def monitor_history(self, since_ms: int) -> dict:
        return self.monitor.history(since_ms)

    def monitor_events(self) -> list:
        return self.monitor.events()

    # -- cluster and topics ------------------------------------------------------------------
    def coordinator_reachable(self) -> bool:
        """Whether the coordinator answers (``coordinator_metadata`` does not raise)."""
        try:
            self.coordinator_metadata()
        except ClusterError:
            return False
        return True

    def coordinator_metadata(self) -> Any:
        """Metadata from a fetch begun after the call, when the coordinator it names has not gone
        silent (``md_silence``: its last ask, any thread's, timed out or was refused; it is asked
        again at its backoff's end) -- a broker's copy answers a fetch too, and is not the
        coordinator answering. Raises ClusterError (``unavailable`` when only a copy answered)."""
        md = self.metadata()
        if self.md_silence.silent(md.coordinator):
            raise ClusterError("unavailable", f"not reachable: {md.coordinator} did not answer its last ask "
                                              "(a broker's copy of the metadata answered)")
        return md

    def metadata(self) -> Any:
        """The cluster's metadata from a fetch begun after this call (a topic made or deleted
        just before is seen): the fetch another request thread begins meanwhile, or this
        thread's own once the one in flight has ended (``MetadataFlight``). Raises ClusterError."""
        return self._metadata_since(time.monotonic())

    def _recent_metadata(self) -> Any:
        """Metadata from a fetch begun at most PRODUCE_METADATA_MAX_AGE_MS ago, or the fetch in
        flight's however long ago it began (newer than any such), both after the last topic
        deleted here; else a new one."""
        floor_s = self._md_floor_s
        return self._metadata_since(max(time.monotonic() - PRODUCE_METADATA_MAX_AGE_MS / 1000, floor_s), floor_s)

    def _metadata_since(self, since_s: float, join_since_s: float | None = None) -> Any:
        with translated("the cluster"):  # the coordinator, then the brokers, are asked
            return self._metadata_flight.get(self._fetch_metadata, since_s, join_since_s)

    def _fetch_metadata(self) -> Any:
        return self.admin().metadata()  # the Admin's fetches (_admin_fetches): run here, this is the one in flight

    def _admin_fetches(self, fetch: Callable[[], Any], deadline_s: float | None) -> Any:
        """A request thread's Admin's own metadata fetches (``Admin.list_offsets``'s) share the
        one in flight too: begun after the call, waited for until the call's deadline."""
        return self._metadata_flight.get(fetch, time.monotonic(), deadline_s=deadline_s)

    def metadata_waiting(self) -> int:
        """Request threads waiting for another's metadata fetch now."""
        return self._metadata_flight.waiting

    def topic(self, name: str) -> Any:
        """The topic's metadata, an internal one's too (readable; only produce refuses it).
        Raises ClusterError(topic_not_found)."""
        t = self.metadata().topics.get(name)
        if t is None:
            raise ClusterError("topic_not_found", f"topic {name!r} not found")
        return t

    def offsets(self, topic: str, partitions: list[int] | None = None, *,
                partial: bool = False) -> dict[int, tuple[int, int]]:
        """partition -> (log start offset, high watermark) of ``partitions`` (default: all);
        ``partial``: without waiting for the partitions whose leader is being elected or does not
        know its HW yet (they are left out), so one such partition does not hold up the rest;
        else such a partition is waited for up to OFFSETS_LEADER_WAIT_MS, then ClusterError
        (unavailable: 503)."""
        with translated("the brokers"):
            admin = self.admin()
            start = admin.list_offsets(topic, EARLIEST, partitions=partitions, partial=partial,
                                       leader_wait_ms=OFFSETS_LEADER_WAIT_MS)
            end = admin.list_offsets(topic, LATEST, partitions=partitions, partial=partial,
                                     leader_wait_ms=OFFSETS_LEADER_WAIT_MS)
        return {p: (start[p], end[p]) for p in end if p in start}

    def create_topic(self, name: str, partitions: int | None, replication_factor: int | None,
                     configs: dict[str, Any]) -> None:
        with translated("the coordinator"):
            self.admin().create_topic(name, partitions, replication_factor, configs)

    def alter_topic(self, name: str, partitions: int | None = None, configs: dict | None = None) -> None:
        with translated("the coordinator"):
            self.admin().alter_topic(name, partitions, configs)

    def delete_topic(self, name: str) -> None:
        with translated("the coordinator"):
            self.admin().delete_topic(name)
        now_s = time.monotonic()
        with self._lock:  # never back: a delete ending at the same time may set it first
            self._md_floor_s = max(self._md_floor_s, now_s)

    # -- records browser ----------------------------------------------------------------------
    def read(self, topic: str, partition: int, offset: int | None, count: int, max_bytes: int,
             timeout_ms: int) -> list[Record]:
        """Up to ``count`` records of one partition from ``offset`` (None: the log start),
        stopping at the high watermark; waits up to timeout_ms when there is nothing yet."""
        t = self.topic(topic)
        if not 0 <= partition < len(t.partitions):
            raise ClusterError("partition_not_found", f"{topic} has no partition {partition}")
        start, end = self.offsets(topic, [partition])[partition]
        offset = start if offset is None else max(offset, start)
        want = min(count, max(0, end - offset))
        wait_ms = timeout_ms if want == 0 else BROWSE_WAIT_MS_MAX
        want = want or 1
        c = self._browser()
        out: list[Record] = []
        size = 0
        with translated("the brokers"):
            c.assign([(topic, partition)])
            try:
                c.seek((topic, partition), offset)
                deadline = time.monotonic() + wait_ms / 1000
                while len(out) < want:
                    left_ms = int((deadline - time.monotonic()) * 1000)
                    if left_ms <= 0:
                        break
                    for r in c.poll(left_ms, max_records=want - len(out)):
                        size += len(r.value) + len(r.key or b"")
                        if out and size > max_bytes:
                            return out
                        out.append(r)
            finally:
                c.assign([])  # what it fetched past the page is let go, not kept until this thread's next read
        return out[:count]

    # -- consumer groups -----------------------------------------------------------------------
    def list_groups(self) -> list[dict]:
        with translated("the coordinator"):
            return self._groups().list_groups()

    def describe_group(self, group: str) -> dict:
        with translated("the coordinator"):
            d = self._groups().describe(group)
        if d.get("state") == "Dead" and not d.get("offsets"):
            raise ClusterError("group_not_found", f"consumer group {group!r} not found")
        return d

    def group_lag(self, group: str) -> list[Any]:
        self.describe_group(group)
        with translated("the coordinator"):
            return self._groups().lag(group)

    def reset_offsets(self, group: str, topic: str, execute: bool, **target: Any) -> dict[tuple[str, int], tuple[int, int]]:
        self.topic(topic)
        with translated("the coordinator"):
            ga = self._groups()
            plan = ga.plan_reset(group, topic, leader_wait_ms=OFFSETS_LEADER_WAIT_MS, **target)
            if execute:
                ga.execute_reset(group, plan)
        return plan

    def close(self) -> None:
        for name in ("admin", "producer", "consumers", "browser"):
            client = getattr(self._local, name, None)
            if client is not None:
                client.close()
