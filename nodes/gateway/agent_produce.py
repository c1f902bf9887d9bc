"""The gateway agent's produce (a mixin of ``nodes.gateway.agent.GatewayAgent``): records
handed to the producer service in SVC_PRODUCE requests of at most SERVICE_REQUEST_BYTES_MAX,
answered per record.

Produce looks topics up in metadata from a fetch begun at most ``PRODUCE_METADATA_MAX_AGE_MS``
ago (the agent's ``_recent_metadata``, shared by the request threads) instead of asking the
coordinator on every request: a topic not in it is looked up afresh before the request is
refused, and a request whose every record fails with an unknown topic or partition (deleted, or
made again with fewer partitions, meanwhile) is answered 404 after a fresh look too when that
look shows the topic, or a partition the request names, missing. A record failed with
unknown_topic_or_partition while the topic exists is retriable (the service places it again)
unless it names a partition a fresh look shows gone.

Thread-safety: as the agent's (each request thread its own producer-service client).
"""

from __future__ import annotations

import operator
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Iterator

from fabric import protocol as P
from fabric.client.services import PARTITION_OF, ServiceProducer
from fabric.config import LoomConfig
from fabric.errors import CodedError, RequestTimeout
from nodes.gateway.translate import KINDS, translated
from webui.errors import ClusterError

CREATE_TOPIC_WAIT_MS = 5000            # auto-create: wait for leaders before producing
SERVICE_REQUEST_BYTES_MAX = 8 * 1024 * 1024   # record bytes per SVC_PRODUCE (one payload frame)
RECORD_WIRE_OVERHEAD_BYTES = 64

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


class GatewayProduce:
    """The produce half of the gateway agent: the state it reads (``config``,
    ``producer_endpoints``, ``is_up``) and the calls it makes (``takes_work``, ``_producer``,
    ``metadata``, ``_recent_metadata``, ``create_topic``) are the agent's."""

    config: LoomConfig
    producer_endpoints: list[str]
    is_up: Callable[[str], bool]

    if TYPE_CHECKING:
        def takes_work(self, endpoint: str) -> bool: ...
        def _producer(self) -> ServiceProducer: ...
        def metadata(self) -> Any: ...
        def _recent_metadata(self) -> Any: ...
        def create_topic(self, name: str, partitions: int | None, replication_factor: int | None,
                         configs: dict[str, Any]) -> None: ...

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
