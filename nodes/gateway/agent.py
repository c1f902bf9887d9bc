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

Produce looks topics up in metadata from a fetch begun at most ``PRODUCE_METADATA_MAX_AGE_MS``
ago (shared by the request threads) instead of asking the coordinator on every request: a topic not in it is
looked up afresh before the request is refused, and a request whose every record fails with
an unknown topic or partition (deleted, or made again with fewer partitions, meanwhile) is
answered 404 after a fresh look too when that look shows the topic, or a partition the request
names, missing. A record failed with unknown_topic_or_partition while the topic exists is
retriable (the service places it again) unless it names a partition a fresh look shows gone.

Thread-safety: thread-safe. Every request thread gets its own clients (``threading.local``:
the fabric's blocking clients are not thread-safe); the instance table has a lock, and the
metadata fetch and the coordinator's silence are thread-safe.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
import uuid
from functools import partial
from typing import Any, Callable, Iterator

from fabric import protocol as P
from fabric.client.admin import EARLIEST, LATEST, METADATA_ASK_TIMEOUT_MS, Admin
from fabric.client.consumer import Consumer
from fabric.client.coordinator_silence import CoordinatorSilence
from fabric.client.group_admin import GroupAdmin
from fabric.client.services import PARTITION_OF, ServiceConsumer, ServiceProducer, service_endpoints
from fabric.config import LoomConfig
from fabric.errors import CodedError, RequestTimeout
from fabric.records import Record
from nodes.gateway.agent_instances import ConsumerInstances, InstanceEntry
from nodes.gateway.left_behind import LeftBehind
from nodes.gateway.metadata_flight import MetadataFlight
from nodes.gateway.monitor_link import MonitorAccess
from nodes.gateway.translate import KINDS, translated
from webui.errors import ClusterError

log = logging.getLogger(__name__)

BROWSE_WAIT_MS_MAX = 2000              # how long a records-browser read polls for data it knows exists
ADMIN_TIMEOUT_MS = 5000
# how long a partition's offsets (a partition's, the browser's, an offsets reset's) wait for a
# leader: an election (about 0.7 s after a leader's SIGKILL) is waited out, an offline
# partition answers 503 then instead of holding a worker for ADMIN_TIMEOUT_MS
OFFSETS_LEADER_WAIT_MS = 1500
CREATE_TOPIC_WAIT_MS = 5000            # auto-create: wait for leaders before producing
SERVICE_REQUEST_BYTES_MAX = 8 * 1024 * 1024   # record bytes per SVC_PRODUCE (one payload frame)
RECORD_WIRE_OVERHEAD_BYTES = 64
PRODUCE_METADATA_MAX_AGE_MS = 1000   # how old the topic list that produce trusts may be
# a request waiting for another's metadata fetch gives up this long after the longest the
# fetch's asks can take (each bootstrap endpoint's timeout, one after the other): it hangs
METADATA_WAIT_SLACK_MS = 1000

_NOT_NONE = partial(operator.is_not, None)
_PARTITION_TYPES = {int, type(None)}  # of a record's own partition (not bool, not 1.0)


Record4 = tuple  # (key bytes|None, value bytes, headers [[name, bytes|None]]|None, partition int|None)
Outcome = tuple  # (partition, offset, error text|None, retriable): plain tuples, 500 of them per request


def _retriable(code: int, gone: Callable[[int], bool] | None = None, index: int = 0) -> bool:
    """Whether record ``index``, which the producer service failed with ``code``, may be sent
    again as it is. unknown_topic_or_partition is, unless the record names a partition a fresh
    look shows gone (``gone``: the topic made again with fewer partitions): the service's
    producer failed it at once for a partition its metadata no longer has (placed again on the
    retry), or retried it to its delivery timeout while brokers refused it (a replica not yet
    opened, a broker still holding the deleted topic's), both transient (a missing topic is
    answered 404 instead)."""
    return code in P.RETRIABLE and not (code == P.UNKNOWN_TOPIC_OR_PARTITION and gone is not None and gone(index))


def _integer_partitions(records: list[Record4]) -> list[Record4]:
    """``records`` with each partition written as a float with no fraction (1.0, 1e2: JSON
    Schema's integers, which the REST routes and /ws/produce let through) made that int. Raises
    ClusterError(invalid) for any other that is not an int (True, "1", 1.5): the producer
    service refused it, and its refusal came back as a 500."""
    out = []
    for r in records:
        p = r[3]
        if type(p) is float and p.is_integer():
            r = (r[0], r[1], r[2], int(p))
        elif type(p) not in _PARTITION_TYPES:
            raise ClusterError("invalid", f"a record's partition is an integer, not {p!r:.40}")
        out.append(r)
    return out


def _named_partition(record: Record4) -> int:
    """The partition a record names itself, -1 when none."""
    return -1 if record[3] is None else record[3]


def _gone_in(topic: str, partition: int | None, records: list[Record4], t: Any) -> Callable[[int], bool]:
    """Whether record ``i`` names a partition (the route's, or its own) that topic ``t`` (fresh
    metadata; None: gone) lacks."""
    count = len(t.partitions) if t is not None else 0

    def gone(i: int) -> bool:
        named = partition if partition is not None else records[i][3]
        return named is not None and named >= count
    return gone


def _refuse_missing_partition(topic: str, named: int | None, t: Any) -> None:
    """Raise ClusterError(partition_not_found) when ``named`` is a partition topic ``t``
    (its metadata; None: not known) lacks."""
    if named is not None and t is not None and named >= len(t.partitions):
        raise ClusterError("partition_not_found", f"topic {topic!r} has no partition {named} "
                                                  f"(it has {len(t.partitions)})")


class GatewayAgent(ConsumerInstances):
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
        return self._get("browser", lambda: Consumer(self.bootstrap, auto_offset_reset="earliest",
                                                     silence=self.md_silence))

    # -- the monitor (503 / unavailable without one) -----------------------------------------
    def monitor_metrics(self) -> tuple[bytes, str]:
        return self.monitor.metrics_text()

    def monitor_history(self, since_ms: int) -> dict:
        return self.monitor.history(since_ms)

    # -- cluster and topics ------------------------------------------------------------------
    def coordinator_reachable(self) -> bool:
        """Whether the coordinator answers: metadata from a fetch begun after the call, and the
        coordinator it names not gone silent (``md_silence``: its last ask, any thread's, timed
        out; it is asked again at its backoff's end) -- a broker's copy answers a fetch too."""
        try:
            md = self.metadata()
        except ClusterError:
            return False
        return not self.md_silence.silent(md.coordinator)

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

    # -- produce ----------------------------------------------------------------------------
    def produce(self, topic: str, records: list[Record4], acks: str | int,
                partition: int | None = None) -> list[Outcome]:
        """Produce ``records`` (key, value, headers, partition) tuples; with ``partition``,
        the route's partition (which must exist: no auto-create then)."""
        if topic.startswith(P.INTERNAL_TOPIC_PREFIX):  # as the brokers answer a client's append there
            raise ClusterError(KINDS[P.INVALID_TOPIC], f"{P.error_name(P.INVALID_TOPIC)}: cannot append to internal "
                                                       f"topic {topic}: only the coordinator writes it")
        t = self._produce_topic(topic, partition)
        # the route's partition, or the highest a record names: one the topic lacks is no retriable error
        named = partition
        if partition is None:
            own = list(map(PARTITION_OF, records))
            if not set(map(type, own)) <= _PARTITION_TYPES:  # JSON Schema counts 1.0 as an integer
                records = _integer_partitions(records)
                own = list(map(PARTITION_OF, records))
            named = max(filter(_NOT_NONE, own), default=None)
            if named is not None and named >= len(t.partitions):
                t = self._checked_topic(topic, False)  # partitions added since the cached look
        _refuse_missing_partition(topic, named, t)
        live = [ep for ep in self.producer_endpoints if self.takes_work(ep)]
        if not live:
            raise ClusterError("unavailable", "the producer service is down or stopping: no produce is possible until "
                                              "it is back; nothing was written")
        results: list[tuple] = []  # (partition, offset, error code, message) rows
        failed: tuple | None = None  # (code, message) of the first chunk that failed
        for chunk in _chunks(records):  # each SVC_PRODUCE frame stays under SERVICE_REQUEST_BYTES_MAX
            if failed is not None:  # not sent: it would land ahead of the failed chunk's retry
                results += [(-1, -1, *failed)] * len(chunk)
                continue
            try:
                rows = self._produce_chunk(topic, chunk, acks)
                results += rows
                # a record the client will retry: the later chunks wait for that retry as well
                failed = next(((code, f"not sent: an earlier record of the request failed: {message}")
                               for _, _, code, message in rows if _retriable(code)), None)
            except ClusterError as e:
                if not results:
                    raise  # nothing of the request written: refuse it as a whole
                cause = e.__cause__
                # earlier chunks are in the log: answer per record, these ones failed (the
                # rows' messages go without the code's name: it is put in front below)
                code = cause.code if isinstance(cause, CodedError) else P.UNKNOWN
                message = cause.message if isinstance(cause, CodedError) and e.kind != "outcome_unknown" else e.message
                results += [(-1, -1, code, message)] * len(chunk)
                failed = (code, f"not sent: an earlier record of the request failed: {message}")
        gone: Callable[[int], bool] | None = None
        if any(r[2] == P.UNKNOWN_TOPIC_OR_PARTITION for r in results):
            if all(r[2] == P.UNKNOWN_TOPIC_OR_PARTITION for r in results):
                # deleted, or made again with fewer partitions, since the cached look: refused whole
                if self.topic_missing(topic):
                    raise ClusterError("topic_not_found", f"topic {topic!r} not found")
                _refuse_missing_partition(topic, named, self._recent_metadata().topics.get(topic))  # that fresh look
            gone = _gone_in(topic, partition, records, self.metadata().topics.get(topic))
        # a failed record's partition: where the service placed it, else the one the request
        # named for it (the route's, or its own; -1 only when neither did)
        return [(p, o, None, False) if not e else (
                    p if p >= 0 else partition if partition is not None else _named_partition(records[i]),
                    o, f"{P.error_name(e)}: {m}", _retriable(e, gone, i))
                for i, (p, o, e, m) in enumerate(results)]

    def _produce_topic(self, topic: str, partition: int | None) -> Any:
        """The topic a produce writes to, from metadata fetched lately (``_recent_metadata``),
        else afresh (made first when ``_checked_topic`` may). With no node answering (a
        whole-cluster outage) ClusterError(unavailable) at once, saying nothing was written:
        the request holds no worker waiting for a node to come back (docs/gateway.md)."""
        try:
            t = self._recent_metadata().topics.get(topic)
            if t is None or (partition is not None and partition >= len(t.partitions)):
                t = self._checked_topic(topic, partition is None)
        except ClusterError as e:
            if e.kind != "unavailable":
                raise
            raise ClusterError("unavailable", f"{e.message}; nothing was written: send the records again once "
                                              "a node is back") from e
        return t

    def _produce_chunk(self, topic: str, chunk: list[Record4], acks: str | int) -> tuple:
        """One SERVICE_PRODUCE's rows. Waits while the service that took it is up and the
        connection it went out on holds (a service killed with it, and restarted on its endpoint
        before the health watcher saw it down, never answers). Raises ClusterError:
        ``outcome_unknown`` (503 / 50302) when the request was sent and not answered -- its
        records may have been written --, ``unavailable`` (503 / 50301) when it was refused or
        not sent (nothing written), others as ``translated``."""
        with translated("the producer service"):
            try:
                return self._producer().produce_rows(topic, chunk, acks=acks, is_down=lambda ep: not self.is_up(ep))
            except RequestTimeout as e:
                if not e.may_have_arrived:
                    raise
                raise ClusterError("outcome_unknown", f"the producer service did not answer: {e.message}: the records "
                                                      "may have been written (sending them again may store them twice)") from e

    def _checked_topic(self, topic: str, may_create: bool) -> Any:
        """The topic from fresh metadata; created first when missing, ``may_create`` and
        ``gateway.auto_create_topics`` say so. Raises ClusterError(topic_not_found)."""
        if self.topic_missing(topic):
            if not (may_create and self.config.gateway.auto_create_topics):
                raise ClusterError("topic_not_found", f"topic {topic!r} not found (gateway.auto_create_topics is off)")
            self._auto_create(topic)
        t = self.metadata().topics.get(topic)
        if t is None:
            raise ClusterError("topic_not_found", f"topic {topic!r} not found")
        return t

    def topic_missing(self, topic: str) -> bool:
        md = self.metadata()
        if topic in md.topics:
            return False
        return topic not in self.metadata().topics  # a fresh look: it may just have been made

    def _auto_create(self, topic: str) -> None:
        try:
            self.create_topic(topic, None, None, {})
        except ClusterError as e:
            if e.kind != "topic_exists":
                raise
        deadline = time.monotonic() + CREATE_TOPIC_WAIT_MS / 1000
        while time.monotonic() < deadline:
            t = self.metadata().topics.get(topic)
            if t is not None and all(p.leader >= 0 for p in t.partitions):
                return
            time.sleep(0.05)

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


def _chunks(records: list[Record4]) -> Iterator[list[Record4]]:
    """Records in runs of at most P.SERVICE_RECORDS_PER_REQUEST_MAX records and about
    SERVICE_REQUEST_BYTES_MAX bytes (a larger record goes alone). Usually one run: the sizes
    are summed without a Python-level loop first."""
    if len(records) <= P.SERVICE_RECORDS_PER_REQUEST_MAX and (
            sum(map(len, map(_VALUE, records))) + RECORD_WIRE_OVERHEAD_BYTES * len(records)
            + sum(_extra_bytes(r) for r in records if r[0] is not None or r[2])) <= SERVICE_REQUEST_BYTES_MAX:
        yield records
        return
    run: list[Record4] = []
    size = 0
    for r in records:
        n = len(r[1]) + _extra_bytes(r) + RECORD_WIRE_OVERHEAD_BYTES
        if run and (size + n > SERVICE_REQUEST_BYTES_MAX or len(run) >= P.SERVICE_RECORDS_PER_REQUEST_MAX):
            yield run
            run, size = [], 0
        run.append(r)
        size += n
    if run:
        yield run


_VALUE = operator.itemgetter(1)


def _extra_bytes(r: Record4) -> int:
    """A record's bytes besides its value: key and headers."""
    return len(r[0] or b"") + sum(len(k) + len(v or b"") for k, v in r[2] or ())
