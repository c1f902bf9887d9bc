"""The consumer's fetching: one FETCH in flight per leader broker, covering every assigned
partition that broker leads, from each partition's fetch position (ahead of the position
``poll`` returns from: the next chunk is read while the application works on this one), and
naming the leader epoch of the record before it (KIP-320); what comes back is checked against
the reading (the topic id, a truncation, a divergence) and buffered as views of batch runs. A
partition without a position is positioned by a LIST_OFFSETS (``_start_reset``). A partition
whose fetch was refused or failed waits ``FETCH_RETRY_BACKOFF_MS`` or for newer metadata.
What it fetches ahead is bounded by records (``buffered_records_max``) and by bytes
(``buffered_bytes_max``: what is buffered -- the fetched bytes, and the batches a poll cut and
decoded whole for the rest it left buffered, estimated: ``fabric.decoded_batches``, some
8 times the fetched bytes for small records -- and what the fetches in flight may bring), the room
shared evenly by the leaders read; a partition that returned records is asked last at the
next fetch (``_send_fetches``, ``_on_fetch``). A fetch in flight was asked with the room there
was: a batch decoded since (a poll cut it) takes some of it, and that much of the answer is not
buffered (whole batches from its end; one at least is, as a broker answers), but fetched again
(``_shed_bytes``, ``_fitting``). ``ConsumerFetch`` is that part of ``fabric.client.consumer.Consumer``, which mixes it in: its
state is the consumer's own (set by ``Consumer.__init__``); the stalls and the rerouting of
these requests are ``ConsumerFailover``'s, the positions they read from ``ConsumerPositions``'.

Not thread-safe: part of Consumer, owned by the thread that uses the consumer.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engines import batch as B
from fabric import protocol as P
from fabric.client.consumer_positions import AUTO_RESET, ResetSpec
from fabric.clock import Clock
from fabric.errors import MalformedFrame, RemoteError
from fabric.metadata import ClusterMetadata
from fabric.decoded_batches import HeldBytes
from fabric.records import RecordBatchView, view_batches
from fabric.replies import FetchEntry, ListOffsetsEntry, decode_parts

if TYPE_CHECKING:
    from fabric.client.consumer import ConsumerClient, TopicPartition

# the consumer's logger, as before this part had a module of its own: hosts configure one
log = logging.getLogger("fabric.client.consumer")

FETCH_WAIT_MS = 500
FETCH_STALL_MS = 300           # a fetch unanswered this long past its wait_ms: look for a new leader
FETCH_RETRY_BACKOFF_MS = 100   # a partition whose fetch was refused or failed waits this long
# a consumer's defaults: the bound on the bytes it fetches ahead (buffered and asked for in
# flight), what one FETCH may bring, and what one partition's part of it may
BUFFERED_BYTES_MAX = 64 * 1024 * 1024
FETCH_BYTES_MAX = 8 * 1024 * 1024
PARTITION_FETCH_BYTES_MAX = 4 * 1024 * 1024
# below this much room (or the whole bound, if smaller) a fetch waits for the application to
# take records: not a stream of small fetches while the buffer is nearly full
FETCH_ROOM_BYTES_MIN = 256 * 1024


@dataclass
class _InFlight:
    """A FETCH (or LIST_OFFSETS) in flight to ``endpoint`` for ``partitions``, sent when the
    metadata named these leader ``epochs`` (a leader re-elected on the same endpoint -- a
    restarted process -- has a new epoch and never answers what its old process was sent)."""
    endpoint: str
    partitions: tuple[TopicPartition, ...]
    sent_ms: int
    stall_ms: int  # unanswered this long: stalled
    epochs: tuple[int, ...] = ()
    request_id: int = 0
    topic_ids: dict[str, str] = field(default_factory=dict)  # the ids it named its topics by
    max_bytes: int = 0  # a FETCH's: what its answer may bring (counted against the buffered-bytes bound)
    decoded_bytes: int = 0  # ... and the consumer's count of decoded batches when it was asked


def _fitting(data: bytes, room: int, start_offset: int, at_least_one: bool) -> int:
    """How many bytes of a fetched part ``data``, whole batches from its first, fit in ``room``;
    ``at_least_one`` (the answer's first part with records): as far as the first batch with
    records from ``start_offset`` on at least, whatever the room -- as a broker answers at least
    one batch, however big: a bound below a batch reads on (and a part shed is asked first next,
    its partition not having returned records). One header read per batch."""
    end = 0
    for h, batch in B.iter_batches(data):
        if end + len(batch) > room and not at_least_one:
            break
        end += len(batch)
        at_least_one = at_least_one and h.next_offset <= start_offset
    return end


class ConsumerFetch:
    """``Consumer``'s fetches and LIST_OFFSETS (see the module doc). Not usable alone: the
    attributes below are the consumer's, set by ``Consumer.__init__``."""

    # the consumer's state this part uses (what each holds: ``Consumer.__init__``)
    clock: Clock
    metadata: ClusterMetadata
    fetch_wait_ms: int
    fetch_bytes_max: int
    partition_fetch_bytes_max: int
    request_timeout_ms: int
    buffered_records_max: int
    buffered_bytes_max: int
    positions: dict[TopicPartition, int | None]
    high_watermarks: dict[TopicPartition, int]
    _fetch_positions: dict[TopicPartition, int]
    _fetch_epochs: dict[TopicPartition, int]
    _position_epochs: dict[TopicPartition, int]
    _read_hw: dict[TopicPartition, int]
    _read_in: dict[TopicPartition, str]
    _reset_specs: dict[TopicPartition, ResetSpec]
    _position_errors: dict[TopicPartition, tuple[int | None, RemoteError]]
    _buffer: deque[RecordBatchView]
    _buffered_records: int
    _buffered_bytes: int
    _decoded: HeldBytes
    _fetching: dict[str, _InFlight]
    _resetting: dict[TopicPartition, _InFlight]
    _held_until_ms: dict[TopicPartition, int]
    _closed: bool

    if TYPE_CHECKING:  # Consumer's, ConsumerPositions', ConsumerEpochs' and ConsumerFailover's, never these
        def _client(self, endpoint: str) -> ConsumerClient: ...
        def _awaits_position(self, tp: TopicPartition) -> bool: ...
        def _refresh_metadata(self) -> None: ...
        def _made_again_since(self, topic_ids: dict[str, str]) -> Any: ...
        def _out_of_range(self, tp: TopicPartition, pos: int, entry: FetchEntry) -> None: ...
        def _diverged(self, tp: TopicPartition, pos: int, diverging: Any) -> None: ...
        def _start_spec(self, tp: TopicPartition) -> ResetSpec: ...
        def _heard_since_waiting(self, tp: TopicPartition) -> bool: ...
        def _cannot_position(self, tp: TopicPartition, why: str) -> None: ...
        def _forget_epochs(self, tp: TopicPartition) -> None: ...

    def _send_fetches(self) -> None:
        if self.metadata.version < 0:
            self._refresh_metadata()
            return
        by_leader: dict[str, list] = {}
        waiting: list[TopicPartition] = []  # not fetched now: no position yet, or held back
        now = self.clock.now_ms()
        for tp, pos in self.positions.items():
            if pos is None:
                if not self._awaits_position(tp):
                    self._start_reset(tp)
                waiting.append(tp)
                continue
            if self._held_until_ms.get(tp, 0) > now:
                waiting.append(tp)
                continue
            endpoint = self.metadata.leader_endpoint(*tp)
            if endpoint is None:
                self._refresh_metadata()
                continue
            if endpoint in self._fetching or self._buffered_records >= self.buffered_records_max:
                continue
            fetch_pos = self._fetch_positions.setdefault(tp, pos)
            last_epoch = self._fetch_epochs.get(tp, self._position_epochs.get(tp, -1))
            by_leader.setdefault(endpoint, []).append([tp[0], tp[1], fetch_pos, self.partition_fetch_bytes_max,
                                                       self.metadata.leader_epoch(*tp), last_epoch])
        if not by_leader:
            return
        # the bytes bound: what is buffered and what the fetches in flight may bring, the room
        # left shared evenly by the leaders asked now (given whole to the first, it starved the
        # others: a long poll that came back empty was sent again first, with all of it). A
        # broker answers at least one whole batch, however big: a bound below a batch reads on.
        # The least worth a fetch is judged against every leader read, those in flight too: one
        # asked alone while the others' long polls wait (or a dead leader's fetch, until failover)
        # has its fair share of the bound left, never the whole minimum -- judged so, it waited
        # for all of them to come back. Nor is one asked more than its fair share: asked alone
        # while the others' partitions wait (a position looked up one by one, a refused fetch's
        # backoff), it took the whole bound, and they waited for its long poll
        leaders = len(by_leader) + len(self._fetching)
        if waiting:
            leaders += len({self.metadata.leader_endpoint(*tp) for tp in waiting}
                           - by_leader.keys() - self._fetching.keys() - {None})
        room = (self.buffered_bytes_max - self._buffered_bytes - self._decoded.bytes
                - sum(f.max_bytes for f in self._fetching.values()))
        share = min(room // len(by_leader), self.buffered_bytes_max // leaders)
        if share < min(FETCH_ROOM_BYTES_MIN, self.buffered_bytes_max // leaders):
            return  # the next poll asks again, once records were taken (nothing buffered or in flight: asked)
        # at least 1: a part asking for 0 bytes is answered with none (a bound below the number
        # of leaders asked, shared out, asked for nothing, and the reading stalled)
        max_bytes = max(1, min(self.fetch_bytes_max, share))
        for endpoint, parts in by_leader.items():
            if max_bytes < self.partition_fetch_bytes_max:
                for p in parts:
                    p[3] = max_bytes
            fetch = _InFlight(endpoint, tuple((p[0], p[1]) for p in parts), now, self.fetch_wait_ms + FETCH_STALL_MS,
                              tuple(p[4] for p in parts), topic_ids=self.metadata.topic_ids_of({p[0] for p in parts}),
                              max_bytes=max_bytes, decoded_bytes=self._decoded.bytes)
            self._fetching[endpoint] = fetch

            def done(h: dict | None, payloads: list, err: RemoteError | None, fetch: _InFlight = fetch) -> None:
                if self._fetching.get(fetch.endpoint) is not fetch:
                    return  # given up (leadership moved): what the old leader says is not read
                del self._fetching[fetch.endpoint]
                before = self._buffered_records
                self._on_fetch(fetch, h, payloads, err)
                if self._buffered_records > before and not self._closed:
                    self._send_fetches()  # prefetch: the broker reads the next chunk while the app works
            fetch.request_id = self._client(endpoint).request(
                P.FETCH, {"replica_id": -1, "wait_ms": self.fetch_wait_ms, "max_bytes": max_bytes,
                          "parts": parts, "topic_ids": fetch.topic_ids},
                callback=done, timeout_ms=self.fetch_wait_ms + self.request_timeout_ms)

    def _hold(self, tps: Any) -> None:
        """Fetch ``tps`` again only after FETCH_RETRY_BACKOFF_MS (or newer metadata): a broker
        that refuses at once is not asked again at once, and metadata is refreshed meanwhile."""
        until = self.clock.now_ms() + FETCH_RETRY_BACKOFF_MS
        for tp in tps:
            self._held_until_ms[tp] = until
        self._refresh_metadata()

    def _on_fetch(self, fetch: _InFlight, header: dict | None, payloads: list, err: RemoteError | None) -> None:
        if header is None:
            self._hold(fetch.partitions)
            return
        try:
            entries = decode_parts(header, FetchEntry)
        except MalformedFrame as e:  # a broker's bad answer: dropped, asked again after a refresh
            log.warning("malformed fetch answer dropped: %s", e)
            self._hold(fetch.partitions)
            return
        made_again = self._made_again_since(fetch.topic_ids)  # once per answer: thousands of parts
        answered = sum(map(len, payloads))
        shed = self._shed_bytes(fetch, answered)
        room = answered - shed if shed > 0 else None  # what of the answer is buffered (None: all)
        first = True  # no batch of the answer buffered yet
        for entry, data in zip(entries, payloads):
            topic, partition, code, hw = entry.topic, entry.partition, entry.error, entry.high_watermark
            tp = (topic, partition)
            pos = self._fetch_positions.get(tp)
            if pos is None or self.positions.get(tp) is None:
                continue  # unassigned, seeked or being reset meanwhile
            if made_again and topic in made_again:
                continue  # fetched again under the id the metadata names now
            sent_id = fetch.topic_ids.get(topic)
            if sent_id is not None and self._read_in.get(tp, sent_id) != sent_id:
                # the position is an offset of another topic of this name (a committed offset
                # of one made again, the metadata behind it): read once the metadata names it
                self._hold([tp])
                continue
            if code == P.OFFSET_OUT_OF_RANGE:
                self._out_of_range(tp, pos, entry)
                continue
            if code:
                self._hold([tp])
                continue
            if entry.diverging is not None:
                self._diverged(tp, pos, entry.diverging)
                continue
            self.high_watermarks[tp] = hw
            if hw > self._read_hw.get(tp, -1):
                self._read_hw[tp] = hw
            if sent_id is not None:
                self._read_in[tp] = sent_id
            if room is not None and len(data) > room:
                # a copy of what fits: the rest, let go, is fetched again once the room is there
                data = data[:_fitting(data, room, pos, at_least_one=first)]
            if data:
                view = view_batches(topic, partition, data, start_offset=pos, end_offset=hw)
                if view is not None and view.first_offset == pos:  # else: a stale reply from before a seek
                    if room is not None:
                        room -= len(data)
                    first = False
                    self._buffer.append(view)
                    self._buffered_records += len(view)
                    view.held = len(data)
                    self._buffered_bytes += view.held
                    view.count_decoded(self._decoded)
                    self._fetch_positions[tp] = view.next_offset
                    self._fetch_epochs[tp] = view.last_leader_epoch
                    # asked last by the next fetch (Kafka's consumer does so): a broker gives the
                    # parts of a fetch its max_bytes in the order asked, and the first part with
                    # a backlog spends it all when a batch is as big (a share of the bound): in
                    # the same order each time, the others on that leader were never read
                    self.positions[tp] = self.positions.pop(tp)

    def _shed_bytes(self, fetch: _InFlight, answered: int) -> int:
        """How many bytes of ``fetch``'s answer (``answered`` bytes) not to buffer (none if 0 or
        less): it was asked with the room there was, and a batch decoded since for the rest of a
        cut (counted in ``_decoded``) takes some of it -- the answer brought that much past the
        bound (6.1 MB held at a 4 MiB bound) -- as far as the room now falls short of what it
        brought, up to what it was asked for (records taken meanwhile made room; an answer
        smaller than its ask, a long poll's, may fit whole in what is left: measured against
        the ask, all of it but its first batch was let go and fetched again). Nothing else is
        shed: what a broker answers beyond the ask (a whole batch) is buffered as before, not
        fetched again."""
        room = (self.buffered_bytes_max - self._buffered_bytes - self._decoded.bytes
                - sum(f.max_bytes for f in self._fetching.values()))
        return min(self._decoded.bytes - fetch.decoded_bytes, min(fetch.max_bytes, answered) - room)

    def _start_reset(self, tp: TopicPartition) -> None:
        spec = self._reset_specs.get(tp, AUTO_RESET)
        if isinstance(spec, RemoteError):  # raised by every poll until the application seeks
            self._position_errors[tp] = (None, spec)
            return
        if spec == AUTO_RESET:
            spec = self._start_spec(tp)
            if spec is None and not self._heard_since_waiting(tp):
                return
        if spec is None:
            self._cannot_position(tp, "no position to start from (never seeked, nothing committed) and "
                                      "auto_offset_reset is none: seek first")
            return
        if tp in self._resetting:
            return
        if self._held_until_ms.get(tp, 0) > self.clock.now_ms():
            return
        endpoint = self.metadata.leader_endpoint(*tp)
        if endpoint is None:
            self._refresh_metadata()
            return
        pending = self._resetting[tp] = _InFlight(endpoint, (tp,), self.clock.now_ms(), FETCH_STALL_MS,
                                                  (self.metadata.leader_epoch(*tp),),
                                                  topic_ids=self.metadata.topic_ids_of([tp[0]]))

        def done(h: dict | None, _p: list, err: RemoteError | None) -> None:
            if self._resetting.get(tp) is not pending:
                return  # given up (leadership moved)
            del self._resetting[tp]
            try:
                entries = decode_parts(h, ListOffsetsEntry) if h is not None else []
            except MalformedFrame:
                entries = []
            if not entries or entries[0].error or self._made_again_since(pending.topic_ids):
                self._hold([tp])
                return
            if tp in self.positions and self.positions[tp] is None:
                self.positions[tp] = entries[0].offset
                # nothing read before it (an out-of-range reset that may still be given back kept
                # the reading's state, its epochs too: ``_reset``): named here, a leader whose epoch
                # read last ended below the new position sent the consumer back (and a commit of it,
                # a member starting there)
                self._forget_epochs(tp)
                self._reset_specs.pop(tp, None)
                if tp[0] in pending.topic_ids:
                    self._read_in[tp] = pending.topic_ids[tp[0]]
        pending.request_id = self._client(endpoint).request(
            P.LIST_OFFSETS, {"parts": [[tp[0], tp[1], spec]], "topic_ids": pending.topic_ids},
            callback=done, timeout_ms=self.request_timeout_ms)
