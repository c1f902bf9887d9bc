"""HTTP liveness probes for nodes without a PUB socket (the gateway): ``GET /health`` on the
node's port once per check, on a thread of its own so that a node that accepts connections
and never answers delays no check.

Any HTTP answer proves the node alive (a 503 from a gateway that cannot reach the coordinator
included: that is the coordinator's problem, reported as degraded); no answer within the
timeout is silence, judged like missing heartbeats.

Thread-safety: ``results`` is a bounded deque the probe thread appends to and the monitor's
reactor drains (deque appends and pops are atomic).
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections import deque

from fabric.config import NodeConfig

PROBE_RESULTS_MAX = 1000


class HttpProbe:
    def __init__(self, nodes: dict[str, NodeConfig], interval_ms: int, timeout_ms: int) -> None:
        self.nodes = nodes
        self.interval_s = interval_ms / 1000
        self.timeout_s = timeout_ms / 1000
        self.results: deque[tuple[str, int | None, int]] = deque(maxlen=PROBE_RESULTS_MAX)  # (node, status, rtt ms)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loom-monitor-probe", daemon=True)
        if nodes:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for name, node in self.nodes.items():
                t0 = time.monotonic()
                status = self._get(f"http://{node.host}:{node.port}/health")
                self.results.append((name, status, int((time.monotonic() - t0) * 1000)))

    def _get(self, url: str) -> int | None:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:  # noqa: S310 - http only
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.timeout_s + 1)
