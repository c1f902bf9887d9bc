"""What ends batches of the producer's I/O thread before they are sent, where they wait: the
delivery timeout (a batch in its partition's queue, or in a one-way request not yet written to
the kernel, past ``delivery_timeout_ms``) and a partition gone from the metadata.
``SenderQueues`` is that part of ``fabric.client.sender.Sender``, which mixes it in: its state
is the sender's own (set by ``Sender.__init__``). Choosing what goes from the queues is
``Sender._send_ready``; building and sending the request, ``fabric.client.sender_requests``;
what an answer does to a batch sent, ``fabric.client.sender_replies``.

A partition that fresh metadata shows gone from its topic (deleted and re-created with fewer
partitions) is no retriable condition: its batches fail at once with
unknown_topic_or_partition. A topic missing from the metadata altogether is waited for (it may
be being made again), up to the delivery timeout. A partition that a send on this thread (a
delivery callback) named beyond the count held (``expect_partition``: it may have been added
since the last refresh, and the thread could not wait for a refresh while it ran the callback)
is judged by fresh metadata instead: its batches wait for two answers to refreshes asked for
after the send, and fail with ``TopicNotInMetadataError`` if neither shows it.

Why apart: each judges a batch that waits unsent (queued, or in a one-way request not yet
written) against the clock or the metadata, and ends it with an error of its own (``_finish``);
none of it packs, sends or reads a reply; the pass (``run_pass``, ``_send_ready``) calls it,
and a send on the I/O thread (``expect_partition``).

Not thread-safe: part of Sender, run on its I/O thread only.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from fabric import protocol as P
from fabric.client.futures import BatchState
from fabric.client.metadata_cache import MetadataCache
from fabric.errors import MAY_HAVE_BEEN_WRITTEN, DeliveryTimeoutError, RemoteError, TopicNotInMetadataError
from fabric.metadata import ClusterMetadata

if TYPE_CHECKING:
    from fabric.client.sender import SenderSettings
    from fabric.client.sender_flights import Flights


class SenderQueues:
    """``Sender``'s ending of batches that wait, unsent (see the module doc). Not usable alone:
    the attributes below are the sender's, set by ``Sender.__init__``."""

    # the sender's state this part uses
    settings: SenderSettings
    metadata_cache: MetadataCache
    metadata: ClusterMetadata
    _sequences: dict[tuple[str, int], int]
    _queues: dict[tuple[str, int], deque[BatchState]]
    _expected: dict[tuple[str, int], int]
    _flights: Flights
    _unsent_oneway: dict[int, list[BatchState]]

    if TYPE_CHECKING:  # Sender's and SenderReplies', never these
        def _due_soon(self, at_ms: int) -> None: ...
        def _finish(self, b: BatchState, base_offset: int, error: Exception | None) -> None: ...

    def _expire(self, now_ms: int) -> None:
        """Fail the batches whose delivery timeout has ended (in their queues, not in flight:
        a request's own timeout bounds those); the next such end is due (``_due_soon``)."""
        for tp, q in self._queues.items():
            if not q or tp in self._flights:
                continue
            while q and q[0].deadline_ms <= now_ms:
                b = q.popleft()
                info = self.metadata.partition(*tp)
                if info is not None and info.leader < 0:  # what kept it: said, not request_timed_out
                    b.last_error = RemoteError(P.LEADER_NOT_AVAILABLE, f"{tp[0]}-{tp[1]} has no leader (offline: no "
                                                                       "in-sync replica alive, or none heard yet)")
                self._finish(b, -1, _expired_error(b, tp, self.settings.delivery_timeout_ms))
            if q:
                self._due_soon(q[0].deadline_ms)
        for waiting in self._unsent_oneway.values():
            if waiting and waiting[0].deadline_ms <= now_ms:
                for b in [b for b in waiting if b.deadline_ms <= now_ms]:
                    waiting.remove(b)
                    b.possibly_written = True  # queued in the client: it may still go out
                    self._finish(b, -1, _expired_error(b, (b.topic, b.partition), self.settings.delivery_timeout_ms))
            if waiting:
                self._due_soon(waiting[0].deadline_ms)

    def _forget_deleted_topics(self) -> None:
        """Fresh metadata: drop the empty queues of partitions whose topic it no longer has
        (deleted). Kept, every partition ever produced to held its queue for the producer's
        life, and every pass (``_expire``, ``_send_ready``) walked them all; a send to a topic
        of that name makes its queue again. Their sequence numbers stay (what an idempotent
        producer must not lose while the broker may still know them)."""
        topics = self.metadata.topics
        for tp in [tp for tp, q in self._queues.items() if not q and tp[0] not in topics and tp not in self._flights]:
            del self._queues[tp]

    def expect_partition(self, tp: tuple[str, int]) -> None:
        """I/O thread: a send on it (from a callback) queued records for ``tp``, beyond the
        partition count held. Its batches are judged gone only by metadata answered after
        this call (``_partition_gone``); a refresh is asked for now."""
        self._expected[tp] = self.metadata_cache.answers
        self.metadata_cache.want_refresh()

    def _partition_gone(self, tp: tuple[str, int]) -> bool:
        """The metadata has the topic but not this partition: it was deleted and re-created
        with fewer partitions (no leader will ever take the partition's batches) -- or, for a
        partition ``expect_partition`` named, two answers to refreshes asked for after that
        (the first may answer a request sent before) do not have it either."""
        t = self.metadata.topics.get(tp[0])
        if t is None or tp[1] < len(t.partitions):
            return False
        since = self._expected.get(tp)
        return since is None or self.metadata_cache.answers >= since + 2

    def _fail_partition_gone(self, tp: tuple[str, int], q: deque[BatchState]) -> None:
        """Fail every batch queued for ``tp``, a partition gone (``_partition_gone``), with
        unknown_topic_or_partition at once: the cluster's metadata says so, and retrying to the
        delivery timeout cannot change it. A numbered batch resets the producer id (``_finish``)
        as any batch failed for good; a partition of that number made later (partitions added,
        or the topic made again) is a new log, numbered from 0."""
        count = len(self.metadata.topics[tp[0]].partitions)
        expected = self._expected.pop(tp, None) is not None
        while q:
            if expected:  # a partition a callback named beyond the count: the error its send would have raised
                error: Exception = TopicNotInMetadataError(f"{tp[0]} has no partition {tp[1]}")
            else:  # an earlier send may be in the deleted topic's log: said, as for every other error
                maybe = MAY_HAVE_BEEN_WRITTEN if q[0].possibly_written else ""
                error = RemoteError(P.UNKNOWN_TOPIC_OR_PARTITION, f"{tp[0]}-{tp[1]}: the topic has {count} partition(s) "
                                                                  f"now (deleted and made again with fewer){maybe}")
            self._finish(q.popleft(), -1, error)
        self._sequences.pop(tp, None)


def _expired_error(b: BatchState, tp: tuple[str, int], delivery_timeout_ms: int) -> DeliveryTimeoutError:
    """The error of a batch whose delivery timeout ended (a local condition), with the code of
    the last retriable error it got (not_enough_replicas, not_leader...), so the user sees why,
    else request_timed_out."""
    last = b.last_error
    code = last.code if last is not None else P.REQUEST_TIMED_OUT
    why = f" (last error: {last.message})" if last is not None and last.message else ""
    maybe = MAY_HAVE_BEEN_WRITTEN if b.possibly_written else ""
    return DeliveryTimeoutError(f"{tp[0]}-{tp[1]}: not delivered within delivery_timeout_ms={delivery_timeout_ms}{why}{maybe}",
                                code, last_error=last, possibly_written=b.possibly_written)
