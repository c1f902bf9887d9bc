"""The PRODUCE requests of the producer's I/O thread: each batch's numbering (its sequence and
the producer-id generation it goes under) and its bytes, the request made of the batches that
``Sender._send_ready`` chose for one broker (each part's leader epoch and flags), and sending
it -- answered (the answers are read in the order the requests went,
``fabric.client.sender_flights``; what they do to the batches, ``fabric.client.sender_replies``)
or one-way at acks=0, whose batches are done once written to the kernel and go again, ahead of
their partitions' later ones, if the connection drops the request unwritten. ``SenderRequests`` is
that part of ``fabric.client.sender.Sender``, which mixes it in: its state is the sender's own
(set by ``Sender.__init__``).

Why apart: ``_send_ready`` decides which batches of which partitions go now (room in flight,
backoff, order, a request's size); this part turns the decision into a request on the wire and
keeps the one-way requests that no answer will end. It decides nothing about which batch goes.

Not thread-safe: part of Sender, run on its I/O thread only.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import TYPE_CHECKING

from fabric import protocol as P
from fabric.client.futures import BatchState
from fabric.client.metadata_cache import MetadataCache
from fabric.clock import Clock
from fabric.errors import CodedError, RemoteError
from fabric.hoptrace import mark
from fabric.metadata import ClusterMetadata

if TYPE_CHECKING:
    from fabric.client.sender import SenderClient, SenderSettings
    from fabric.client.sender_flights import Flights


class SenderRequests:
    """``Sender``'s numbering, packing and sending of PRODUCE requests (see the module doc). Not
    usable alone: the attributes below are the sender's, set by ``Sender.__init__``."""

    # the sender's state this part uses
    settings: SenderSettings
    clock: Clock
    metadata_cache: MetadataCache
    metadata: ClusterMetadata
    idempotent: bool
    producer_id: int
    producer_epoch: int
    _id_generation: int
    _sequences: dict[tuple[str, int], int]
    _queues: dict[tuple[str, int], deque[BatchState]]
    _flights: Flights
    _unsent_oneway: dict[int, list[BatchState]]
    _lost_oneway: dict[int, list[BatchState]]
    _oneway_numbers: itertools.count
    _passing: bool

    if TYPE_CHECKING:  # Sender's and SenderReplies', never these
        def wake(self) -> None: ...
        def _client(self, endpoint: str) -> SenderClient: ...
        def _due_soon(self, at_ms: int) -> None: ...
        def _finish(self, b: BatchState, base_offset: int, error: Exception | None) -> None: ...
        def _on_reply(self, groups: list, batches: list, header: dict | None, err: CodedError | None,
                      follows: list[bool]) -> None: ...

    def _numbering(self, b: BatchState) -> int:
        """The producer-id generation ``b`` goes numbered in when it is next packed (``_pack``)."""
        keeps = b.data is not None and (b.possibly_written or b.numbered_in == self._id_generation)
        return b.numbered_in if keeps else self._id_generation

    def _pack(self, b: BatchState, tp: tuple[str, int]) -> bytes:
        if self._numbering(b) != b.numbered_in:
            # numbered under a producer id since reset, and in no log: numbered again, in queue
            # order, so that batches of the old id and the new never follow one another out
            # of order (only a batch that may be written keeps its number, for its retry to be
            # recognised)
            b.data = None
        if b.data is None:
            seq = -1
            if self.idempotent:
                seq = self._sequences[tp]
                self._sequences[tp] = (seq + b.record_count) & 0x7FFFFFFF
            b.sequence = seq
            b.numbered_in = self._id_generation
            b.data = b.build(compression=self.settings.compression,
                             producer_id=self.producer_id if self.idempotent else -1,
                             producer_epoch=self.producer_epoch if self.idempotent else -1,
                             base_sequence=seq)
        return b.data

    def _send_request(self, endpoint: str, groups: list) -> bool:
        """False: a one-way request (acks=0) that the send queue refused (its batches are back in
        their queues)."""
        parts, payloads, batches, follows = [], [], [], []
        for tp, take in groups:
            epoch = self._flights.leader_epoch(tp)  # the epoch the request is remembered at (_send_ready)
            after = self._flights.follows(tp)  # an earlier request of tp is in flight
            for b in take:
                # a deposed leader refuses it (fenced); the last element's flags tell a broker
                # that may have forgotten our producer whether the batch can be in its log
                # already, and one that does not know it whether it follows a batch not yet
                # answered (then refused out of order, not taken at any sequence)
                parts.append([tp[0], tp[1], epoch, int(b.possibly_written) | (P.PART_FOLLOWS if after else 0)])
                payloads.append(b.data)
                batches.append(b)
                follows.append(after)
                after = True
        acks = self.settings.acks
        header = {"acks": acks, "timeout_ms": self.settings.request_timeout_ms, "parts": parts,
                  "topic_ids": self.metadata.topic_ids_of({p[0] for p in parts})}
        if acks == 0:
            for tp, _ in groups:
                self._flights.landed(tp)
                self._flights.settle(tp)
            # done once written to the kernel: a flush or close that ended while the request
            # waited for the connection dropped it with the socket (records told sent, lost)
            number = next(self._oneway_numbers)
            self._unsent_oneway[number] = batches
            if not self._client(endpoint).send_oneway(P.PRODUCE, header, payloads,
                                                      on_written=lambda ok: self._oneway_written(number, ok)):
                del self._unsent_oneway[number]
                for tp, take in groups:  # the send queue is full: sent again by a later pass
                    self._queues[tp].extendleft(reversed(take))
                return False
            return True

        # answers are read in the order the requests went to the broker (sender_flights)
        answer = self._flights.expect(endpoint, (groups, batches, follows))

        def on_reply(h: dict | None, _p: list, err: RemoteError | None) -> None:
            for (g, bs, fl), (h2, err2) in self._flights.answered(endpoint, answer, (h, err)):
                self._on_reply(g, bs, h2, err2, fl)
            if not self._passing:
                # read after the pass (a timeout is a timer; a message's pass follows it and
                # plans afresh): what it freed or put back goes at the next pass, at once
                self._due_soon(self.clock.now_ms())
        mark("sender.request")
        self._client(endpoint).request(P.PRODUCE, header, payloads, callback=on_reply,
                                       timeout_ms=self.settings.request_timeout_ms + 2000)
        return True

    def _oneway_written(self, number: int, written: bool) -> None:
        """acks=0: one-way request ``number`` is in the kernel (its batches are done, offset
        -1: the broker says nothing), or was dropped unwritten with its connection (its
        batches go again, ahead of their partitions' later ones, at the next pass)."""
        batches = self._unsent_oneway.pop(number, None)
        if batches is None:
            return  # failed meanwhile (expired, closed)
        if written:
            for b in batches:
                self._finish(b, -1, None)
        else:
            self._lost_oneway[number] = batches
            self.metadata_cache.want_refresh()  # the leader may have gone
            self.wake()

    def _requeue_lost_oneway(self) -> None:
        for number in sorted(self._lost_oneway, reverse=True):  # the newest first: each goes to the head
            for b in reversed(self._lost_oneway.pop(number)):
                self._queues[(b.topic, b.partition)].appendleft(b)
