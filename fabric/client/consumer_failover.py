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
at the new topic's log start, whatever ``auto_offset_reset`` says: every record of the new topic
is newer than the consumer's reading of the topic (the policy is for a partition the consumer
has no position in at all; ``latest`` there skipped what was written to the new topic before the
consumer noticed it). So does a partition that appears while the consumer reads its topic (more
partitions, a topic made again, a topic subscribed to before it existed) and has nothing to start
from: ``_appeared_while_read``. A position set from outside in a topic id the metadata does not
name yet waits for it only until the coordinator's metadata, asked for after the position was
set, names another id (``_judge_ahead``). A partition whose fetch was refused (not_leader, an
epoch error) or failed waits ``FETCH_RETRY_BACKOFF_MS`` or for newer metadata, and metadata requests back off
(``METADATA_BACKOFF_MS`` doubling to ``METADATA_BACKOFF_MS_MAX`` while nothing new comes),
so a cluster with no leader for a partition is asked a few times a second, not flooded.

Not thread-safe: part of Consumer, owned by the thread that uses the consumer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fabric import protocol as P
from fabric.client.admin import EARLIEST
from fabric.client.bootstrap import metadata_attempt_after_failure, metadata_endpoint
from fabric.client.coordinator_silence import CoordinatorSilence, others_may_answer
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
    _md_asked: int     # metadata requests sent so far (``_note_first_seen``, ``Consumer._heard_since_waiting``)
    _md_answered: int  # the latest of them (by that count) answered with metadata
    _fetching: dict[str, _InFlight]
    _resetting: dict[TopicPartition, _InFlight]
    _held_until_ms: dict[TopicPartition, int]
    _closed: bool
    positions: dict[TopicPartition, int | None]
    auto_offset_reset: str
    _read_in: dict[TopicPartition, str]  # per assigned partition, the topic id its position was read in
    # ... where that is an id the metadata did not name yet (``_positioned_from_outside``)
    _ahead_of_metadata: dict[TopicPartition, str]
    _ahead_since: dict[TopicPartition, tuple[int, bool]]  # per one of those, (``_md_asked`` then, committed?)
    # per topic read, (its id, its partition count) as the metadata named it when the consumer began
    # reading it (id None: the metadata had no such topic); ``_appeared_while_read``
    _first_seen: dict[str, tuple[str | None, int]]
    _positioned_in: dict[TopicPartition, str]  # per partition not in ``_read_in``, the id a commit of it names
    # per topic read not in ``_first_seen`` yet, ``_md_asked`` when the consumer began reading it:
    # the answer to a later request notes it (``_note_first_seen``)
    _unseen: dict[str, int]

    if TYPE_CHECKING:  # Consumer's, never these
        def _client(self, endpoint: str) -> ConsumerClient: ...
        def _reset(self, tps: list[TopicPartition] | None, spec: int | RemoteError | None) -> None: ...
        def _policy_spec(self) -> int | None: ...
        def _topics_read(self) -> set[str]: ...

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
        self._md_asked += 1
        asked = self._md_asked

        def done(h: dict | None, _p: list, err: RemoteError | None) -> None:
            self._md_in_flight = False
            self._md_silence.heard(endpoint, err, self.clock.now_ms(), sent_ms)
            md = read_answer(h, endpoint) if h is not None else None
            if md is None:
                self._md_index = metadata_attempt_after_failure(self._md_index, endpoint, self._md_silence,
                                                                self.clock.now_ms())
                self._md_next_ms = self.clock.now_ms() + METADATA_RETRY_MS
            else:
                self._md_answered = max(self._md_answered, asked)
                if md.version > self.metadata.version:
                    self._md_backoff_ms = METADATA_BACKOFF_MS
                    self._take_metadata(md)
                elif not self._unseen:  # nothing new (an election still under way): ask less often
                    self._md_backoff_ms = min(2 * self._md_backoff_ms, METADATA_BACKOFF_MS_MAX)
                self._md_next_ms = self.clock.now_ms() + self._md_backoff_ms
                self._note_first_seen(endpoint, asked)
                self._judge_ahead(endpoint, asked, md.version)
            if self._unseen or self._ahead_of_metadata:
                self._refresh_metadata()
        timeout_ms = self._md_silence.timeout_ms(endpoint, METADATA_TIMEOUT_MS,
                                                 others_may_answer(self.metadata, self.endpoints, endpoint))
        self._client(endpoint).request(P.METADATA, {}, callback=done, timeout_ms=timeout_ms)

    def _take_metadata(self, md: ClusterMetadata) -> None:
        """Take newer metadata: refused partitions are asked again, requests whose leader moved
        rerouted. A partition whose position was read in a topic that ``md`` names by another
        id was deleted and made again: it starts again in the new topic (``_start_again``: at its
        log start -- every record of it is newer than this consumer's reading, and
        ``auto_offset_reset`` ``latest`` skipped those written before the consumer noticed). Kept,
        a position of the old topic was fetched in the new one, whose records before it were
        skipped (and, by a group member, committed past). Only a position read in the old topic:
        one set from outside (a seek, a committed offset) while the consumer's metadata was older
        than the topic is the new topic's, and a reset skipped it (``latest``)."""
        recreated = self._recreated_partitions(md)
        self.metadata = md
        self._held_until_ms.clear()  # a refused partition may have a new leader: ask it now
        self._reroute_in_flight()
        if recreated:
            log.warning("topics %s were deleted and made again: their partitions start again in the new topic",
                        ", ".join(sorted({t for t, _ in recreated})))
            self._start_again(recreated)

    def _start_again(self, tps: list[TopicPartition]) -> None:
        """``tps`` were read in a topic deleted and made again since: they start at the new
        topic's log start (a group consumer looks its committed offset of the new topic up first)."""
        self._reset(tps, EARLIEST)

    def _began_reading(self) -> None:
        """Forget the topics no longer read (subscribed, or of the assignment); for each one read
        that is new, ask for metadata: its answer notes how the topic was when the reading began
        (``_note_first_seen``). Not the metadata at hand: asked for only when needed, it may be
        older than a topic made (or given partitions) long before the reading began, whose
        partitions then looked newer than the reading and were read from their log start."""
        read = self._topics_read()
        if self._first_seen.keys() - read:
            self._first_seen = {t: s for t, s in self._first_seen.items() if t in read}
        if self._unseen.keys() - read:
            self._unseen = {t: n for t, n in self._unseen.items() if t in read}
        new = read - self._first_seen.keys() - self._unseen.keys()
        if new:
            self._unseen.update(dict.fromkeys(new, self._md_asked))
            self._refresh_metadata()

    def _note_first_seen(self, endpoint: str, asked: int) -> None:
        """A metadata answer from ``endpoint`` to the ``asked``-th request came: note, for each topic
        whose reading began before that request was sent, how the metadata (as new as that answer,
        or newer) names it. Only an answer of the coordinator, the source of truth -- a broker's copy
        may be behind it, without a topic or partitions older than the reading -- unless the
        metadata names none or it went silent (the brokers' copies are all there is); else the
        coordinator is asked next, at once (``metadata_endpoint``: its turn is every even attempt):
        one request more, and the time a partition is judged by the policy stays short. Until a
        topic is noted, a partition of it with nothing to start from starts by ``auto_offset_reset``:
        the metadata at hand names it, so it was there before (or about when) the reading began. A
        topic read meanwhile by an id the answer no longer names is noted by that id: made again
        after the reading began (else the new topic, judged there when the reading began, started
        by the policy -- ``latest`` skipped its records written before the consumer noticed)."""
        if not self._unseen:
            return
        coordinator = self.metadata.coordinator
        if coordinator and endpoint != coordinator and not self._md_silence.silent(coordinator):
            self._ask_coordinator_next()
            return
        topics = self.metadata.topics
        noted = {topic: topics[topic].topic_id if topic in topics else None
                 for topic, began in self._unseen.items() if began < asked}
        if not noted:
            return
        # a topic the consumer read (or was positioned in) by another id than the metadata names,
        # not one newer than the metadata (``_ahead_of_metadata``): the reading began before the
        # topic was made again, whatever the metadata says
        ahead = self._ahead_of_metadata
        read_before = {tp[0]: i for d in (self._positioned_in, self._read_in) for tp, i in d.items()
                       if tp[0] in noted and i != noted[tp[0]] and tp not in ahead}
        for topic in noted:
            del self._unseen[topic]
            t = topics.get(topic)
            if topic in read_before:
                self._first_seen[topic] = (read_before[topic], 0)
            else:
                self._first_seen[topic] = (t.topic_id, len(t.partitions)) if t is not None else (None, 0)

    def _ask_coordinator_next(self) -> None:
        """The next metadata request goes to the coordinator, at once (``metadata_endpoint``: its
        turn is every even attempt)."""
        self._md_index += self._md_index % 2
        self._md_next_ms = self.clock.now_ms()

    def _judge_ahead(self, endpoint: str, asked: int, version: int) -> None:
        """A metadata answer (of ``version``) from ``endpoint`` to the ``asked``-th request came. A position set
        from outside in a topic id the metadata did not name (``_ahead_of_metadata``) waits for
        metadata naming it -- the id may be newer than the metadata -- only until the coordinator,
        the source of truth, answers a request sent after the position was set: naming another
        id for its topic (or no such topic), the id is deleted or never was, and ids are never
        used again, so the wait would be forever (``_never_current``). Never on a broker's answer
        (its copy may be behind the coordinator's, older than the id), nor on one to a request
        sent before the position was set; while the coordinator is silent the partition waits.
        The metadata judged is the consumer's after the answer, and only when that is the
        answer's version: an answer older than the metadata the consumer holds (a coordinator
        put back from an old copy of its state, which the brokers refuse) judged the consumer's
        metadata -- a broker's copy, maybe behind the id -- and is no verdict."""
        ahead = self._ahead_of_metadata
        if not ahead:
            return
        md = self.metadata
        if not md.coordinator or endpoint != md.coordinator:
            if md.coordinator and not self._md_silence.silent(md.coordinator):
                self._ask_coordinator_next()
            return
        if version < md.version:  # asked again after the backoff, as any answer with nothing new
            return
        since, topics = self._ahead_since, md.topics
        # a topic named without an id (an older coordinator) tells nothing: still waiting
        judged = [tp for tp in ahead if since.get(tp, (asked, True))[0] < asked
                  and (tp[0] not in topics or topics[tp[0]].topic_id)]
        never = []
        for tp in judged:
            topic_id = ahead.pop(tp)
            _asked, committed = since.pop(tp)
            if tp[0] not in topics or topics[tp[0]].topic_id != topic_id:
                never.append((tp, topic_id, committed))
        if never:
            self._never_current(never)

    def _never_current(self, never: list[tuple[TopicPartition, str, bool]]) -> None:
        """Partitions positioned in a topic id that will never be their topic's (``_judge_ahead``),
        as (partition, id, whether a committed offset's). A committed offset's id was its topic's
        once (the coordinator named it), so it is of a topic deleted since, and the partition starts
        at the new topic's log start, as for an id the metadata lists as deleted -- after more
        deletions than that list keeps, it is no longer listed (``_start_deleted``). So does an
        application's seek naming an id listed as deleted; any other id of a seek is one the
        consumer cannot place (deleted long ago, or never an id of the topic): ``poll`` raises
        RemoteError(unknown_topic_id) for the partition until the application seeks it again."""
        deleted = set(self.metadata.deleted_topic_ids)
        gone = [tp for tp, topic_id, committed in never if committed or topic_id in deleted]
        if gone:
            self._start_deleted(gone)
        for tp, topic_id, committed in never:
            if tp in gone:
                continue
            why = (f"{tp[0]}-{tp[1]}: topic id {topic_id}, named by its seek, is not the id of topic {tp[0]!r} and "
                   f"never will be (deleted long since, or never an id of it): seek it again")
            log.warning("%s", why)
            self._reset([tp], RemoteError(P.UNKNOWN_TOPIC_ID, why))
            self._positioned_in.pop(tp, None)  # a position of nothing: no commit or reading began by it

    def _start_deleted(self, tps: list[TopicPartition]) -> None:
        """``tps`` were positioned at offsets of their topic deleted since (a group's committed
        offsets; a seek naming the id): every record of a topic made again under its name is newer
        than that reading, whatever auto_offset_reset says -- they start at its log start
        (``_take_metadata``)."""
        log.warning("the positions of %s (committed offsets, or a seek naming the topic's id) are of a topic "
                    "deleted since: they start again at the new topic's log start",
                    ", ".join(f"{t}-{p}" for t, p in tps))
        self._reset(tps, EARLIEST)

    def _appeared_while_read(self, tp: TopicPartition) -> bool:
        """``tp`` was not there when the consumer began reading its topic: the topic had fewer
        partitions, another id (deleted and made again since), or did not exist. Every record of
        it is newer than the reading: with nothing to start from it starts at its log start, not
        at ``auto_offset_reset`` (``latest`` skipped what was written to it before the consumer
        saw it: the same loss Kafka documents for partitions added under ``latest``,
        KAFKA-12261). A partition in metadata the consumer got after it began reading (not
        before) counts as there: at most records older than the reading are read, none lost."""
        seen = self._first_seen.get(tp[0])
        if seen is None:
            return False
        seen_id, seen_count = seen
        now = self.metadata.topics.get(tp[0])
        return tp[1] >= seen_count or (now is not None and bool(seen_id) and bool(now.topic_id)
                                       and now.topic_id != seen_id)

    def _start_spec(self, tp: TopicPartition) -> int | None:
        """Where a partition with nothing to start from starts (``AUTO_RESET``): its log start
        when it appeared while the consumer read its topic, else ``auto_offset_reset``."""
        return EARLIEST if self._appeared_while_read(tp) else self._policy_spec()

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
            self._ahead_since = {tp: s for tp, s in self._ahead_since.items() if tp in ahead}
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
