"""The budget of request threads that may wait in a long poll at once.

A long poll (the records browser's ``timeout``, a consumer instance's ``GET …/records``) holds
its request thread until records come or its timeout ends, up to 30 s. Enough clients
long-polling held every one of the gateway's threads, and REST, ``/health/live`` (the
monitor's probe) and the dashboard stopped answering. So at most ``long_polls_max`` requests
wait at once (``GatewayConfig.long_polls_max``: half the threads no WebSocket may hold); a long
poll arriving over it is not refused and does not queue: it is served with no wait, so it is
answered with the records there now, or none -- a valid long-poll answer in Kafka's and
Confluent's semantics, after which the client polls again. Its records are not lost: what it
does not take stays for its next poll.

The budget is the gateway's: the wait itself happens in the agent, the client library or a
consumer service, which are handed the timeout this budget grants.

Thread-safe: the request threads share one instance (a lock around two counters).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class LongPollBudget:
    def __init__(self, long_polls_max: int) -> None:
        assert long_polls_max >= 1, long_polls_max
        self.long_polls_max = long_polls_max
        self._lock = threading.Lock()
        self.waiting = 0      # requests in a long poll now
        self.shortened = 0    # long polls answered without their wait, over the budget

    @contextmanager
    def wait_ms(self, timeout_ms: int) -> Iterator[int]:
        """The time (ms) a long poll asking for ``timeout_ms`` may wait: all of it while the
        budget has room (the request holds a place until the block ends), else 0. A poll that
        asks for no wait takes no place."""
        if timeout_ms <= 0:
            yield 0
            return
        with self._lock:
            granted = self.waiting < self.long_polls_max
            if granted:
                self.waiting += 1
            else:
                self.shortened += 1
        if not granted:
            yield 0
            return
        try:
            yield timeout_ms
        finally:
            with self._lock:
                self.waiting -= 1

    def samples(self) -> Iterator[tuple[str, tuple, float]]:
        """``loom_gateway_long_polls_waiting`` and ``…_shortened_total``: a collector of the
        control node's metrics registry (read on its thread)."""
        with self._lock:
            waiting, shortened = self.waiting, self.shortened
        yield "loom_gateway_long_polls_waiting", (), float(waiting)
        yield "loom_gateway_long_polls_shortened_total", (), float(shortened)
