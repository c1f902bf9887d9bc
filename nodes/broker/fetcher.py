"""A follower's replica fetcher: one per leader broker, one fetch in flight, covering every
partition this broker follows on that leader (Kafka's ReplicaFetcherThread, on the reactor).

Each fetch carries, per partition, the follower's log end offset (which the leader uses to
advance the high watermark), its current leader epoch (a stale leader learns it is fenced)
and the epoch of its last batch; the leader answers a divergence with the offset to
truncate to (KIP-320), and the fetcher truncates before fetching again.

Not thread-safe: owned by the broker's reactor.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from engines.api import EngineError
from engines.batch import BatchError
from fabric import protocol as P
from fabric.errors import RemoteError
from fabric.rpc import RpcClient

if TYPE_CHECKING:
    from nodes.broker.node import Broker
    from nodes.broker.partition import Partition

log = logging.getLogger(__name__)

RETRY_BACKOFF_MS = 100
RETRY_BACKOFF_MAX_MS = 2000


class ReplicaFetcher:
    def __init__(self, broker: "Broker", leader_id: int, endpoint: str) -> None:
        self.broker = broker
        self.leader_id = leader_id
        self.endpoint = endpoint
        self.client = RpcClient(broker.ctx, broker.reactor, endpoint, identity=f"{broker.name}-fetcher")
        self.partitions: dict[tuple[str, int], "Partition"] = {}
        self._in_flight = False
        self._closed = False
        self._backoff_ms = RETRY_BACKOFF_MS

    def set_partitions(self, parts: list["Partition"]) -> None:
        self.partitions = {(p.topic, p.partition): p for p in parts}
        if not self._in_flight:
            self._fetch()

    def _fetch(self) -> None:
        if self._closed or self._in_flight or not self.partitions:
            return
        cfg = self.broker.config.replication
        parts = [[p.topic, p.partition, p.log_end_offset, cfg.replica_fetch_bytes_max, p.leader_epoch,
                  p.epochs.latest_epoch] for p in self.partitions.values()]
        self._in_flight = True
        self.client.request(P.FETCH, {"replica_id": self.broker.broker_id, "wait_ms": cfg.replica_fetch_wait_ms,
                                      "max_bytes": cfg.replica_fetch_bytes_max, "parts": parts},
                            callback=self._on_reply, timeout_ms=cfg.replica_fetch_wait_ms + 2000)

    def _on_reply(self, header: dict | None, payloads: list, err: RemoteError | None) -> None:
        self._in_flight = False
        if self._closed:
            return
        if header is None:
            self._retry_later()
            return
        progressed = False
        for entry, data in zip(header.get("parts", []), payloads):
            try:
                progressed |= self._apply(entry, data)
            except (EngineError, BatchError) as e:
                log.error("replica fetch from broker %d: %s", self.leader_id, e)
        self._backoff_ms = RETRY_BACKOFF_MS
        if progressed:
            self.broker._dirty = True
        self._fetch()

    def _apply(self, entry: list, data: bytes) -> bool:
        topic, partition, code, hw, _leo, _start, diverging = entry[:7]
        part = self.partitions.get((topic, partition))
        if part is None or part.role != "follower":
            return False
        if code != 0:
            if code == P.OFFSET_OUT_OF_RANGE and part.log_end_offset < _start:
                part.truncate_to(0)  # behind the leader's log start: start over (retention)
            return False
        if diverging is not None:
            part.truncate_to(max(diverging[1], 0) if diverging[0] >= 0 else diverging[1])
            return True
        n = part.append_as_follower(data) if data else 0
        part.set_high_watermark_from_leader(hw)
        return n > 0

    def _retry_later(self) -> None:
        delay = self._backoff_ms
        self._backoff_ms = min(self._backoff_ms * 2, RETRY_BACKOFF_MAX_MS)
        self.broker.reactor.call_later(delay, self._fetch)

    def close(self) -> None:
        self._closed = True
        self.client.close()
