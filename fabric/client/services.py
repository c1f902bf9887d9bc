"""Blocking clients of the producer service and the consumer services (for the gateway and
thin clients). See nodes/producer.py and nodes/consumer.py for the wire shapes.

    sp = ServiceProducer(service_endpoints(config, "producer"))
    sp.produce("orders", [ServiceRecord(b"v", key=b"k")], acks="all") -> [ProduceResult...]

    sc = ServiceConsumer(service_endpoints(config, "consumer"))
    inst = sc.create("billing", config={"auto_offset_reset": "earliest"})
    inst.subscribe(["orders"]); inst.fetch(timeout_ms=1000); inst.commit(); inst.delete()

Instances are spread over the consumer services (by a hash of group and instance name, the
next service when one does not answer); an instance lives on the service that created it
(``inst.endpoint``), like a REST proxy's base URI.

Records travel in one payload frame, not in the msgpack header (which is bounded by
``P.HEADER_BYTES_MAX`` and decoded field by field): ``pack_rows`` makes the frame (a msgpack
array of rows, one C call), ``unpack_rows`` reads it with limits; the header carries the
count. SERVICE_PRODUCE sends its records that way and gets its results back that way;
records with neither key nor headers, all for one partition (or none), travel in the
``values`` form instead (header ``form: "values"``, ``partition``; the frame a msgpack array of
values), and their results, when all succeeded, come back in the ``columns`` form (header
``form: "columns"``; the frame ``[partitions, offsets]``): no array per record either way.
CONSUMER_FETCH with ``frame: true`` gets its records that way. A request with its records in
the header (``records``) is still answered in the header, as before.

Thread-safety: not thread-safe; one client per thread (the codec functions are pure).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any, Callable, NamedTuple

import msgpack
import zmq

from fabric import protocol as P
from fabric.blocking_client import BlockingClient, ClientsByEndpoint
from fabric.client.fetch_ledger import FetchLedger
from fabric.config import LoomConfig
from fabric.errors import CodedError, FabricError, MalformedFrame, RemoteError, RequestTimeout
from fabric.records import Record
from fabric.zmq_context import context as zmq_context

log = logging.getLogger(__name__)

# the fields of a (key, value, headers, partition) record row
KEY_OF, VALUE_OF, HEADERS_OF, PARTITION_OF = itemgetter(0), itemgetter(1), itemgetter(2), itemgetter(3)
PRODUCE_TIMEOUT_MS = 40_000   # above the service's delivery timeout
CALL_TIMEOUT_MS = 10_000
# a consumer-instance call that commits synchronously before it answers (commit, unsubscribe,
# delete): the instance retries its commit for up to the group consumer's COMMIT_TIMEOUT_MS (20 s)
COMMITTING_CALL_TIMEOUT_MS = 30_000
CREATE_TIMEOUT_MS = 5_000
# a service back from an outage (restarted by the supervisor) is reached this soon: a connection
# kept through the outage retried at most every P.RECONNECT_IVL_MAX_MS (5 s), and the first
# request after it waited that long for its connection
SERVICE_RECONNECT_IVL_MAX_MS = 500


def service_endpoints(config: LoomConfig, role: str) -> list[str]:
    """Endpoints of every node of ``role`` ("producer" or "consumer"), by node name."""
    return [n.endpoint for _, n in sorted(config.nodes_with_role(role).items())]


def pack_rows(rows: list | tuple) -> bytes:
    """One payload frame holding ``rows`` (lists or tuples of msgpack types)."""
    return msgpack.packb(rows, use_bin_type=True)


VALUES_FORM, COLUMNS_FORM = "values", "columns"  # SERVICE_PRODUCE's frames without an array per record


def unpack_columns(frame: bytes, count: int) -> tuple[list[int], list[int]]:
    """``(partitions, offsets)`` of a ``columns`` results frame for ``count`` records. Raises
    MalformedFrame(malformed_request)."""
    try:
        columns = msgpack.unpackb(frame, raw=False, max_array_len=P.MSGPACK_ARRAY_LEN_MAX, max_map_len=0)
    except Exception as e:  # msgpack raises several unrelated types
        raise MalformedFrame(P.MALFORMED_REQUEST, f"results frame is not valid msgpack: {e}") from e
    if not (isinstance(columns, list) and len(columns) == 2
            and all(isinstance(c, list) and len(c) == count for c in columns)):
        raise MalformedFrame(P.MALFORMED_REQUEST, f"a columns frame is [partitions, offsets] of {count} each")
    return columns[0], columns[1]


def unpack_values(frame: bytes, values_max: int) -> list:
    """The values of a ``values`` form frame (an array of at most ``values_max`` items; the
    caller checks their type). Raises MalformedFrame(malformed_request)."""
    try:
        values = msgpack.unpackb(frame, raw=False, max_array_len=P.MSGPACK_ARRAY_LEN_MAX, max_map_len=0)
    except Exception as e:  # msgpack raises several unrelated types
        raise MalformedFrame(P.MALFORMED_REQUEST, f"values frame is not valid msgpack: {e}") from e
    if not (isinstance(values, list) and len(values) <= values_max):
        raise MalformedFrame(P.MALFORMED_REQUEST, f"a values frame is an array of at most {values_max} values")
    return values


def unpack_rows(frame: bytes, rows_max: int, width: int | None) -> tuple:
    """The rows of a ``pack_rows`` frame, as tuples. Raises MalformedFrame(malformed_request)
    unless it is an array of at most ``rows_max`` rows, each an array of ``width`` items
    (``width`` None: the caller checks each row). Memory is bounded by the frame's size:
    msgpack refuses lengths longer than the data."""
    try:
        rows = msgpack.unpackb(frame, raw=False, use_list=False, max_array_len=P.MSGPACK_ARRAY_LEN_MAX,
                               max_map_len=P.MSGPACK_MAP_LEN_MAX)
    except Exception as e:  # msgpack raises several unrelated types
        raise MalformedFrame(P.MALFORMED_REQUEST, f"records frame is not valid msgpack: {e}") from e
    if not (isinstance(rows, tuple) and len(rows) <= rows_max
            and (width is None or all(isinstance(r, tuple) and len(r) == width for r in rows))):
        raise MalformedFrame(P.MALFORMED_REQUEST, f"records frame must be an array of at most {rows_max} rows"
                                                  + (f" of {width} items" if width else ""))
    return rows


class ServiceDown(RequestTimeout):
    """A SERVICE_PRODUCE not sent: every service it could go to is down (``is_down``). Nothing
    of it was written (``may_have_arrived`` False), unlike a RequestTimeout after sending."""

    may_have_arrived = False


@dataclass
class ServiceRecord:
    value: bytes
    key: bytes | None = None
    headers: list | None = None
    partition: int | None = None

    def to_wire(self) -> tuple:
        return (self.key, self.value, self.headers, self.partition)


class ProduceResult(NamedTuple):
    """One record's result (a row of the SERVICE_PRODUCE results frame)."""

    partition: int
    offset: int         # -1 with acks=0 or on error
    error: int = 0
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.error == 0


