"""Admin client: topics, metadata, offsets. Blocking; not thread-safe (one per thread): the
``CoordinatorSilence`` and the ``fetches`` it may be given are, and can be shared by the Admins
of several threads."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable

from fabric import protocol as P
from fabric.blocking_client import BlockingClient, ClientsByEndpoint
from fabric.client.bootstrap import bootstrap_target, check_cluster, fetch_metadata
from fabric.client.coordinator_silence import CoordinatorSilence
from fabric.errors import CodedError, FabricError, RemoteError, RequestTimeout
from fabric.metadata import ClusterMetadata, PartitionInfo, read_answer
from fabric.replies import ListOffsetsEntry, decode_parts
from fabric.zmq_context import context as zmq_context

log = logging.getLogger(__name__)

EARLIEST = -2
LATEST = -1
TIMEOUT_MS_DEFAULT = 10_000  # an Admin's request timeout unless given
METADATA_ASK_TIMEOUT_MS = 3000  # a metadata ask of one node waits at most this (less when the timeout is)
LIST_OFFSETS_BACKOFF_S = 0.05  # list_offsets asks again for partitions whose leader is not known or moving,
LIST_OFFSETS_BACKOFF_MAX_S = 0.5  # after a pause that doubles up to this
# A list_offsets try begun within its wait gets at least this, whatever is left of the wait: a
# LIST_OFFSETS takes milliseconds, and a second covers a healthy leader stalled by a GC pause or
# a busy machine, so the last try is not doomed; it bounds how far past its wait a call runs.
LIST_OFFSETS_TRY_MS_MIN = 1000
# how often a try that waits asks the coordinator whether the leader it waits for still leads
# (a SIGKILLed one is replaced within a second), and for how long at most
LIST_OFFSETS_LEADER_CHECK_MS = 250
LIST_OFFSETS_CHECK_TIMEOUT_MS = 500
# answers that a moment and fresh metadata cure (a leader just elected, deposed, or not yet known;
# unknown_topic_or_partition: a leader the metadata names that has not opened a partition just
# made -- a topic deleted meanwhile is unknown to the next round's metadata, which raises it)
LIST_OFFSETS_ASK_AGAIN = frozenset({P.OFFSET_NOT_AVAILABLE, P.NOT_LEADER, P.LEADER_NOT_AVAILABLE,
                                    P.FENCED_LEADER_EPOCH, P.UNKNOWN_LEADER_EPOCH, P.UNKNOWN_TOPIC_OR_PARTITION})


def no_leader_coming(md: ClusterMetadata, p: PartitionInfo) -> bool:
    """Whether ``p`` is offline for good as ``md`` shows it: no leader, and none of its in-sync
    replicas (of its replicas, with an empty ISR) alive to be elected -- the coordinator elects
    from the ISR at once when one of them is (unclean election: any live replica at once), so
    a leader comes only once one of those brokers is back."""
    return p.leader < 0 and not any(b in md.brokers and md.brokers[b].alive for b in (p.isr or p.replicas))


class Admin:
    def __init__(self, bootstrap: str | list[str] | None = None, *, config_path: str | None = None,
                 timeout_ms: int = TIMEOUT_MS_DEFAULT, silence: CoordinatorSilence | None = None,
                 fetches: Callable[[Callable[[], ClusterMetadata], float | None], ClusterMetadata] | None = None) -> None:
        """``silence``: what this client's metadata asks learn of a silent coordinator, shared
        with other clients of the same cluster and clock (a gateway's request threads: what one
        learnt, the others need not wait for); default: its own. ``fetches(fetch, deadline_s)``:
        metadata begun after the call, by ``fetch()`` or by another client's fetch it shares
        (a gateway's one fetch at a time), waited for until ``deadline_s`` (monotonic s, None:
        none); default: ``fetch()``."""
        self.ctx = zmq_context()
        self.endpoints, self.cluster = bootstrap_target(bootstrap, config_path)
        self.timeout_ms = timeout_ms
        # a node killed with a request fails it at once (ConnectionLost), not at the deadline
        self._clients = ClientsByEndpoint(lambda endpoint: BlockingClient(self.ctx, endpoint, identity="admin",
                                                                          fail_on_disconnect=True))
        self._metadata: ClusterMetadata | None = None
        # a coordinator silent lately is asked after the brokers
        self._md_silence = silence if silence is not None else CoordinatorSilence()
        self._fetches = fetches

    def _client(self, endpoint: str) -> BlockingClient:
        return self._clients.get(endpoint)

    def metadata(self, refresh: bool = True, *, deadline_s: float | None = None) -> ClusterMetadata:
        """The cluster's metadata (asked again unless ``refresh`` is False and some is known).
        ``deadline_s`` (monotonic s): the asks end by then (``fetch_metadata``). Raises
        RequestTimeout when no node answers in time."""
        if refresh or self._metadata is None:
            def fetch() -> ClusterMetadata:
                prefer = self._metadata.coordinator if self._metadata is not None else None
                md, endpoint = fetch_metadata(self.ctx, self.endpoints, min(self.timeout_ms, METADATA_ASK_TIMEOUT_MS),
                                              prefer, deadline_s=deadline_s, silence=self._md_silence)
                check_cluster(md.cluster, self.cluster, endpoint)
                return md
            self._metadata = fetch() if self._fetches is None else self._fetches(fetch, deadline_s)
        return self._metadata

    def coordinator_endpoint(self) -> str:
        """The coordinator is the first bootstrap endpoint that answers as one. Raises
        RequestTimeout (retriable) when none did and some endpoint did not answer -- the
        coordinator may be that one: down, paused or cut off --, and FabricError when every
        endpoint answered and none as the coordinator (a bootstrap list without it)."""
        silent: list[str] = []
        answered: list[str] = []
        for ep in self.endpoints:
            try:
                h, _ = self._client(ep).call(P.PING, timeout_ms=min(self.timeout_ms, 2000))
            except CodedError as e:
                log.debug("bootstrap %s did not answer PING: %s", ep, e)
                silent.append(ep)
                continue
            if h.get("role") == "coordinator":
                check_cluster(h.get("cluster", ""), self.cluster, ep)
                return ep
            answered.append(f"{ep} ({h.get('role', 'no role')})")
        others = f"; {', '.join(answered)} answered, none as the coordinator" if answered else ""
        if silent:
            raise RequestTimeout(f"no coordinator answered: {', '.join(silent)} did not answer{others}")
        raise FabricError(f"no coordinator among the bootstrap endpoints{others}")

    def call_coordinator(self, command: bytes, header: dict, retries: int = 3) -> dict:
        h, _ = self._client(self.coordinator_endpoint()).call(command, header, timeout_ms=self.timeout_ms, retries=retries)
        return h

    # -- topics ------------------------------------------------------------------------------
    def create_topic(self, name: str, partitions: int | None = None, replication_factor: int | None = None,
                     configs: dict[str, Any] | None = None) -> dict:
        header: dict[str, Any] = {"topic": name}
        if partitions is not None:
            header["partitions"] = partitions
        if replication_factor is not None:
            header["replication_factor"] = replication_factor
        if configs:
            header["configs"] = configs
        return self.call_coordinator(P.CREATE_TOPIC, header, retries=0)

    def delete_topic(self, name: str) -> dict:
        return self.call_coordinator(P.DELETE_TOPIC, {"topic": name}, retries=0)

    def alter_topic(self, name: str, partitions: int | None = None, configs: dict | None = None) -> dict:
        header: dict[str, Any] = {"topic": name}
        if partitions is not None:
            header["partitions"] = partitions
        if configs:
            header["configs"] = configs
        return self.call_coordinator(P.ALTER_TOPIC, header, retries=0)

    def list_topics(self) -> list[str]:
        return sorted(t for t in self.metadata().topics if not t.startswith("__"))

    # -- offsets ------------------------------------------------------------------------------
    def list_offsets(self, topic: str, spec: int = LATEST, *, partitions: Iterable[int] | None = None,
                     partial: bool = False, leader_wait_ms: int | None = None) -> dict[int, int]:
        """partition -> offset of ``partitions`` (default: all): spec EARLIEST (-2), LATEST (-1:
        the high watermark) or a timestamp in ms (first offset at or after it). A leader just
        elected answers offset_not_available until its followers have told it its HW
        (milliseconds, or a lag time when a follower died with it), a deposed one not_leader, a
        dead or paused one the metadata still names nothing (``_ask_leader``), and a partition
        being elected has no leader in the metadata: such partitions are asked again, at the
        leader the metadata names then, after a pause from LIST_OFFSETS_BACKOFF_S doubling to
        LIST_OFFSETS_BACKOFF_MAX_S, until ``leader_wait_ms`` (at most, and by default,
        ``timeout_ms``; 0: not asked again) has passed since the call; then the last error is
        raised (leader_not_available for a partition without a leader, request_timed_out for a
        leader that did not answer). A try begun in time gets at least LIST_OFFSETS_TRY_MS_MIN
        (not more than ``timeout_ms``): the call takes at most ``leader_wait_ms`` plus that,
        its metadata asks included (each cut to the time left: a stopped or dead coordinator
        does not stretch it). With ``leader_wait_ms`` given, a partition offline
        for good -- no leader, and no in-sync replica alive to elect (``no_leader_coming``) --
        raises leader_not_available at once. ``partial`` leaves such partitions out of the
        answer instead, at once."""
        wait_ms = self.timeout_ms if leader_wait_ms is None else max(0, min(leader_wait_ms, self.timeout_ms))
        deadline = time.monotonic() + wait_ms / 1000
        # the end of the whole call: a try begun by the deadline gets its minimum, and no ask of
        # the call, metadata included, runs past that
        call_end = deadline + min(LIST_OFFSETS_TRY_MS_MIN, self.timeout_ms) / 1000
        md = self.metadata(deadline_s=call_end)
        wanted = self._partitions_of(md, topic, partitions)
        out: dict[int, int] = {}
        rounds = 0
        last: CodedError | None = None
        try:
            while True:
                by_leader: dict[int, list] = {}
                again: list[int] = []
                for p in wanted:
                    info = md.topics[topic].partitions[p]
                    if info.leader >= 0 and info.leader in md.brokers:
                        by_leader.setdefault(info.leader, []).append([topic, p, spec])
                    elif leader_wait_ms is not None and not partial and no_leader_coming(md, info):
                        isr = list(info.isr or info.replicas)
                        raise RemoteError(P.LEADER_NOT_AVAILABLE, f"{topic}-{p} is offline: no leader, and none "
                                                                  f"of its in-sync replicas {isr} is alive")
                    else:
                        again.append(p)
                        last = RemoteError(P.LEADER_NOT_AVAILABLE, f"{topic}-{p} has no leader")
                # a try begun before the deadline gets at least LIST_OFFSETS_TRY_MS_MIN: the round ends then
                round_end = min(max(deadline, time.monotonic() + LIST_OFFSETS_TRY_MS_MIN / 1000), call_end)
                for leader, parts in by_leader.items():
                    try:
                        h = self._ask_leader(md, topic, leader, parts, round_end)
                    except CodedError as e:  # a dead, paused, deposed or busy leader: where the metadata points next
                        if not e.retriable:
                            raise
                        again.extend(p for _, p, _ in parts)
                        last = e
                        continue
                    for entry in decode_parts(h, ListOffsetsEntry):  # raises MalformedFrame
                        if not entry.error:
                            out[entry.partition] = entry.offset  # type: ignore[index]
                        elif entry.error in LIST_OFFSETS_ASK_AGAIN:
                            again.append(entry.partition)  # type: ignore[arg-type]
                            last = RemoteError(entry.error, f"{topic}-{entry.partition}")
                        else:
                            raise RemoteError(entry.error, f"{topic}-{entry.partition}")
                if not again or partial:
                    return out
                left_s = deadline - time.monotonic()
                if left_s <= 0:
                    raise last  # type: ignore[misc]  # set with every partition left to ask again
                time.sleep(min(LIST_OFFSETS_BACKOFF_S * 2 ** rounds, LIST_OFFSETS_BACKOFF_MAX_S, left_s))
                rounds += 1
                md = self.metadata(deadline_s=call_end)  # a whole metadata answer per round: the backoff grows
                wanted = self._partitions_of(md, topic, again)
        finally:  # an error caught or raised here holds this frame in its traceback: no local may hold it
            last = None

    def _ask_leader(self, md: ClusterMetadata, topic: str, leader: int, parts: list, until: float) -> dict:
        """LIST_OFFSETS of ``parts`` ([topic, partition, spec]) at ``leader``, the one ``md``
        names: its answer, waited for until ``until`` (monotonic s; at most ``timeout_ms``).
        Raises CodedError: RemoteError (its refusal), or RequestTimeout at the deadline -- and
        at once when the connection the request went out on ends (ConnectionLost: killed with
        it) or when the coordinator names another leader (or epoch) for one of ``parts``,
        asked every LIST_OFFSETS_LEADER_CHECK_MS of the wait: a dead or paused leader's answer
        does not come, and a killed one is no longer named within a second. A leader still
        named is waited for to the deadline, not a shorter per-try timeout: a healthy broker
        slowed by a long GC pause or a busy machine is not given up on while it leads."""
        endpoint = md.brokers[leader].endpoint
        epochs = [(p, md.leader_epoch(topic, p)) for _, p, _ in parts]
        try_ms = min(int((until - time.monotonic()) * 1000), self.timeout_ms)
        if try_ms <= 0:
            raise RequestTimeout(f"{topic}: list_offsets timed out before asking broker {leader}")
        checked_s = time.monotonic()

        def moved() -> bool:
            nonlocal checked_s
            if time.monotonic() - checked_s < LIST_OFFSETS_LEADER_CHECK_MS / 1000:
                return False
            left_ms = int((until - time.monotonic()) * 1000)
            fresh = self._coordinator_metadata(max(1, min(LIST_OFFSETS_CHECK_TIMEOUT_MS, left_ms)), endpoint)
            checked_s = time.monotonic()
            return fresh is not None and any(fresh.leader_moved(topic, p, endpoint, e) for p, e in epochs)
        try:
            h, _ = self._client(endpoint).call(P.LIST_OFFSETS, {"parts": parts, "topic_ids": md.topic_ids_of([topic])},
                                               timeout_ms=try_ms, give_up=moved)
        except RequestTimeout as e:
            self._clients.drop(endpoint)  # its socket holds the unanswered request: a fresh one next time
            raise RequestTimeout(f"{topic}: leader broker {leader} did not answer list_offsets: {e.message}") from e
        return h

    def _coordinator_metadata(self, timeout_ms: int, besides: str) -> ClusterMetadata | None:
        """The coordinator's metadata now, or None when it did not answer within ``timeout_ms``
        (or is not known apart from ``besides``, the endpoint being waited for, or went silent
        lately: ``CoordinatorSilence``)."""
        where = self._metadata.coordinator if self._metadata is not None else ""
        if not where or where == besides or self._md_silence.skips(where, int(time.monotonic() * 1000)):
            return None
        sent_ms = int(time.monotonic() * 1000)
        try:
            h, _ = self._client(where).call(P.METADATA, {}, timeout_ms=self._md_silence.timeout_ms(where, timeout_ms))
        except CodedError as e:
            log.debug("metadata from %s: %s", where, e)
            self._md_silence.heard(where, e, int(time.monotonic() * 1000), sent_ms)
            return None
        self._md_silence.heard(where, None, int(time.monotonic() * 1000), sent_ms)
        return read_answer(h, where)

    @staticmethod
    def _partitions_of(md: ClusterMetadata, topic: str, partitions: Iterable[int] | None) -> list[int]:
        t = md.topics.get(topic)
        if t is None:
            raise RemoteError(P.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {topic!r}")
        if partitions is None:
            return [p.partition for p in t.partitions]
        wanted = sorted(set(partitions))
        for p in wanted:
            if not 0 <= p < len(t.partitions):
                raise RemoteError(P.UNKNOWN_TOPIC_OR_PARTITION, f"no partition {topic}-{p}")
        return wanted

    def broker_stats(self, broker_id: int) -> dict:
        md = self.metadata(refresh=self._metadata is None)
        h, _ = self._client(md.brokers[broker_id].endpoint).call(P.STATS, timeout_ms=min(self.timeout_ms, 3000))
        return h

    def close(self) -> None:
        self._clients.close()

    def __enter__(self) -> "Admin":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
