"""Admin client: topics, metadata, offsets. Blocking; not thread-safe (one per thread)."""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable

import zmq

from fabric import protocol as P
from fabric.client.bootstrap import bootstrap_target, check_cluster, fetch_metadata
from fabric.errors import CodedError, FabricError, RemoteError, RequestTimeout
from fabric.metadata import ClusterMetadata
from fabric.replies import ListOffsetsEntry, decode_parts
from fabric.rpc import BlockingClient

log = logging.getLogger(__name__)

EARLIEST = -2
LATEST = -1
LIST_OFFSETS_BACKOFF_S = 0.05  # list_offsets asks again for partitions whose leader is not known or moving,
LIST_OFFSETS_BACKOFF_MAX_S = 0.5  # after a pause that doubles up to this
# answers that a moment and fresh metadata cure (a leader just elected, deposed, or not yet known)
LIST_OFFSETS_ASK_AGAIN = frozenset({P.OFFSET_NOT_AVAILABLE, P.NOT_LEADER, P.LEADER_NOT_AVAILABLE,
                                    P.FENCED_LEADER_EPOCH, P.UNKNOWN_LEADER_EPOCH})


class Admin:
    def __init__(self, bootstrap: str | list[str] | None = None, *, config_path: str | None = None,
                 timeout_ms: int = 10_000) -> None:
        self.ctx = zmq.Context.instance()
        self.endpoints, self.cluster = bootstrap_target(bootstrap, config_path)
        self.timeout_ms = timeout_ms
        self._clients: dict[str, BlockingClient] = {}
        self._metadata: ClusterMetadata | None = None

    def _client(self, endpoint: str) -> BlockingClient:
        c = self._clients.get(endpoint)
        if c is None:
            c = self._clients[endpoint] = BlockingClient(self.ctx, endpoint, identity="admin")
        return c

    def metadata(self, refresh: bool = True) -> ClusterMetadata:
        if refresh or self._metadata is None:
            prefer = self._metadata.coordinator if self._metadata is not None else None
            md, endpoint = fetch_metadata(self.ctx, self.endpoints, min(self.timeout_ms, 3000), prefer)
            check_cluster(md.cluster, self.cluster, endpoint)
            self._metadata = md
        return self._metadata

    def coordinator_endpoint(self) -> str:
        """The coordinator is the first bootstrap endpoint that answers as one."""
        answered = False
        for ep in self.endpoints:
            try:
                h, _ = self._client(ep).call(P.PING, timeout_ms=min(self.timeout_ms, 2000))
            except CodedError as e:
                log.debug("bootstrap %s did not answer PING: %s", ep, e)
                continue
            answered = True
            if h.get("role") == "coordinator":
                check_cluster(h.get("cluster", ""), self.cluster, ep)
                return ep
        if not answered:  # the cluster is down or unreachable: retriable, not a bad bootstrap list
            raise RequestTimeout(f"no coordinator among the bootstrap endpoints: no node answered at {', '.join(self.endpoints)}")
        raise FabricError("no coordinator among the bootstrap endpoints")

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
        (milliseconds, or a lag time when a follower died with it), a deposed one not_leader,
        and a partition being elected has no leader in the metadata: such partitions are asked
        again, at the leader the metadata names then, after a pause from LIST_OFFSETS_BACKOFF_S
        doubling to LIST_OFFSETS_BACKOFF_MAX_S, until ``leader_wait_ms`` (at most, and by
        default, ``timeout_ms``; 0: not asked again) has passed since the call (the first round
        is any call's: up to three tries of ``timeout_ms``); then the last error is raised
        (leader_not_available for a partition without a leader: an offline one stays so).
        ``partial`` leaves such partitions out of the answer instead, at once."""
        wait_ms = self.timeout_ms if leader_wait_ms is None else max(0, min(leader_wait_ms, self.timeout_ms))
        deadline = time.monotonic() + wait_ms / 1000
        md = self.metadata()
        wanted = self._partitions_of(md, topic, partitions)
        out: dict[int, int] = {}
        rounds = 0  # the first round as any call; a re-ask gets what is left of the wait
        last: CodedError | None = None
        while True:
            by_leader: dict[int, list] = {}
            again: list[int] = []
            for p in wanted:
                leader = md.topics[topic].partitions[p].leader
                if leader < 0 or leader not in md.brokers:
                    again.append(p)
                    last = RemoteError(P.LEADER_NOT_AVAILABLE, f"{topic}-{p} has no leader")
                else:
                    by_leader.setdefault(leader, []).append([topic, p, spec])
            for leader, parts in by_leader.items():
                left_ms = self.timeout_ms if rounds == 0 else int((deadline - time.monotonic()) * 1000)
                if left_ms <= 0:
                    raise last or RequestTimeout(f"{topic}: list_offsets timed out")
                h, _ = self._client(md.brokers[leader].endpoint).call(
                    P.LIST_OFFSETS, {"parts": parts, "topic_ids": md.topic_ids_of([topic])},
                    timeout_ms=left_ms, retries=2 if rounds == 0 else 0)
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
            md = self.metadata()  # a whole metadata answer per round: the backoff grows
            wanted = self._partitions_of(md, topic, again)

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
        for c in self._clients.values():
            c.close()
        self._clients.clear()

    def __enter__(self) -> "Admin":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
