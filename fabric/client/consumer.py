"""The consumer client: assign partitions, seek, poll.

``poll()`` runs a reactor in the caller's thread: it keeps one FETCH in flight per leader
broker (covering every assigned partition that broker leads), buffers what comes back, and
returns records in offset order per partition. ``poll_batch()`` returns the same records as
``RecordBatchView``s, one per partition run, counted from the batch headers and unpacked only
when read (the batch path: no Python object per record unless asked for). Reads stop at the high watermark, so a
consumer never sees a record that could still be lost. On not_leader or a timeout it
refreshes metadata and fetches from the new leader.

Consumer groups (``subscribe``/``commit``) build on this class; see ``fabric.client.group``.

Thread-safety: not thread-safe; use one Consumer per thread.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import zmq

from fabric import protocol as P
from fabric.client.admin import EARLIEST, LATEST
from fabric.client.bootstrap import metadata_endpoint, parse_bootstrap
from fabric.clock import Clock
from fabric.errors import FabricError, MalformedFrame, RemoteError, TopicNotInMetadataError
from fabric.metadata import ClusterMetadata
from fabric.reactor import Reactor
from fabric.records import Record, RecordBatchView, view_batches
from fabric.replies import FetchEntry, ListOffsetsEntry, decode_parts
from fabric.rpc import RpcClient

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
FETCH_WAIT_MS = 500
METADATA_TIMEOUT_MS = 3000


class Consumer:
    def __init__(self, bootstrap: str | list[str] | None = None, *, config_path: str | None = None,
                 auto_offset_reset: str = "latest", fetch_bytes_max: int = 8 * 1024 * 1024,
                 partition_fetch_bytes_max: int = 4 * 1024 * 1024, fetch_wait_ms: int = FETCH_WAIT_MS,
                 request_timeout_ms: int = 10_000, clock: Clock | None = None) -> None:
        """``clock``: the consumer's monotonic clock (a test passes a ``ManualClock``)."""
        if auto_offset_reset not in ("earliest", "latest", "none"):
            raise FabricError("auto_offset_reset must be earliest, latest or none")
        self.endpoints = parse_bootstrap(bootstrap, config_path)
        self.auto_offset_reset = auto_offset_reset
        self.fetch_bytes_max = fetch_bytes_max
        self.partition_fetch_bytes_max = partition_fetch_bytes_max
        self.fetch_wait_ms = fetch_wait_ms
        self.request_timeout_ms = request_timeout_ms
        self.ctx = zmq.Context.instance()
        self.clock = clock or Clock()
        self.reactor = Reactor(self.clock)
        self.metadata = ClusterMetadata.empty()
        self._md_in_flight = False
        self._md_index = 0
        self._clients: dict[str, RpcClient] = {}
        self.positions: dict[TopicPartition, int | None] = {}  # next offset poll() returns; None: reset
        self._fetch_positions: dict[TopicPartition, int] = {}  # next offset to fetch (prefetch)
        self._reset_specs: dict[TopicPartition, int] = {}
        self.buffered_records_max = 200_000
        self.high_watermarks: dict[TopicPartition, int] = {}
        # fetched records not yet returned: views of runs of one partition in offset order
        # (per-run, not per-record, bookkeeping keeps poll() cheap; nothing unpacked yet)
        self._buffer: deque[RecordBatchView] = deque()
        self._buffered_records = 0
        self._fetching: set[str] = set()  # endpoints with a fetch in flight
        self._resetting: set[TopicPartition] = set()
        self._closed = False

    # -- assignment ---------------------------------------------------------------------------
    def assign(self, partitions: list[TopicPartition]) -> None:
        """Read exactly these partitions (positions start per auto_offset_reset unless seeked)."""
        keep = {tp: self.positions.get(tp) for tp in partitions}
        self.positions = keep
        self._fetch_positions = {tp: o for tp, o in self._fetch_positions.items() if tp in keep}
        self._keep_buffered(lambda tp: tp in keep)

    def assignment(self) -> list[TopicPartition]:
        return sorted(self.positions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self.positions:
            raise FabricError(f"{tp[0]}-{tp[1]} is not assigned")
        self.positions[tp] = offset
        self._drop_buffered(tp)

    def seek_to_beginning(self, tps: list[TopicPartition] | None = None) -> None:
        self._reset(tps, EARLIEST)

    def seek_to_end(self, tps: list[TopicPartition] | None = None) -> None:
        self._reset(tps, LATEST)

    def position(self, tp: TopicPartition) -> int | None:
        return self.positions.get(tp)

    def _drop_buffered(self, tp: TopicPartition) -> None:
        self._keep_buffered(lambda other: other != tp)
        self._fetch_positions.pop(tp, None)

    def _keep_buffered(self, keep: Any) -> None:
        self._buffer = deque(run for run in self._buffer if keep((run.topic, run.partition)))
        self._buffered_records = sum(map(len, self._buffer))

    def _reset(self, tps: list[TopicPartition] | None, spec: int) -> None:
        for tp in tps or list(self.positions):
            self.positions[tp] = None
            self._reset_specs[tp] = spec
            self._drop_buffered(tp)

    # -- polling ------------------------------------------------------------------------------
    def poll(self, timeout_ms: int = 1000, max_records: int = 10_000) -> list[Record]:
        """Records after the current positions (advancing them); waits up to ``timeout_ms``
        for at least one. Raises RemoteError(corrupt_message) for a batch that is not what its
        header says."""
        out: list[Record] = []
        for view in self._poll_views(timeout_ms, max_records):
            out += view.records()
        return out

    def poll_batch(self, timeout_ms: int = 1000, max_records: int = 10_000) -> list[RecordBatchView]:
        """``poll`` as views: the records after the current positions (advancing them past
        every record returned), at most ``max_records`` in all, as one ``RecordBatchView`` per
        run of one partition, in offset order per partition; waits up to ``timeout_ms`` for
        at least one. A view reads its records from the fetched bytes when first asked
        (``values``, ``keys``...; see ``fabric.records.RecordBatchView``)."""
        return self._poll_views(timeout_ms, max_records)

    def _poll_views(self, timeout_ms: int, max_records: int) -> list[RecordBatchView]:
        """What ``poll`` and ``poll_batch`` share (a group consumer joins and commits here)."""
        if self._closed:
            raise FabricError("consumer is closed")
        deadline = self.clock.now_ms() + timeout_ms
        while True:
            self._send_fetches()
            if self._buffer:
                return self._take(max_records)
            left = deadline - self.clock.now_ms()
            if left <= 0:
                return []
            self.reactor.run_once(min(left, 100))

    def _take(self, max_records: int) -> list[RecordBatchView]:
        buf, positions = self._buffer, self.positions
        out: list[RecordBatchView] = []
        left = max(1, max_records)
        while buf and left > 0:
            run, rest = buf.popleft().split(left)
            if rest is not None:
                buf.appendleft(rest)
            out.append(run)
            left -= len(run)
            positions[(run.topic, run.partition)] = run.next_offset
        self._buffered_records -= max(1, max_records) - left
        self.reactor.run_once(0)  # let replies of prefetches in flight land
        return out

    def _client(self, endpoint: str) -> RpcClient:
        c = self._clients.get(endpoint)
        if c is None:
            c = self._clients[endpoint] = RpcClient(self.ctx, self.reactor, endpoint, identity="consumer")
        return c

    def _send_fetches(self) -> None:
        if self.metadata.version < 0:
            self._refresh_metadata()
            return
        by_leader: dict[str, list] = {}
        for tp, pos in self.positions.items():
            if pos is None:
                self._start_reset(tp)
                continue
            endpoint = self.metadata.leader_endpoint(*tp)
            if endpoint is None:
                self._refresh_metadata()
                continue
            if endpoint in self._fetching or self._buffered_records >= self.buffered_records_max:
                continue
            fetch_pos = self._fetch_positions.setdefault(tp, pos)
            info = self.metadata.partition(*tp)
            by_leader.setdefault(endpoint, []).append([tp[0], tp[1], fetch_pos, self.partition_fetch_bytes_max,
                                                       info.leader_epoch if info is not None else -1])
        for endpoint, parts in by_leader.items():
            self._fetching.add(endpoint)

            def done(h: dict | None, payloads: list, err: RemoteError | None, endpoint: str = endpoint) -> None:
                self._fetching.discard(endpoint)
                before = self._buffered_records
                self._on_fetch(h, payloads, err)
                if self._buffered_records > before and not self._closed:
                    self._send_fetches()  # prefetch: the broker reads the next chunk while the app works
            self._client(endpoint).request(P.FETCH, {"replica_id": -1, "wait_ms": self.fetch_wait_ms,
                                                     "max_bytes": self.fetch_bytes_max, "parts": parts,
                                                     "topic_ids": self.metadata.topic_ids_of({p[0] for p in parts})},
                                           callback=done, timeout_ms=self.fetch_wait_ms + self.request_timeout_ms)

    def _on_fetch(self, header: dict | None, payloads: list, err: RemoteError | None) -> None:
        if header is None:
            self._refresh_metadata()
            return
        try:
            entries = decode_parts(header, FetchEntry)
        except MalformedFrame as e:  # a broker's bad answer: dropped, asked again after a refresh
            log.warning("malformed fetch answer dropped: %s", e)
            self._refresh_metadata()
            return
        for entry, data in zip(entries, payloads):
            topic, partition, code, hw = entry.topic, entry.partition, entry.error, entry.high_watermark
            tp = (topic, partition)
            pos = self._fetch_positions.get(tp)
            if pos is None or self.positions.get(tp) is None:
                continue  # unassigned, seeked or being reset meanwhile
            if code == P.OFFSET_OUT_OF_RANGE:
                self._out_of_range(tp)
                continue
            if code:
                self._refresh_metadata()
                continue
            self.high_watermarks[tp] = hw
            if data:
                view = view_batches(topic, partition, data, start_offset=pos, end_offset=hw)
                if view is not None and view.first_offset == pos:  # else: a stale reply from before a seek
                    self._buffer.append(view)
                    self._buffered_records += len(view)
                    self._fetch_positions[tp] = view.next_offset

    def _out_of_range(self, tp: TopicPartition) -> None:
        if self.auto_offset_reset == "none":
            raise RemoteError(P.OFFSET_OUT_OF_RANGE, f"{tp[0]}-{tp[1]}: position {self.positions[tp]} is out of range")
        self._reset([tp], EARLIEST if self.auto_offset_reset == "earliest" else LATEST)

    def _start_reset(self, tp: TopicPartition) -> None:
        if tp in self._resetting:
            return
        endpoint = self.metadata.leader_endpoint(*tp)
        if endpoint is None:
            self._refresh_metadata()
            return
        spec = self._reset_specs.get(tp, EARLIEST if self.auto_offset_reset == "earliest" else LATEST)
        self._resetting.add(tp)

        def done(h: dict | None, _p: list, err: RemoteError | None) -> None:
            self._resetting.discard(tp)
            try:
                entries = decode_parts(h, ListOffsetsEntry) if h is not None else []
            except MalformedFrame:
                entries = []
            if not entries or entries[0].error:
                self._refresh_metadata()
                return
            if tp in self.positions and self.positions[tp] is None:
                self.positions[tp] = entries[0].offset
                self._reset_specs.pop(tp, None)
        self._client(endpoint).request(P.LIST_OFFSETS, {"parts": [[tp[0], tp[1], spec]],
                                                         "topic_ids": self.metadata.topic_ids_of([tp[0]])}, callback=done,
                                       timeout_ms=self.request_timeout_ms)

    def _refresh_metadata(self) -> None:
        if self._md_in_flight:
            return
        self._md_in_flight = True
        endpoint = metadata_endpoint(self.metadata, self.endpoints, self._md_index)

        def done(h: dict | None, _p: list, err: RemoteError | None) -> None:
            if h is not None:
                md = ClusterMetadata.from_wire(h["metadata"])
                if md.version >= self.metadata.version:
                    self.metadata = md
                self.reactor.call_later(0, self._metadata_done)
            else:
                self._md_index += 1
                self.reactor.call_later(100, self._metadata_done)
        self._client(endpoint).request(P.METADATA, {}, callback=done, timeout_ms=METADATA_TIMEOUT_MS)

    def _metadata_done(self) -> None:
        self._md_in_flight = False

    def partitions_for(self, topic: str, timeout_ms: int = 5000) -> list[int]:
        """Partition numbers of ``topic`` (waits up to ``timeout_ms`` for metadata that has it).
        Raises ``TopicNotInMetadataError``."""
        deadline = self.clock.now_ms() + timeout_ms
        while True:
            t = self.metadata.topics.get(topic)
            if t is not None:
                return [p.partition for p in t.partitions]
            if self.clock.now_ms() >= deadline:
                raise TopicNotInMetadataError(f"topic {topic!r} not found")
            self._refresh_metadata()
            self.reactor.run_once(100)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for c in self._clients.values():
            c.close()
        self._clients.clear()

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