def _service_client(ctx: zmq.Context, endpoint: str, identity: str) -> BlockingClient:
    # a service killed with a request fails it at once (ConnectionLost), not at the deadline
    return BlockingClient(ctx, endpoint, identity=identity, fail_on_disconnect=True,
                          reconnect_ivl_max_ms=SERVICE_RECONNECT_IVL_MAX_MS)


def is_stopping_refusal(e: RemoteError) -> bool:
    """``e`` is a service's refusal of a request because it is stopping (draining after
    SIGTERM: ``buffer_full`` with ``stopping: true`` in the reply): nothing of the request was
    done, so another service may take it -- unlike a full buffer, the service's back-pressure."""
    return e.code == P.BUFFER_FULL and e.details.get("stopping") is True


class ServiceProducer:
    def __init__(self, endpoints: str | list[str], timeout_ms: int = PRODUCE_TIMEOUT_MS,
                 takes_work: Callable[[str], bool] | None = None) -> None:
        """``takes_work(endpoint)`` False: that service is up but stopping (it drains after
        SIGTERM and refuses new requests): nothing is sent to it, while a request already sent
        to it is waited for -- it answers (``is_down`` of ``produce`` gives up on it)."""
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self.endpoints:
            raise FabricError("no producer service endpoint")
        self.timeout_ms = timeout_ms
        self.takes_work = takes_work
        self.ctx = zmq_context()
        self._clients = ClientsByEndpoint(lambda endpoint: _service_client(self.ctx, endpoint, "service-producer"))

    def _client(self, endpoint: str) -> BlockingClient:
        return self._clients.get(endpoint)

    def produce(self, topic: str, records: list[ServiceRecord | tuple], acks: int | str = "all",
                is_down: Callable[[str], bool] | None = None) -> list[ProduceResult]:
        """One result per record, in order; records are ServiceRecords or (key, value,
        headers, partition) tuples. A request a service refuses because it is stopping (after
        SIGTERM, before ``takes_work`` says so) goes to the next service that takes work, each
        tried once. Raises RemoteError for a refused request (buffer_full: retry later -- also
        from a service stopping after SIGTERM when no other one took it, nothing written;
        invalid_record; malformed_request) or a timeout -- at once when ``is_down(endpoint)``
        says the service being waited for went down, or (ConnectionLost) the connection the
        request went out on ended: a process restarted on the endpoint never answers the old
        one's requests. A RequestTimeout's records may have been written, a ``ServiceDown``'s (no
        service up to send to, or every one up is stopping: ``takes_work``) were not."""
        return list(map(ProduceResult._make, self.produce_rows(topic, records, acks, is_down)))

    def produce_rows(self, topic: str, records: list[ServiceRecord | tuple], acks: int | str = "all",
                     is_down: Callable[[str], bool] | None = None) -> tuple:
        """``produce`` with each result a plain (partition, offset, error, message) tuple: no
        object per record for a caller that turns them into something else at once."""
        rows = [r.to_wire() if isinstance(r, ServiceRecord) else r for r in records]
        n = len(rows)
        partitions = list(map(PARTITION_OF, rows))
        if (n and list(map(KEY_OF, rows)).count(None) == n and list(map(HEADERS_OF, rows)).count(None) == n
                and partitions.count(partitions[0]) == n):
            frame = pack_rows(list(map(VALUE_OF, rows)))
            header = {"topic": topic, "acks": acks, "count": n, "form": VALUES_FORM, "partition": partitions[0]}
        else:
            frame = pack_rows(rows)
            header = {"topic": topic, "acks": acks, "count": n}
        last: RemoteError | None = None
        try:
            for endpoint in list(self.endpoints):  # a copy: a service found stopping moves to the back
                if is_down is not None and is_down(endpoint):
                    last = ServiceDown(f"producer service {endpoint} is down: the request was not sent")  # the next one
                    continue
                if self.takes_work is not None and not self.takes_work(endpoint):
                    last = ServiceDown(f"producer service {endpoint} is stopping: the request was not sent")
                    continue
                try:
                    give_up = (lambda: is_down(endpoint)) if is_down is not None else None
                    h, payloads = self._client(endpoint).call(P.SERVICE_PRODUCE, header, [frame], timeout_ms=self.timeout_ms,
                                                              give_up=give_up)
                except RequestTimeout:
                    self._clients.drop(endpoint)
                    # the next calls try the others first (without ``is_down`` nothing else tells us
                    # this one stopped answering); this call is not sent again elsewhere: it was
                    # sent and may have been written
                    self._ask_last(endpoint)
                    raise
                except RemoteError as e:
                    if not is_stopping_refusal(e):
                        raise
                    # it began draining before ``takes_work`` knew (a health interval): nothing of
                    # the request was written, so the next service that takes work gets it
                    self._ask_last(endpoint)
                    last = e
                    continue
                if len(payloads) != 1:
                    raise MalformedFrame(P.MALFORMED_REQUEST, "a SERVICE_PRODUCE reply has one results frame")
                if h.get("form") == COLUMNS_FORM:
                    partitions, offsets = unpack_columns(payloads[0], len(records))
                    return tuple(zip(partitions, offsets, repeat(0), repeat("")))
                rows = unpack_rows(payloads[0], len(records), 4)
                if len(rows) != len(records):
                    raise MalformedFrame(P.MALFORMED_REQUEST, f"{len(rows)} results for {len(records)} records")
                return rows
            assert last is not None
            raise last
        finally:  # an error caught or raised here holds this frame in its traceback: no local may hold it
            last = None

    def _ask_last(self, endpoint: str) -> None:
        """The next calls try ``endpoint`` after the others."""
        self.endpoints.remove(endpoint)
        self.endpoints.append(endpoint)

    def close(self) -> None:
        self._clients.close()


