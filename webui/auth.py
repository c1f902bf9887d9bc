"""API keys with roles, and token-bucket rate limits.

``KeyStore`` checks a presented key against the configured hashes (and the dev admin key)
in constant time: every stored hash is compared, no early exit. Roles: ``admin`` may do
everything; ``produce``, ``consume`` and ``read`` each open their own routes.

``RateLimiter`` keeps one token bucket per client (a key's name, or a client address for
requests without a valid key), at most ``clients_max`` of them (least recently used first out).

Thread-safe: both may be used from every request thread.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
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
    def __init__(self, rate_per_s: float, burst: int, clients_max: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.clients_max = clients_max
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # client -> [tokens, last_s]
        self._lock = threading.Lock()

    def take(self, client: str, now_s: float | None = None) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is available."""
        now = time.monotonic() if now_s is None else now_s
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                bucket = self._buckets[client] = [float(self.burst), now]
                if len(self._buckets) > self.clients_max:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(client)
                bucket[0] = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rate_per_s)
                bucket[1] = now
            if bucket[0] >= 1.0:
                bucket[0] -= 1.0
                return 0.0
            return (1.0 - bucket[0]) / self.rate_per_s


def retry_after_s(wait_s: float) -> str:
    """Retry-After is whole seconds (RFC 9110): round up, at least 1."""
    return str(max(1, math.ceil(wait_s)))
