"""A follower's replica fetcher: one per leader broker, one fetch in flight, covering every
partition this broker follows on that leader (Kafka's ReplicaFetcherThread, on the reactor).

With the PUB/SUB fast path on (``replication.transport: pubsub``, the default) the fetcher
repairs: it fetches without waiting, keeps fetching while there is more, then goes idle until
the stream shows a gap (``trigger``). With ``transport: fetch`` it long-polls continuously, as
Kafka's fetcher does. Before a partition may take batches from the stream in a new leader
epoch, one fetch must have checked its log against the leader's (``stream_ready``).

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
        self.client = RpcClient(broker.ctx, broker.reactor, endpoint, identity=broker.name)
        self.partitions: dict[tuple[str, int], "Partition"] = {}
        self.long_poll = broker.config.replication.transport == "fetch"
        self._stream_ready: dict[tuple[str, int], int] = {}  # partition -> epoch checked by a fetch
        self._in_flight = False
        self._again = False
        self.last_error = ""
        self.fetches = 0
        self._closed = False
        self._backoff_ms = RETRY_BACKOFF_MS

    def set_partitions(self, parts: list["Partition"]) -> None:
        self.partitions = {(p.topic, p.partition): p for p in parts}
        self._stream_ready = {k: e for k, e in self._stream_ready.items() if k in self.partitions}
        self.trigger()

    def stream_ready(self, key: tuple[str, int]) -> bool:
        part = self.partitions.get(key)
        return part is not None and self._stream_ready.get(key) == part.leader_epoch

    def trigger(self) -> None:
        """Fetch now (or right after the fetch in flight)."""
        if self._in_flight:
            self._again = True
        else:
            self._fetch()

    def ack(self, part: "Partition") -> None:
        """One-way: tell the leader our log end offset (advances its high watermark)."""
        self.ack_parts([part])

    def ack_parts(self, parts: list["Partition"]) -> None:
        """``ack`` for many partitions, in messages of at most ``PARTITIONS_MAX`` parts."""
        if self.broker.faults.blocks_broker(self.leader_id):
            return
        for i in range(0, len(parts), P.PARTITIONS_MAX):
            self.client.send_oneway(P.REPLICA_ACK, {"broker_id": self.broker.broker_id, "parts": [
                [p.topic, p.partition, p.log_end_offset, p.leader_epoch] for p in parts[i:i + P.PARTITIONS_MAX]]})

    def _fetch(self) -> None:
        if self._closed or self._in_flight or not self.partitions:
            return
        self._again = False
        cfg = self.broker.config.replication
        parts = [[p.topic, p.partition, p.log_end_offset, cfg.replica_fetch_bytes_max, p.leader_epoch,
                  p.epochs.latest_epoch] for p in self.partitions.values()]
        self._in_flight = True
        self.fetches += 1
        wait_ms = cfg.replica_fetch_wait_ms if self.long_poll else 0
        # the answer is only good for the leader epochs it was asked in (leadership may move
        # away and back to this leader while it is in flight)
        asked = {(p[0], p[1]): p[4] for p in parts}
        self.client.request(P.FETCH, {"replica_id": self.broker.broker_id, "wait_ms": wait_ms,
                                      "max_bytes": cfg.replica_fetch_bytes_max, "parts": parts,
                                      "topic_ids": self.broker.metadata.topic_ids_of({p[0] for p in parts})},
                            callback=lambda h, pl, e: self._on_reply(h, pl, e, asked),
                            timeout_ms=cfg.replica_fetch_wait_ms + 2000)

    def _on_reply(self, header: dict | None, payloads: list, err: RemoteError | None,
                  asked: dict[tuple[str, int], int]) -> None:
        self._in_flight = False
        if self._closed:
            return
        if header is None or self.broker.faults.blocks_broker(self.leader_id):
            self._retry_later()
            return
        progressed = False
        for entry, data in zip(header.get("parts", []), payloads):
            try:
                if self._apply(entry, data, asked):
                    progressed = True
                    key = (entry[0], entry[1])
                    self.broker.mark_dirty(key)
                    self.broker.note_appended(self.partitions[key])
            except (EngineError, BatchError) as e:
                log.error("replica fetch from broker %d: %s", self.leader_id, e)
            except (TypeError, ValueError, IndexError) as e:  # a malformed answer: drop it
                self.broker.counters["repl_malformed"] += 1
                log.error("malformed replica fetch answer from broker %d: %s", self.leader_id, e)
        self._backoff_ms = RETRY_BACKOFF_MS
        if self.long_poll or progressed or self._again or not self._all_stream_ready():
            self.broker.reactor.call_later(0 if (progressed or self._again) else RETRY_BACKOFF_MS, self._fetch)

    def _all_stream_ready(self) -> bool:
        return all(self.stream_ready(k) for k in self.partitions)

    def _apply(self, entry: list, data: bytes, asked: dict[tuple[str, int], int]) -> bool:
        topic, partition, code, hw, _leo, _start, diverging = entry[:7]
        part = self.partitions.get((topic, partition))
        if part is None or part.role != "follower" or asked.get((topic, partition)) != part.leader_epoch:
            return False
        if code != 0:
            self.last_error = P.error_name(code)
            if code == P.OFFSET_OUT_OF_RANGE and part.log_end_offset < _start:
                part.reset_to(_start)  # behind the leader's log start (retention): start there
                return True
            return False
        if diverging is not None:
            if diverging[0] < 0 or part.log_end_offset < _start:
                # the leader no longer has any epoch we share with it (retention removed them):
                # nothing in our log can be checked against its log, and truncating to its log
                # start would keep our old epoch entry and bring the same answer back at once.
                # Start over empty at its log start (Kafka's truncateFullyAndStartAt).
                part.reset_to(_start)
                return True
            part.truncate_to(self._divergence_point(part, diverging[0], diverging[1]))
            return True
        n = part.append_as_follower(data) if data else 0
        part.set_high_watermark_from_leader(hw)
        self._stream_ready[(topic, partition)] = part.leader_epoch
        return n > 0

    @staticmethod
    def _divergence_point(part: "Partition", leader_epoch: int, leader_end: int) -> int:
        """Where our log stops agreeing with the leader's: the end of the last epoch we share,
        by both logs' reckoning (KIP-101/KIP-279: the smaller of the two end offsets).
        ``leader_epoch`` >= 0 (an unknown epoch resets the log instead, see _apply)."""
        own_epoch, own_end = part.epochs.end_offset_for(leader_epoch, part.log_end_offset)
        if own_epoch < 0:
            return part.log_start_offset
        return min(leader_end, own_end)

    def _retry_later(self) -> None:
        if self._closed:
            return
        delay = self._backoff_ms
        self._backoff_ms = min(self._backoff_ms * 2, RETRY_BACKOFF_MAX_MS)
        self.broker.reactor.call_later(delay, self._fetch)

    def stats(self) -> dict:
        return {"leader": self.leader_id, "in_flight": self._in_flight, "fetches": self.fetches,
                "last_error": self.last_error,
                "partitions": {f"{t}-{p}": self.stream_ready((t, p)) for t, p in self.partitions}}

    def close(self) -> None:
        self._closed = True
        self.client.close()
