"""The broker's Loom ROUTER handlers (Kafka's KafkaApis): PRODUCE, FETCH, LIST_OFFSETS and
REPLICA_ACK decoded from wire requests into the typed inputs of ``nodes/broker/messages.py``,
answered by the core (``nodes/broker/core.py``) and encoded back.

Produce requests of one reactor pass are appended together (``after_pass``: one group commit),
then answered -- or parked until the high watermark covers them (acks=all). Fetches with
nothing to return are parked until data arrives or their wait ends. The parking lot is this
front end's: the core tells it (as its ``Waiters``) which partitions changed.

Not thread-safe: everything runs on the broker's reactor thread.
"""

from __future__ import annotations

from typing import Any, Protocol

from engines.batch import parse_header
from fabric import protocol as P
from fabric import wire
from fabric.clock import Clock
from fabric.config import LimitsConfig
from fabric.errors import RemoteError
from fabric.hoptrace import mark
from fabric.rpc import DEFER
from nodes.broker.core import BrokerCore
from nodes.broker.messages import (
    MALFORMED_PRODUCE_MESSAGE,
    AppendRequest,
    FetchEntry,
    FetchInput,
    FetchRequest,
    ListOffsetsEntry,
    ListOffsetsInput,
    ProduceInput,
    ProduceResult,
    ReplicaAck,
    TopicPartition,
    encode_produce_results,
)
from nodes.broker.meter import BrokerMeter
from nodes.broker.parking import ParkedFetch, ParkedProduce, ParkingLot

PRODUCE_TIMEOUT_MS_DEFAULT = 30_000
PRODUCE_TIMEOUT_MS_MAX = 300_000


class Replier(Protocol):
    """The request port's answering side (``fabric.rpc.RpcServer``)."""

    def route(self, command: bytes, fn: Any) -> None: ...

    def reply(self, req: wire.Request, header: dict | None = None, payloads: Any = ()) -> None: ...

    def reply_error(self, req: wire.Request, code: int, message: str, **extra: Any) -> None: ...


