"""What the Flask app is handed by the gateway node: the cluster agent (nodes/gateway/agent.py
implements ``ClusterAgent``), the event hub, the key store, the rate limiter and the settings.
The app never imports zmq; everything cluster-side goes through ``agent``."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

from fabric.config import GatewayConfig, SecurityConfig
from webui.auth import KeyStore, RateLimiter
from webui.events import EventHub
from webui.long_polls import LongPollBudget
from webui.request_hold import RequestHold
from webui.ws_outbox import OpenSockets


class ClusterAgent(Protocol):
    """The cluster operations the routes use; every method raises webui.errors.ClusterError."""

    def coordinator_reachable(self) -> bool: ...
    def coordinator_metadata(self) -> Any: ...  # metadata, when the coordinator answers (not a broker's copy)
    def metadata(self) -> Any: ...
    def topic(self, name: str) -> Any: ...
    def offsets(self, topic: str) -> dict[int, tuple[int, int]]: ...
    def create_topic(self, name: str, partitions: int | None, replication_factor: int | None, configs: dict) -> None: ...
    def alter_topic(self, name: str, partitions: int | None = None, configs: dict | None = None) -> None: ...
    def delete_topic(self, name: str) -> None: ...
    def produce(self, topic: str, records: list, acks: str | int, partition: int | None = None) -> list: ...
    def read(self, topic: str, partition: int, offset: int | None, count: int, max_bytes: int, timeout_ms: int) -> list: ...
    def list_groups(self) -> list[dict]: ...
    def describe_group(self, group: str) -> dict: ...
    def group_lag(self, group: str) -> list: ...
    def reset_offsets(self, group: str, topic: str, execute: bool, **target: Any) -> dict: ...
    def create_instance(self, group: str, name: str | None, config: dict, fmt: str) -> Any: ...
    def instance(self, group: str, name: str) -> Any: ...
    def call_instance(self, group: str, name: str, op: Callable[[Any], Any]) -> Any: ...
    def delete_instance(self, group: str, name: str) -> None: ...
    def subscribe(self, group: str, name: str, topics: list[str]) -> None: ...
    def assign(self, group: str, name: str, partitions: list[tuple[str, int]]) -> None: ...
    def monitor_metrics(self) -> tuple[bytes, str]: ...
    def monitor_history(self, since_ms: int) -> dict: ...
    def monitor_events(self) -> list: ...  # the monitor's event log, oldest first (items unchecked)


HTTP_REQUESTS_METRIC = "loom_gateway_http_requests_total"


class HttpRequestCounter:
    """``loom_gateway_http_requests_total{route,status}``: the HTTP threads ``record``, the node's
    metrics registry reads ``samples`` (a collector) on its own thread. Labels are bounded: the
    route template (or ``unmatched``) and the status code. Thread-safe (one lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    def record(self, route: str, status: int) -> None:
        key = (route, str(status))
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def samples(self) -> Iterator[tuple[str, tuple, float]]:
        with self._lock:
            counts = list(self._counts.items())
        for labels, n in counts:
            yield HTTP_REQUESTS_METRIC, labels, float(n)

    def totals(self) -> dict[str, int]:
        """``{"route status": count}`` for STATS."""
        with self._lock:
            return {f"{r} {s}": n for (r, s), n in self._counts.items()}


@dataclass
class Gateway:
    agent: ClusterAgent
    hub: EventHub
    keys: KeyStore
    limiter: RateLimiter
    settings: GatewayConfig
    security: SecurityConfig
    cluster_id: str
    http_requests: HttpRequestCounter = field(default_factory=HttpRequestCounter)
    broker_storage: dict[int, dict[str, Any]] = field(default_factory=dict)  # broker id -> engine, fsync, fsync_interval_ms
    # called once a request that failed with a programmer error (not an ApiError or a
    # ClusterError) has been answered 500 with its request id: the gateway node stops this
    # worker, and gunicorn's master starts a fresh one -- a bug is not carried on with
    on_bug: Callable[[], None] = field(default=lambda: None)
    # fault injection (only with faults.enabled): every HTTP request waits while it holds
    hold: RequestHold | None = None
    # the request threads that may wait in a long poll at once (webui/long_polls.py)
    long_polls: LongPollBudget = field(init=False)
    # the WebSockets open in this worker, closed with 1001 when it stops (webui/ws_outbox.py)
    websockets: OpenSockets = field(default_factory=OpenSockets)

    def __post_init__(self) -> None:
        self.long_polls = LongPollBudget(self.settings.long_polls_max)
