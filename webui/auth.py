"""API keys with roles, and token-bucket rate limits.

``KeyStore`` checks a presented key against the configured hashes (and the dev admin key)
in constant time: every stored hash is compared, no early exit. Roles: ``admin`` may do
everything; ``produce``, ``consume`` and ``read`` each open their own routes.

``RateLimiter`` keeps one token bucket per client (a key's name, or a client address for
requests without a valid key): see its docstring for how the table stays bounded without ever
handing a limited client a fresh bucket.

Thread-safe: both may be used from every request thread.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from fabric.apikeys import ROLES, hash_key, hashes_equal


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]

    def may(self, role: str) -> bool:
        return "admin" in self.roles or role in self.roles


class KeyStore:
    def __init__(self, entries: list[tuple[str, str, list[str]]], admin_key: str | None = None) -> None:
        """entries: (name, key_hash, roles)."""
        self._entries = [(h, Principal(name, frozenset(roles))) for name, h, roles in entries]
        if admin_key:
            self._entries.append((hash_key(admin_key), Principal("dev-admin", frozenset(ROLES))))

    def lookup(self, key: str | None) -> Principal | None:
        if not key:
            return None
        presented = hash_key(key)
        found = None
        for stored, principal in self._entries:
            if hashes_equal(presented, stored) and found is None:
                found = principal
        return found


def rate_limit_client(principal: Principal | None, address: str) -> str:
    """The bucket a request takes its token from: its key's, else its client address's."""
    return f"key:{principal.name}" if principal else f"addr:{address}"


class RateLimiter:
    """Token buckets of ``burst`` tokens refilled at ``rate_per_s``, one per client.

    The table is bounded, and eviction must not be a way around the limit: a bucket dropped
    while below full would come back full, so a client over its limit (or anyone who can
    spread requests over many addresses) could evict its own bucket and start afresh. Only a
    bucket that has refilled to full is evicted -- it is the same as the fresh one its client
    would get. A new address client that finds ``clients_max`` buckets and none of the
    ``EVICTION_SCAN_MAX`` least recently used ones full is refused (``take`` answers the
    seconds until the first of those is full: a 429 with ``Retry-After``). Refusing is the only
    answer that keeps both the memory bound and the limit: letting the new client in without a
    bucket, or resetting someone else's, is the bypass; and the clients refused are those that
    come new while the table is full of clients spending their tokens -- a flood of addresses,
    which a limiter is there to hold back. Clients already in the table keep their buckets.

    Key buckets (``keyed=True``) are never refused: there is at most one per configured key,
    so they may take the table past ``clients_max`` by that many, and a flood of unknown
    addresses cannot lock key holders out. Only full buckets of either kind are evicted.

    Thread-safe (one lock); ``take`` looks at most EVICTION_SCAN_MAX buckets.
    """

    EVICTION_SCAN_MAX = 32  # least recently used buckets looked at for a full one, per new client

    def __init__(self, rate_per_s: float, burst: int, clients_max: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.clients_max = clients_max
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # client -> [tokens, last_s]
        self._lock = threading.Lock()
        self.refused_table_full = 0  # new clients refused because the table was full of buckets in use

    def take(self, client: str, now_s: float | None = None, keyed: bool = False) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is available (for a new
        client refused because the table is full, until a bucket is evictable). ``keyed``: the
        client is an API key's (``rate_limit_client`` of a principal), never refused."""
        now = time.monotonic() if now_s is None else now_s
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                if len(self._buckets) >= self.clients_max:
                    wait_s = self._evict_one_full(now)
                    if wait_s > 0 and not keyed:
                        self.refused_table_full += 1
                        return wait_s
                bucket = self._buckets[client] = [float(self.burst), now]
            else:
                self._buckets.move_to_end(client)
                bucket[0] = self._tokens(bucket, now)
                bucket[1] = now
            if bucket[0] >= 1.0:
                bucket[0] -= 1.0
                return 0.0
            return (1.0 - bucket[0]) / self.rate_per_s

    def samples(self) -> Iterator[tuple[str, tuple, float]]:
        """``loom_gateway_rate_limit_clients`` (buckets in the table) and
        ``…_table_full_total`` (new clients refused for a full table: raise
        ``gateway.rate_limit_clients_max`` if it is not a flood): a collector of the control
        node's metrics registry."""
        with self._lock:
            clients, refused = len(self._buckets), self.refused_table_full
        yield "loom_gateway_rate_limit_clients", (), float(clients)
        yield "loom_gateway_rate_limit_table_full_total", (), float(refused)

    def _tokens(self, bucket: list[float], now: float) -> float:
        return min(float(self.burst), bucket[0] + max(0.0, now - bucket[1]) * self.rate_per_s)

    def _evict_one_full(self, now: float) -> float:
        """Drop the least recently used bucket that has refilled to full, among the
        EVICTION_SCAN_MAX least recently used: 0.0, else the seconds until the first of them is
        full (nothing dropped). Under _lock."""
        wait_s = math.inf
        for i, (client, bucket) in enumerate(self._buckets.items()):
            if i == self.EVICTION_SCAN_MAX:
                break
            missing = self.burst - self._tokens(bucket, now)
            if missing <= 0:
                del self._buckets[client]
                return 0.0
            wait_s = min(wait_s, missing / self.rate_per_s)
        return wait_s


def retry_after_s(wait_s: float) -> str:
    """Retry-After is whole seconds (RFC 9110): round up, at least 1."""
    return str(max(1, math.ceil(wait_s)))