class Fetched(NamedTuple):
    """A CONSUMER_FETCH answer with where the instance stands after it (``fetch_with_positions``)."""

    records: list[Record]
    # every assigned partition's next offset to fetch, after ``records``; None while the
    # instance is not positioned: it joins its group, or looks a partition's position up (the
    # log start or end: ``auto_offset_reset`` without a committed offset, or out of range)
    positions: dict[tuple[str, int], int] | None
    generation: int  # of the group membership the assignment came from (-1: none, or assigned)
    # {topic: id} of the topics the positions are of (a topic deleted and made again changes it);
    # {} when unknown (an older service, or none named)
    topic_ids: dict[str, str] = {}


@dataclass
class ConsumerInstance:
    """A consumer instance living in one consumer service."""

    client: "ServiceConsumer"
    group: str
    name: str
    endpoint: str
    node: str = ""
    pid: int | None = None  # of the service process that made it (None: not said)
    _base: dict = field(default_factory=dict)
    # the caller's record of this instance's fetches (the gateway's, kept per instance across
    # its handles); None: fetches are neither numbered nor undone
    fetches: FetchLedger | None = None

    def _call(self, command: bytes, header: dict | None = None, timeout_ms: int = CALL_TIMEOUT_MS) -> dict:
        h = {"group": self.group, "instance": self.name, **self._settled(), **(header or {})}
        return self.client.call(self.endpoint, command, h, timeout_ms)

    def _settled(self) -> dict[str, int]:
        """``{answered, lost}`` while a fetch of this instance has no answer: lost, or on its way
        (``FetchLedger``)."""
        return {} if self.fetches is None else self.fetches.settled()

    def subscribe(self, topics: list[str]) -> None:
        self._call(P.CONSUMER_SUBSCRIBE, {"topics": list(topics)})

    def unsubscribe(self) -> None:
        """Leave the group or give the assigned partitions up, committing first (auto-commit)."""
        self._call(P.CONSUMER_SUBSCRIBE, {"topics": []}, timeout_ms=COMMITTING_CALL_TIMEOUT_MS)

    def subscription(self) -> list[str]:
        return self._call(P.CONSUMER_SUBSCRIPTION)["topics"]

    def fetch(self, timeout_ms: int = 1000, max_bytes: int = 1024 * 1024, max_records: int = 500) -> list[Record]:
        """Records after the instance's positions (which advance); waits up to timeout_ms.
        They come in one payload frame (``frame: true``)."""
        return self._fetch(timeout_ms, max_bytes, max_records, False).records

    def fetch_with_positions(self, timeout_ms: int = 1000, max_bytes: int = 1024 * 1024,
                             max_records: int = 500) -> "Fetched":
        """``fetch``, and where the instance stands after it (``positions: true``): whether it
        is positioned, and at which offsets -- see ``Fetched``."""
        return self._fetch(timeout_ms, max_bytes, max_records, True)

    def _fetch(self, timeout_ms: int, max_bytes: int, max_records: int, positions: bool) -> "Fetched":
        header = {"group": self.group, "instance": self.name, "timeout_ms": timeout_ms, "max_bytes": max_bytes,
                  "max_records": max_records, "frame": True, "budget_ms": CALL_TIMEOUT_MS}
        if positions:
            header["positions"] = True
        if self.fetches is None:
            return self._fetched(header, max_records, positions)
        with self.fetches.turn():
            header.update(self.fetches.settled())  # as they are now that the one before ended
            fetch_id = header["fetch_id"] = self.fetches.begin()
            try:
                fetched = self._fetched(header, max_records, positions)
            except BaseException:  # whatever ended it, its records (if any) reached nobody
                self.fetches.settle(fetch_id, answered=False)
                raise
            self.fetches.settle(fetch_id, answered=True)
            return fetched

    def _fetched(self, header: dict, max_records: int, positions: bool) -> "Fetched":
        h, payloads = self.client.call_frames(self.endpoint, P.CONSUMER_FETCH, header,
                                              header["timeout_ms"] + CALL_TIMEOUT_MS)
        if len(payloads) != 1:
            raise MalformedFrame(P.MALFORMED_REQUEST, "a CONSUMER_FETCH reply with frame: true has one records frame")
        records = list(map(Record._make, unpack_rows(payloads[0], max_records, len(Record._fields))))
        if not positions:
            return Fetched(records, None, -1)
        try:
            at = None if h["positions"] is None else {(t, p): o for t, p, o in h["positions"]}
            ids = h.get("topic_ids") or {}
            if not all(isinstance(t, str) and isinstance(i, str) for t, i in ids.items()):
                raise TypeError("topic_ids must map topic names to ids")
            return Fetched(records, at, int(h["generation"]), dict(ids))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise MalformedFrame(P.MALFORMED_REQUEST,
                                 f"a CONSUMER_FETCH reply without readable positions: {e}") from None

    def commit(self, offsets: dict[tuple[str, int], int] | None = None) -> None:
        """Commit these offsets (next offset to read) or, with None, the current positions."""
        body = None if offsets is None else [[t, p, o] for (t, p), o in sorted(offsets.items())]
        self._call(P.CONSUMER_COMMIT, {"offsets": body}, timeout_ms=COMMITTING_CALL_TIMEOUT_MS)

    def committed(self, partitions: list[tuple[str, int]] | None = None) -> dict[tuple[str, int], int]:
        """Committed offsets (-1: none) of these partitions, or of the assigned ones."""
        return self.committed_with_topic_ids(partitions)[0]

    def committed_with_topic_ids(self, partitions: list[tuple[str, int]] | None = None
                                 ) -> tuple[dict[tuple[str, int], int], dict[str, str]]:
        """``committed``, and {topic: id} of the topics those offsets are of (the coordinator's
        OFFSET_FETCH ``topic_ids``; empty from an older service): a seek to them names it
        (``seek(..., topic_ids=)``), so that an offset of a topic made again since is refused.
        Raises MalformedFrame for ids that are not strings."""
        body = None if partitions is None else [list(tp) for tp in partitions]
        h = self._call(P.CONSUMER_COMMITTED, {"partitions": body})
        ids = h.get("topic_ids") or {}
        if not isinstance(ids, dict) or not all(isinstance(t, str) and isinstance(i, str) for t, i in ids.items()):
            raise MalformedFrame(P.MALFORMED_REQUEST, "a CONSUMER_COMMITTED reply's topic_ids must map names to ids")
        return {(t, p): o for t, p, o in h["offsets"]}, dict(ids)

    def seek_to_beginning(self, partitions: list[tuple[str, int]] | None = None) -> None:
        self._call(P.CONSUMER_SEEK, {"to": "beginning", "partitions": [list(tp) for tp in partitions or []]})

    def seek_to_end(self, partitions: list[tuple[str, int]] | None = None) -> None:
        self._call(P.CONSUMER_SEEK, {"to": "end", "partitions": [list(tp) for tp in partitions or []]})

    def seek(self, offsets: dict[tuple[str, int], int], topic_ids: dict[tuple[str, int], str] | None = None) -> None:
        """Seek to ``offsets``; ``topic_ids``: per partition, the id of the topic its offset is of
        (``committed_with_topic_ids``): one that is not the topic's as the instance knows it -- a
        topic deleted since and made again under the name -- is refused, unknown_topic_id, and
        nothing is sought."""
        ids = topic_ids or {}
        self._call(P.CONSUMER_SEEK, {"to": "offsets", "offsets": [[t, p, o, ids[(t, p)]] if (t, p) in ids else [t, p, o]
                                                                  for (t, p), o in offsets.items()]})

    def assign(self, partitions: list[tuple[str, int]]) -> None:
        """Read exactly these partitions (no group membership); not while subscribed."""
        self._call(P.CONSUMER_ASSIGN, {"partitions": [list(tp) for tp in partitions]})

    def assignment(self) -> list[tuple[str, int]]:
        return [(t, p) for t, p in self._call(P.CONSUMER_ASSIGNMENT)["partitions"]]

    def owned(self) -> list[tuple[str, int]] | None:
        """The assigned partitions, or None while the instance joins its group (a rebalance
        under way: which partitions it will own is not known yet)."""
        h = self._call(P.CONSUMER_ASSIGNMENT)
        return None if h.get("joining") else [(t, p) for t, p in h["partitions"]]

    def positions(self) -> dict[tuple[str, int], int]:
        return {(t, p): o for t, p, o in self._call(P.CONSUMER_ASSIGNMENT)["positions"]}

    def delete(self, owner: str | None = None) -> None:
        """Close the instance: it commits (auto-commit) and leaves its group at once.
        ``owner``: only if it is still the instance that owner made (else unknown instance)."""
        self._call(P.CONSUMER_DELETE, None if owner is None else {"owner": owner}, timeout_ms=COMMITTING_CALL_TIMEOUT_MS)


