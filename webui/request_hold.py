"""Fault injection, for tests: hold every HTTP request of the gateway until released.

``FAULTS {"hold_http_ms": N}`` on the gateway's control port (nodes/gateway/control.py; only
with ``faults.enabled: true`` in the config, like every FAULTS rule) makes each HTTP request,
WebSockets included, wait before the app sees it, for N ms at most or until ``hold_http_ms: 0``
releases them. Every request thread that takes a request then hangs while the control thread
answers PING, STATS and heartbeats on -- the state of a gateway whose HTTP serving hung, which
the monitor must find by its HTTP probe (tests/integration/test_monitor_gateway_http.py).
Without it, a test had to hang the gateway by a config that let WebSockets take every thread,
which the config now refuses.

Without ``faults.enabled`` the gateway makes no ``RequestHold`` and its app has no such
middleware. Thread-safe: the control thread holds and releases, the request threads wait (one
condition variable).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any, Callable

HOLD_MS_MAX = 600_000   # a hold ends by itself at the latest after this: a test that dies leaves no gateway hung for good


class RequestHold:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._until = 0.0     # time.monotonic() at which the hold ends; 0: none
        self.held = 0         # requests waiting now

    def hold_for(self, ms: int) -> int:
        """Hold every request from now for ``ms`` (0 releases those held at once). Returns how
        many requests were held at that moment (read after it, the count races the released
        threads)."""
        assert 0 <= ms <= HOLD_MS_MAX, ms
        with self._cond:
            self._until = time.monotonic() + ms / 1000 if ms else 0.0
            self._cond.notify_all()
            return self.held

    def wait(self) -> None:
        """On a request thread: return once no hold is on (at once when none is)."""
        if not self._until:
            return
        with self._cond:
            self.held += 1
            try:
                while (left := self._until - time.monotonic()) > 0:
                    self._cond.wait(left)
            finally:
                self.held -= 1

    def wrap(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        """WSGI middleware: ``app`` behind the hold."""
        def held_app(environ: dict, start_response: Any) -> Iterable[bytes]:
            self.wait()
            return app(environ, start_response)
        return held_app