class RequestHandlers:
    def __init__(self, core: BrokerCore, server: Replier, clock: Clock, limits: LimitsConfig,
                 meter: BrokerMeter | None = None) -> None:
        self.core = core
        self.server = server
        self.clock = clock
        self.limits = limits
        self.meter = meter
        self.parking = ParkingLot()
        # decoded produces of this pass: (request, its append request, answers of malformed parts)
        self._produce_queue: list[tuple[wire.Request, AppendRequest, dict[int, ProduceResult]]] = []
        core.add_waiters(self)
        for cmd, fn in ((P.PRODUCE, self.on_produce), (P.FETCH, self.on_fetch),
                        (P.LIST_OFFSETS, self.on_list_offsets), (P.REPLICA_ACK, self.on_replica_ack)):
            server.route(cmd, fn)

    # -- the core's Waiters ------------------------------------------------------------------------
    def partition_changed(self, key: TopicPartition | None) -> None:
        if key is None:
            self.parking.note_all_changed()
        else:
            self.parking.note_changed(key)

    def leadership_lost(self, key: TopicPartition, code: int) -> None:
        for item in self.parking.fail_partition(key, code):
            self._reply_produce(item.handle, item.results)

    # -- produce -----------------------------------------------------------------------------------
    def on_produce(self, req: wire.Request) -> Any:
        mark("produce.request")
        get = req.header.get
        parts, acks, timeout_ms = get("parts"), get("acks", 1), get("timeout_ms", 0)
        if parts.__class__ is not list or acks.__class__ is not int or timeout_ms.__class__ is not int:
            # not the usual fields: checked one by one (the error names the field)
            parts = req.get("parts", list)
            acks = req.get("acks", int, 1)
            if acks in (0, 1, -1):  # else refused below, for acks before timeout_ms
                req.get("timeout_ms", int, 0)  # checked here: the group commit after the pass must not fail on it
        if acks not in (0, 1, -1):
            raise RemoteError(P.MALFORMED_REQUEST, "acks must be 0, 1 or -1 (all)")
        if len(parts) != len(req.payloads):
            raise RemoteError(P.MALFORMED_REQUEST, f"{len(parts)} parts but {len(req.payloads)} payload frames")
        inputs, malformed = [], {}
        for i, (tp, data) in enumerate(zip(parts, req.payloads)):
            inp = ProduceInput.decode(tp, data)
            if inp is None:
                malformed[i] = ProduceResult(-1, P.MALFORMED_REQUEST, MALFORMED_PRODUCE_MESSAGE)
            else:
                inputs.append(inp)
        ids = req.header.get("topic_ids")
        request = AppendRequest(acks, inputs, ids if isinstance(ids, dict) else None, req.header.get("internal") is True)
        self._produce_queue.append((req, request, malformed))
        return DEFER

    def _process_produces(self) -> None:
        """Group commit: every produce of this pass, appended per partition in one call."""
        queue, self._produce_queue = self._produce_queue, []
        all_results = self.core.append([a for _, a, _ in queue])
        now = self.clock.now_ms()
        for (req, append, malformed), results in zip(queue, all_results):
            if malformed:  # put the answers of malformed parts back in their places
                rest = iter(results)
                results = [malformed[i] if i in malformed else next(rest) for i in range(len(req.payloads))]
            self._finish_produce(req, append, results, now)

    def _finish_produce(self, req: wire.Request, append: AppendRequest, results: list[ProduceResult],
                        now_ms: int) -> None:
        if append.acks != -1 or all(r.error != 0 or r.base_offset < 0 for r in results):
            self._reply_produce(req, results)
            return
        waits = []
        for i, (tp, data, r) in enumerate(zip(req.header["parts"], req.payloads, results)):
            if r.error == 0:
                waits.append((i, (tp[0], tp[1]), r.base_offset + parse_header(data).record_count))
        timeout = min(max(int(req.header.get("timeout_ms", PRODUCE_TIMEOUT_MS_DEFAULT)), 0), PRODUCE_TIMEOUT_MS_MAX)
        if not self.parking.park_produce(ParkedProduce(req, results, waits, now_ms + timeout)):
            self.server.reply_error(req, P.BUFFER_FULL, "too many requests waiting on this broker")

    def _reply_produce(self, req: wire.Request, results: list[ProduceResult]) -> None:
        mark("produce.answer")  # before the send, as every point that hands a message on
        self.server.reply(req, {"results": encode_produce_results(results)})

    # -- fetch -------------------------------------------------------------------------------------
    def on_fetch(self, req: wire.Request) -> Any:
        parts = req.get("parts", list)
        if len(parts) > P.PARTITIONS_MAX:
            raise RemoteError(P.REQUEST_TOO_LARGE, "too many partitions in one fetch")
        replica_id = req.get("replica_id", int, -1)
        max_bytes = req.get("max_bytes", int, self.limits.fetch_bytes_max)
        wait_ms = min(max(req.get("wait_ms", int, 0), 0), self.limits.fetch_wait_ms_max)
        ids = req.header.get("topic_ids")
        fetch = FetchRequest(replica_id, min(max(max_bytes, 1), self.limits.fetch_bytes_max),
                             [FetchInput.decode(tp) or tp for tp in parts], ids if isinstance(ids, dict) else None,
                             req.header.get("incarnation"))
        now = self.clock.now_ms()
        header, payloads, nbytes = self.build_fetch_reply(fetch, now)
        if nbytes > 0 or wait_ms == 0:
            return header, payloads
        keys = frozenset((i.topic, i.partition) for i in fetch.parts if type(i) is FetchInput)
        if not self.parking.park_fetch(ParkedFetch((req, fetch), keys, now + wait_ms)):
            return {"parts": []}
        return DEFER

    def build_fetch_reply(self, fetch: FetchRequest, now_ms: int) -> tuple[dict, list, int]:
        """(reply header, payloads, bytes of batches in it)."""
        out, payloads, total = [], [], 0
        budget = fetch.budget_bytes
        consumer = fetch.replica_id < 0
        # judged now, not when it arrived: a parked fetch of a process that a restart replaced
        # since must not count when read again at the restart's new partition epoch
        counts = consumer or self.core.current_process(fetch.replica_id, fetch.incarnation)
        for inp in fetch.parts:
            if type(inp) is not FetchInput:
                entry, data = self._malformed_fetch_part(inp, fetch.topic_ids), b""
            elif fetch.topic_ids and self.core.is_other_topic_id((inp.topic, inp.partition),
                                                                 fetch.topic_ids.get(inp.topic)):
                # another topic of that name: refresh, retry
                entry, data = FetchEntry.failed(inp.topic, inp.partition, P.UNKNOWN_TOPIC_OR_PARTITION), b""
            else:
                entry, data = self.core.fetch(inp, fetch.replica_id, now_ms, budget - total, counts=counts)
                if consumer and data and self.meter is not None:
                    self.meter.fetched(inp.topic, data)
            out.append(entry)
            payloads.append(data)
            total += len(data)
        return {"parts": out}, payloads, total

    def _malformed_fetch_part(self, tp: Any, topic_ids: dict | None) -> FetchEntry:
        # a part naming a partition we hold under another topic id says so even when the rest
        # of it is malformed (the order the checks always had)
        if topic_ids and isinstance(tp, (list, tuple)) and len(tp) >= 2 and isinstance(tp[0], str) \
                and isinstance(tp[1], int) and self.core.is_other_topic_id((tp[0], tp[1]), topic_ids.get(tp[0])):
            return FetchEntry.failed(tp[0], tp[1], P.UNKNOWN_TOPIC_OR_PARTITION)
        return FetchEntry.failed(None, None, P.MALFORMED_REQUEST)

    def on_replica_ack(self, req: wire.Request) -> Any:
        """One-way from a follower: its log end offset after appending from the stream."""
        mark("ack.received")
        follower = req.header.get("broker_id")
        parts = req.header.get("parts")
        if isinstance(follower, int) and isinstance(parts, list) \
                and self.core.current_process(follower, req.header.get("incarnation")):
            now = self.clock.now_ms()
            for raw in parts[:P.PARTITIONS_MAX]:
                ack = ReplicaAck.decode(raw)
                if ack is not None:
                    self.core.follower_position(follower, (ack.topic, ack.partition), ack.log_end_offset,
                                                ack.leader_epoch, now)
        return DEFER  # one-way: no reply

    # -- list offsets ------------------------------------------------------------------------------
    def on_list_offsets(self, req: wire.Request) -> dict:
        """parts: [[topic, partition, spec]] with spec -2 earliest, -1 latest, >=0 timestamp."""
        out = []
        ids = req.header.get("topic_ids")
        for tp in req.get("parts", list):
            inp = ListOffsetsInput.decode(tp)
            if inp is None:
                out.append(ListOffsetsEntry(None, None, P.MALFORMED_REQUEST, -1))
            elif isinstance(ids, dict) and self.core.is_other_topic_id((inp.topic, inp.partition), ids.get(inp.topic)):
                out.append(ListOffsetsEntry(inp.topic, inp.partition, P.UNKNOWN_TOPIC_OR_PARTITION, -1))
            else:
                out.append(ListOffsetsEntry(inp.topic, inp.partition,
                                            *self.core.list_offset((inp.topic, inp.partition), inp.spec)))
        return {"parts": out}

    # -- the per-pass hook -------------------------------------------------------------------------
    def after_pass(self) -> None:
        """Run the group commit of this pass, then answer parked requests that are ready."""
        if self._produce_queue:
            self._process_produces()
        now = self.clock.now_ms()
        if self.parking.has_changes() or self.parking.has_due(now):
            self._service_parked(now)

    def _service_parked(self, now_ms: int) -> None:
        ready = self.parking.take_ready(now_ms, self.core.replicated)
        for item in ready.replicated:
            for i, key, _ in item.waits:
                shortfall = self.core.isr_shortfall(key)
                if shortfall is not None and item.results[i].error == 0:
                    item.results[i] = item.results[i].failed(P.NOT_ENOUGH_REPLICAS_AFTER_APPEND, shortfall)
            self._reply_produce(item.handle, item.results)
        for item in ready.timed_out:
            self._reply_produce(item.handle, item.results)
        for item in ready.fetches:
            req, fetch = item.handle
            header, payloads, nbytes = self.build_fetch_reply(fetch, now_ms)
            if nbytes > 0 or now_ms >= item.deadline_ms:
                self.server.reply(req, header, payloads)
            else:
                self.parking.repark_fetch(item)