class ServiceConsumer:
    def __init__(self, endpoints: str | list[str], is_down: Callable[[str], bool] | None = None) -> None:
        """``is_down(endpoint)``: a call waiting on a service stops as soon as it says True."""
        self.is_down = is_down
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self.endpoints:
            raise FabricError("no consumer service endpoint")
        self.ctx = zmq_context()
        self._clients = ClientsByEndpoint(lambda endpoint: _service_client(self.ctx, endpoint, "service-consumer"))
        self._round_robin = 0

    def call(self, endpoint: str, command: bytes, header: dict, timeout_ms: int = CALL_TIMEOUT_MS) -> dict:
        return self.call_frames(endpoint, command, header, timeout_ms)[0]

    def call_frames(self, endpoint: str, command: bytes, header: dict,
                    timeout_ms: int = CALL_TIMEOUT_MS) -> tuple[dict, list[bytes]]:
        """The reply's header and payload frames. Raises RemoteError (RequestTimeout; at once
        ConnectionLost when the connection the request went out on ended: the service was killed
        with it, and a long poll does not wait out its timeout for a reply that cannot come)."""
        c = self._clients.get(endpoint)
        give_up = (lambda: self.is_down(endpoint)) if self.is_down is not None else None  # type: ignore[misc]
        try:
            return c.call(command, header, timeout_ms=timeout_ms, give_up=give_up)
        except RequestTimeout:
            self._clients.drop(endpoint)  # a fresh socket next time: no late replies to sort out
            raise

    def create(self, group: str, name: str | None = None, config: dict[str, Any] | None = None) -> ConsumerInstance:
        """Create an instance on one of the services (spread by name; the next on a timeout or a
        ``buffer_full`` refusal: that service is stopping or full).
        Raises RemoteError(consumer_instance_exists) if the name is taken there."""
        n = len(self.endpoints)
        if name:
            start = zlib.crc32(f"{group}/{name}".encode()) % n
        else:
            self._round_robin += 1
            start = self._round_robin % n
        last: RemoteError | None = None
        try:
            for i in range(n):
                endpoint = self.endpoints[(start + i) % n]
                header: dict[str, Any] = {"group": group, "config": dict(config or {})}
                if name:
                    header["instance"] = name
                try:
                    h = self.call(endpoint, P.CONSUMER_CREATE, header, timeout_ms=CREATE_TIMEOUT_MS)
                except RequestTimeout as e:
                    last = e
                    continue
                except RemoteError as e:  # buffer_full: stopping, or full of instances -- made nothing there
                    if e.code != P.BUFFER_FULL:
                        raise
                    last = e
                    continue
                pid = h.get("pid")
                return ConsumerInstance(self, h["group"], h["instance"], endpoint, h.get("node", ""),
                                        pid if type(pid) is int else None)
            assert last is not None
            raise last
        finally:  # an error caught or raised here holds this frame in its traceback: no local may hold it
            last = None

    def instance(self, group: str, name: str, endpoint: str) -> ConsumerInstance:
        """A handle on an existing instance (e.g. remembered by the gateway)."""
        return ConsumerInstance(self, group, name, endpoint)

    def list_instances(self) -> dict[str, list[dict]]:
        """endpoint -> instances hosted there (services that do not answer are left out)."""
        out = {}
        for ep in self.endpoints:
            try:
                out[ep] = self.call(ep, P.CONSUMER_LIST, {}, timeout_ms=2000)["instances"]
            except CodedError as e:
                log.debug("consumer service %s left out of the list: %s", ep, e)
                continue
        return out

    def close(self) -> None:
        self._clients.close()
