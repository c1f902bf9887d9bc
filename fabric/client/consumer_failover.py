"""The consumer's failover: the stall checks of requests in flight, the metadata requests
and their backoff, and the rerouting of requests whose leader moved. ``ConsumerFailover`` is
that half of ``fabric.client.consumer.Consumer``, which mixes it in: its state is the
consumer's own (set by ``Consumer.__init__``); the fetches and resets it reroutes are sent
there.

Failover: a fetch unanswered ``FETCH_STALL_MS`` past its long-poll wait (a dead or paused
leader never answers; the RPC timeout would take ``request_timeout_ms``) makes the consumer
ask for metadata, again at every stall check while it lasts; as soon as newer metadata names
another leader for a partition of a fetch (or a LIST_OFFSETS) in flight, or the same one at
another epoch (a restarted process: ``ClusterMetadata.leader_moved``), that request is
cancelled -- a late answer of the old leader is dropped -- and the partition is fetched from
the new leader at the same position. Fetches to other brokers are not touched. Metadata that
names a topic of the assignment by a new id (deleted and made again) starts its partitions again
at ``auto_offset_reset``. A partition whose fetch was refused (not_leader, an epoch error) or failed waits
``FETCH_RETRY_BACKOFF_MS`` or for newer metadata, and metadata requests back off
(``METADATA_BACKOFF_MS`` doubling to ``METADATA_BACKOFF_MS_MAX`` while nothing new comes),
so a cluster with no leader for a partition is asked a few times a second, not flooded.

Not thread-safe: part of Consumer, owned by the thread that uses the consumer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fabric import protocol as P
from fabric.client.bootstrap import CoordinatorSilence, metadata_endpoint
from fabric.clock import Clock
from fabric.errors import RemoteError
from fabric.metadata import ClusterMetadata, read_answer

if TYPE_CHECKING:
    from fabric.client.consumer import ConsumerClient, TopicPartition, _InFlight

# the consumer's logger, as before this half had a module of its own: hosts configure one
log = logging.getLogger("fabric.client.consumer")

METADATA_TIMEOUT_MS = 3000
METADATA_BACKOFF_MS = 100      # between two metadata requests (doubled while nothing new comes)
METADATA_BACKOFF_MS_MAX = 1000
METADATA_RETRY_MS = 100        # after a metadata request that got no answer


class ConsumerFailover:
    """``Consumer``'s stall checks, metadata and rerouting (see the module doc). Not usable
    alone: the attributes below are the consumer's, set by ``Consumer.__init__``."""

    # the consumer's state this half uses
    endpoints: list[str]
    clock: Clock
    reactor: Any
    metadata: ClusterMetadata
    _md_in_flight: bool
    _md_index: int
    _md_silence: CoordinatorSilence
    _md_backoff_ms: int
    _md_next_ms: int
    _fetching: dict[str, _InFlight]
    _resetting: dict[TopicPartition, _InFlight]
    _held_until_ms: dict[TopicPartition, int]
    _closed: bool
    positions: dict[TopicPartition, int | None]
    auto_offset_reset: str
    _read_in: dict[TopicPartition, str]  # per assigned partition, the topic id its position was read in
    # ... where that is an id the metadata did not name yet (``_positioned_from_outside``)
    _ahead_of_metadata: dict[TopicPartition, str]

    if TYPE_CHECKING:  # Consumer's, never these
        def _client(self, endpoint: str) -> ConsumerClient: ...
        def _reset(self, tps: list[TopicPartition] | None, spec: int | None) -> None: ...
        def _policy_spec(self) -> int | None: ...

    # -- failover ------------------------------------------------------------------------------
    def _check_stalls(self) -> None:
        """A request unanswered past its stall time may sit at a dead (or paused) leader: ask
        for metadata; a newer version that names another leader reroutes it
        (``_reroute_in_flight``)."""
        if self._closed:
            return
        now = self.clock.now_ms()
        for r in (*self._fetching.values(), *self._resetting.values()):
            if now - r.sent_ms >= r.stall_ms:
                self._refresh_metadata()
                return

    def _reroute_in_flight(self) -> None:
        """Give up every request in flight whose broker the metadata no longer names as the
        leader, at the epoch it was sent at, of one of its partitions -- assigned now or not (a
        rebalance revokes and reassigns while the metadata moves): it would be answered late
        or never, and a late answer of a deposed leader must not be read. The partitions are
        fetched again from the new leader at the same positions (nothing of the request was
        read)."""
        for endpoint, fetch in list(self._fetching.items()):
            if self._moved(fetch):
                del self._fetching[endpoint]
                self._client(endpoint).cancel(fetch.request_id)
        for tp, pending in list(self._resetting.items()):
            if self._moved(pending):
                del self._resetting[tp]
                self._client(pending.endpoint).cancel(pending.request_id)

    def _moved(self, r: _InFlight) -> bool:
        return any(self.metadata.leader_moved(*tp, r.endpoint, epoch) for tp, epoch in zip(r.partitions, r.epochs))

    def _refresh_metadata(self) -> None:
        """Ask for metadata now, or once the backoff since the last answer is over (at most
        one request in flight or waiting)."""
        if self._md_in_flight or self._closed:
            return
        self._md_in_flight = True
        wait_ms = self._md_next_ms - self.clock.now_ms()
        if wait_ms > 0:
            self.reactor.call_later(wait_ms, self._request_metadata)
        else:
            self._request_metadata()

    def _request_metadata(self) -> None:
        if self._closed:
            return
        sent_ms = self.clock.now_ms()
        endpoint = metadata_endpoint(self.metadata, self.endpoints, self._md_index, self._md_silence, sent_ms)

        def done(h: dict | None, _p: list, err: RemoteError | None) -> None:
            self._md_in_flight = False
            self._md_silence.heard(endpoint, err, self.clock.now_ms(), sent_ms)
            md = read_answer(h, endpoint) if h is not None else None
            if md is None:
                self._md_index += 1
                self._md_next_ms = self.clock.now_ms() + METADATA_RETRY_MS
                return
            if md.version > self.metadata.version:
                self._md_backoff_ms = METADATA_BACKOFF_MS
                self._take_metadata(md)
            else:  # nothing new (an election still under way): ask less often
                self._md_backoff_ms = min(2 * self._md_backoff_ms, METADATA_BACKOFF_MS_MAX)
            self._md_next_ms = self.clock.now_ms() + self._md_backoff_ms
        timeout_ms = self._md_silence.timeout_ms(endpoint, METADATA_TIMEOUT_MS, len(self.endpoints) > 1)
        self._client(endpoint).request(P.METADATA, {}, callback=done, timeout_ms=timeout_ms)

    def _take_metadata(self, md: ClusterMetadata) -> None:
        """Take newer metadata: refused partitions are asked again, requests whose leader moved
        rerouted. A partition whose position was read in a topic that ``md`` names by another
        id was deleted and made again: it starts again as never read (``auto_offset_reset``).
        Kept, a position of the old topic was fetched in the new one, whose records before it
        were skipped (and, by a group member, committed past). Only a position read in the old
        topic: one set from outside (a seek, a committed offset) while the consumer's metadata
        was older than the topic is the new topic's, and a reset skipped it (``latest``)."""
        recreated = self._recreated_partitions(md)
        self.metadata = md
        self._held_until_ms.clear()  # a refused partition may have a new leader: ask it now
        self._reroute_in_flight()
        if recreated:
            log.warning("topics %s were deleted and made again: their partitions start again at the %s offset "
                        "(auto_offset_reset)", ", ".join(sorted({t for t, _ in recreated})), self.auto_offset_reset)
            self._reset(recreated, self._policy_spec())

    def _recreated_partitions(self, md: ClusterMetadata) -> list[TopicPartition]:
        """The partitions whose position was read in a topic ``md`` names by another id (a topic
        ``md`` lacks -- deleted, not made again yet -- or names without an id: not yet). Not one
        positioned in a topic this consumer's metadata did not name yet (``_ahead_of_metadata``:
        a group's committed offset of a topic made again, taken while the metadata, or the
        broker's copy it came from, was older than the topic) unless ``md`` lists that id as
        deleted: else ``md`` is behind it, and a reset there lost the committed offset
        (``latest``: the new topic's records from it on were skipped, and committed past)."""
        ahead = self._ahead_of_metadata
        if ahead:  # those ``md`` names are no longer ahead of the metadata
            self._ahead_of_metadata = ahead = {tp: i for tp, i in ahead.items()
                                               if md.topic_ids_of([tp[0]]).get(tp[0]) != i}
        out = []
        for tp, read_in in self._read_in.items():
            new = md.topics.get(tp[0])
            if new is not None and new.topic_id and new.topic_id != read_in:
                if ahead.get(tp) != read_in or read_in in md.deleted_topic_ids:
                    out.append(tp)
        return out

    def _made_again_since(self, sent_ids: dict[str, str]) -> set[str]:
        """The topics a request named by another id than the metadata names them now (made again
        since it was sent): its answers about them are not of the topics now assigned, not read."""
        now = self.metadata.topic_ids_of(sent_ids)
        return {t for t, i in sent_ids.items() if now.get(t, i) != i}
