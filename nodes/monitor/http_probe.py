"""HTTP liveness probes of the gateways, off the monitor's reactor thread.

The gateway answers heartbeats and STATS from its control thread, apart from the HTTP request
threads that serve users. A gateway whose HTTP serving hangs (every request thread stuck, the
listener not accepting) went on answering those, and was judged healthy for good. So once per
check the monitor also asks each gateway for ``GET /health/live`` on its ``port``, as a
Kubernetes liveness probe does: any HTTP answer within the timeout proves that a request thread
served it -- a 429 (rate limited) or a 5xx included -- while no answer in time, or a refused or
reset connection, is a failed probe. ``/health/live`` asks the cluster nothing: ``/health``
waits on the coordinator (up to 3 s when it is gone), and probing it would have had every
gateway restarted while the coordinator was down.

One thread per gateway, at most one probe in flight: the reactor only calls ``start`` and
``outcome``, which never block. A probe in flight for longer than its timeout (the monitor's
``slow_response_ms``) is a failure whatever its thread is stuck on (name resolution, a server
trickling bytes) -- but its socket waits on for a late answer, up to ``wait_ms`` (the monitor's
``unresponsive_after_ms``): a gateway under load that answers in twice ``slow_response_ms`` is
slow (degraded), and each answer ends its failure. Given up at the timeout, every probe of such
a gateway failed, and it was judged unresponsive and restarted while it served.

Times (how long a probe is in flight, its round trip) are read from the monitor's clock, the one
that judges the run of failures: on a simulated clock a probe is as old as the simulation says,
not as old as the machine running the test made it.

Thread-safety: ``start``, ``outcome`` and ``close`` may be called from any thread; the rest
belongs to the probe's thread. The clock is read from both (the real one is thread-safe; a
test's ``ManualClock`` only advances while no probe it cares about is in flight).
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass

from fabric.clock import Clock

LIVENESS_PATH = "/health/live"
STOP_JOIN_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ProbeOutcome:
    """``answered``: an HTTP status line came back in time. ``detail`` says what happened,
    naming the port, for the node's health reason."""

    answered: bool
    detail: str
    status: int | None = None
    rtt_ms: int | None = None


def probe_http(host: str, port: int, timeout_ms: int, path: str = LIVENESS_PATH,
               clock: Clock | None = None) -> ProbeOutcome:
    """GET ``path`` once; blocks for at most about ``timeout_ms`` per socket operation (real
    time: the socket's timeout). The round trip is measured on ``clock`` (the real one by default)."""
    where = f"HTTP port {port} (GET {path})"
    clock = clock or Clock()
    started_ms = clock.now_ms()
    conn = http.client.HTTPConnection(host, port, timeout=timeout_ms / 1000)
    try:
        conn.request("GET", path, headers={"Connection": "close", "User-Agent": "loom-monitor"})
        status = conn.getresponse().status
    except TimeoutError:
        return ProbeOutcome(False, f"{where} did not answer within {timeout_ms} ms")
    except (OSError, http.client.HTTPException) as e:
        return ProbeOutcome(False, f"{where} failed: {type(e).__name__}: {e}")
    finally:
        conn.close()
    rtt_ms = clock.now_ms() - started_ms
    return ProbeOutcome(True, f"{where} answered {status} in {rtt_ms} ms", status, rtt_ms)


class HttpProbe:
    """Probes one gateway's HTTP port when asked, on a thread of its own."""

    def __init__(self, host: str, port: int, timeout_ms: int, wait_ms: int | None = None,
                 clock: Clock | None = None) -> None:
        """``timeout_ms``: in flight longer (on ``clock``, the real one by default), the probe is
        a failure; ``wait_ms`` (at least ``timeout_ms``, the default): how long its socket waits
        for a late answer."""
        self.host, self.port, self.timeout_ms = host, port, timeout_ms
        self.clock = clock or Clock()
        self.wait_ms = max(timeout_ms, wait_ms if wait_ms is not None else timeout_ms)
        self._lock = threading.Lock()
        self._kick = threading.Event()
        self._closed = False
        self._started_ms: int | None = None     # the probe in flight, if any (clock ms)
        self._last: ProbeOutcome | None = None
        self._thread = threading.Thread(target=self._run, name=f"loom-http-probe-{port}", daemon=True)
        self._thread.start()

    def start(self) -> bool:
        """Ask for a probe now; never blocks. False when the last one is still in flight."""
        with self._lock:
            if self._started_ms is not None or self._closed:
                return False
            self._started_ms = self.clock.now_ms()
        self._kick.set()
        return True

    def outcome(self) -> ProbeOutcome | None:
        """The last probe's outcome (None before the first one ends), or a failure when the
        probe in flight has outlasted its timeout."""
        with self._lock:
            if self._started_ms is not None and self.clock.now_ms() - self._started_ms > self.timeout_ms:
                return ProbeOutcome(False, f"HTTP port {self.port} (GET {LIVENESS_PATH}) did not answer "
                                           f"within {self.timeout_ms} ms")
            return self._last

    def in_flight(self) -> bool:
        """A probe was started and has not ended yet (answered, failed or given up)."""
        with self._lock:
            return self._started_ms is not None

    def _run(self) -> None:
        while True:
            self._kick.wait()
            self._kick.clear()
            if self._closed:
                return
            out = probe_http(self.host, self.port, self.wait_ms, clock=self.clock)
            with self._lock:
                self._last, self._started_ms = out, None

    def close(self, join: bool = True) -> None:
        """Stop the thread (after the probe in flight, if any); ``join``: wait for it up to
        STOP_JOIN_TIMEOUT_S (a daemon thread: one stuck in a probe does not hold the exit)."""
        self._closed = True
        self._kick.set()
        if join:
            self._thread.join(STOP_JOIN_TIMEOUT_S)

    def join(self, timeout_s: float) -> None:
        self._thread.join(max(0.0, timeout_s))
