"""The producer's I/O thread's asks to the cluster: metadata (kept fresh, asked again when a
request stalls, and what a fresh answer does to the requests in flight: those to a broker that
no longer leads their partition are failed, retriable, so that their batches go to the new
leader) and the idempotent producer's id. ``SenderAsks`` is that part of
``fabric.client.sender.Sender``, which mixes it in: its state is the sender's own (set by
``Sender.__init__``).

Not thread-safe: part of Sender, run on its I/O thread only.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable

from fabric import protocol as P
from fabric.client.bootstrap import metadata_attempt_after_failure, metadata_endpoint
from fabric.client.coordinator_silence import CoordinatorSilence, others_may_answer
from fabric.client.metadata_cache import MetadataCache
from fabric.clock import Clock
from fabric.errors import LeadershipMoved, RemoteError
from fabric.metadata import ClusterMetadata, read_answer

if TYPE_CHECKING:
    from fabric.client.sender import SenderClient
    from fabric.client.sender_flights import Flights

log = logging.getLogger("fabric.client.sender")

METADATA_TIMEOUT_MS = 3000
METADATA_RETRY_MS = 100
REQUEST_STALL_MS = 400       # a request unanswered this long makes us look for a new leader


class SenderAsks:
    """``Sender``'s asks to the cluster (see the module doc). Not usable alone: the attributes
    below are the sender's, set by ``Sender.__init__``."""

    # the sender's state this part uses
    clock: Clock
    metadata_cache: MetadataCache
    endpoints: list[str]
    reactor: Any
    producer_id: int
    producer_epoch: int
    producer_id_errors: Counter
    _flights: Flights
    _md_in_flight: bool
    _md_retry_at_ms: int
    _md_endpoint_index: int
    _md_silence: CoordinatorSilence
    _pid_in_flight: bool
    _pid_retry_at_ms: int
    metadata: ClusterMetadata
    wake: Callable[[], None]
    _client: Callable[[str], SenderClient]
    _forget_deleted_topics: Callable[[], None]  # fabric.client.sender_queues

    def _check_stalls(self) -> None:
        now = self.clock.now_ms()
        if any(now - f.sent_ms >= REQUEST_STALL_MS for _, f in self._flights.each()):
            self.metadata_cache.want_refresh()

    def _reroute_in_flight(self) -> None:
        """Requests in flight to a broker that no longer leads their partition at the epoch
        they were sent at will not be answered usefully: fail them now (retriable) so the
        batches go to the new leader. The same endpoint at a new epoch is a leader re-elected
        after a restart, whose old process took the request with it (the retry is recognised
        by the idempotent producer's sequence if that process had written it). A partition the
        newer metadata does not have at all fails the same way; its batches then fail for good
        at the next pass (``_fail_partition_gone``), while the other batches of the request go
        again."""
        stale = {f.endpoint for tp, f in self._flights.each() if self.metadata.leader_moved(*tp, f.endpoint, f.leader_epoch)}
        for ep in stale:
            self._client(ep).fail_all(LeadershipMoved("leadership moved (newer metadata names another leader)"))

    def _refresh_metadata(self) -> None:
        if self._md_in_flight:
            return
        if self.clock.now_ms() < self._md_retry_at_ms:
            # asked again at the retry's wake-up: an ask refused at once (every endpoint's port
            # closed) would otherwise go again at the next pass, hundreds of times a second
            self.metadata_cache.want_refresh()
            return
        self._md_in_flight = True
        sent_ms = self.clock.now_ms()
        endpoint = metadata_endpoint(self.metadata, self.endpoints, self._md_endpoint_index, self._md_silence, sent_ms)

        def done(h: dict | None, _p: list, err: RemoteError | None) -> None:
            self._md_in_flight = False
            self._md_silence.heard(endpoint, err, self.clock.now_ms())
            md = read_answer(h, endpoint) if h is not None else None
            if md is not None:
                held = self.metadata.version
                if self.metadata_cache.update(md):
                    if md.version != held:
                        log.debug("metadata version %d from %s", md.version, endpoint)
                    self._reroute_in_flight()
                    self._forget_deleted_topics()
            else:
                log.debug("no metadata from %s after %d ms (another endpoint asked in %d ms): %s", endpoint,
                          self.clock.now_ms() - sent_ms, METADATA_RETRY_MS, err if err is not None else "unreadable answer")
                self._md_endpoint_index = metadata_attempt_after_failure(self._md_endpoint_index, endpoint,
                                                                         self._md_silence, self.clock.now_ms())
                self._md_retry_at_ms = self.clock.now_ms() + METADATA_RETRY_MS
                self.metadata_cache.want_refresh()
                assert self.reactor is not None
                self.reactor.call_later(METADATA_RETRY_MS, self.wake)
        timeout_ms = self._md_silence.timeout_ms(endpoint, METADATA_TIMEOUT_MS,
                                                 others_may_answer(self.metadata, self.endpoints, endpoint))
        self._client(endpoint).request(P.METADATA, {}, callback=done, timeout_ms=timeout_ms)

    def _init_producer_id(self) -> None:
        if self._pid_in_flight or not self.metadata.coordinator:
            if not self.metadata.coordinator:
                self.metadata_cache.want_refresh()
            return
        if self.clock.now_ms() < self._pid_retry_at_ms:
            return  # asked again at the retry's wake-up, not at every pass (a refusal ends at once)
        self._pid_in_flight = True
        coordinator = self.metadata.coordinator

        def done(h: dict | None, _p: list, err: RemoteError | None) -> None:
            self._pid_in_flight = False
            if h is not None:
                self.producer_id, self.producer_epoch = h["producer_id"], h["producer_epoch"]
                self.wake()
            else:
                self.producer_id_errors[type(err).__name__] += 1
                log.debug("no producer id from %s (asked again in %d ms): %s", coordinator, METADATA_RETRY_MS, err)
                self._pid_retry_at_ms = self.clock.now_ms() + METADATA_RETRY_MS
                assert self.reactor is not None
                self.reactor.call_later(METADATA_RETRY_MS, self.wake)
        self._client(coordinator).request(P.INIT_PRODUCER_ID, {}, callback=done, timeout_ms=METADATA_TIMEOUT_MS)
