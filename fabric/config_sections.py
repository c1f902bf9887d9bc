"""The configuration's sections: one pydantic model per section of the YAML file (``storage``,
``nodes`` and a node's ``storage`` override, ``topics``, ``replication``, ``liveness``,
``limits``, ``security``, ``monitor``, ``supervisor``, ``services``, ``gateway``, ``faults``)
with its keys, defaults and checks. ``fabric.config`` puts them together in ``LoomConfig``,
loads the file, and re-exports every name here.

Unknown keys are rejected, and YAML's ``true``/``false`` is no number (``_Model``).

Thread-safety: models are immutable after load; share freely.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from engines import registry as engine_registry
from engines.api import CacheWindow, EngineConfig
from engines.direct_write import DIRECT_WRITE_MIN_BYTES
from fabric.roles import HTTP, PUB, ROLE_NAMES, ROLES, ROUTER

Role = Literal[ROLE_NAMES]  # type: ignore[valid-type]  # the names of fabric/roles.py's table


_NUMBER_TYPES = (int, float)


def _wants_number(annotation: Any) -> bool:
    """``int``, ``float``, or either or None (``int | None``)."""
    if annotation in _NUMBER_TYPES:
        return True
    args = getattr(annotation, "__args__", ())
    return bool(args) and any(a in _NUMBER_TYPES for a in args) and all(
        a in _NUMBER_TYPES or a is type(None) for a in args)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML's ``true``/``false`` is no number: pydantic would take it as 1/0 (a
        ``page_cache_tail_bytes: true`` would be a 1-byte window)."""
        if isinstance(value, bool) and _wants_number(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"a number is wanted, not {str(value).lower()}")
        return value


def _known_engine(name: str | None) -> str | None:
    """An engine name must be one the registry opens (checked at load, not at first open)."""
    known = engine_registry.available()
    if name is not None and name not in known:
        raise ValueError(f"unknown storage engine {name!r}; known engines: {', '.join(known)}")
    return name


class StorageConfig(_Model):
    engine: str = "segment"
    fsync: Literal["always", "interval", "never"] = "interval"
    fsync_interval_ms: int = Field(1000, ge=1)
    segment_bytes_max: int = Field(128 * 1024 * 1024, ge=4096)
    segment_ms_max: int = Field(7 * 24 * 3600 * 1000, ge=1000)
    index_interval_bytes: int = Field(4096, ge=64)
    # the page cache a broker keeps for the durable tails of its logs, divided equally among
    # the partitions written to lately; older durable bytes are dropped from it
    # (engines/segment_cache.py, nodes/broker/core_timers.py share_page_cache).
    # -1: leave the cache to the kernel. The segment engine's; lmdb and memory ignore it.
    page_cache_tail_bytes: int = Field(256 * 1024 * 1024, ge=-1)
    # writes of at least this many bytes go past the page cache (O_DIRECT; engines/direct_write.py):
    # a third to a half less CPU per byte under load, at the price of wall time per write and of
    # readers of those bytes reading the disk. -1: never. The segment engine's; others ignore it.
    direct_write_min_bytes: int = Field(DIRECT_WRITE_MIN_BYTES, ge=-1)
    options: dict[str, Any] = Field(default_factory=dict)

    _check_engine = field_validator("engine")(_known_engine)

    def engine_config(self, retention_ms: int, retention_bytes: int, batch_bytes_max: int,
                      cache_window: CacheWindow) -> EngineConfig:
        """One log's EngineConfig; ``cache_window``: the broker's shared page-cache window."""
        return EngineConfig(
            cache_window=cache_window,
            fsync=self.fsync,
            fsync_interval_ms=self.fsync_interval_ms,
            segment_bytes_max=self.segment_bytes_max,
            segment_ms_max=self.segment_ms_max,
            index_interval_bytes=self.index_interval_bytes,
            retention_ms=retention_ms,
            retention_bytes=retention_bytes,
            batch_bytes_max=batch_bytes_max,
            direct_write_min_bytes=self.direct_write_min_bytes,
            options=dict(self.options),
        )


class StorageOverride(_Model):
    """Per-broker override of the cluster-wide storage settings (only what is set)."""

    engine: str | None = None
    fsync: Literal["always", "interval", "never"] | None = None
    fsync_interval_ms: int | None = Field(None, ge=1)
    segment_bytes_max: int | None = Field(None, ge=4096)
    page_cache_tail_bytes: int | None = Field(None, ge=-1)
    direct_write_min_bytes: int | None = Field(None, ge=-1)
    options: dict[str, Any] | None = None

    _check_engine = field_validator("engine")(_known_engine)


class NodeConfig(_Model):
    role: Role
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    pub_port: int | None = Field(None, ge=1, le=65535)
    broker_id: int | None = Field(None, ge=1)
    dashboard_port: int | None = Field(None, ge=1, le=65535)
    metrics_port: int | None = Field(None, ge=1, le=65535)  # monitor: Prometheus /metrics (default port + 1)
    # the gateway's ROUTER (PING, STATS) when ``port`` serves HTTP; default port + 200
    control_port: int | None = Field(None, ge=1, le=65535)
    storage: StorageOverride | None = None

    @model_validator(mode="after")
    def _check_role_fields(self) -> "NodeConfig":
        if self.role == "broker" and self.broker_id is None:
            raise ValueError("a broker needs broker_id")
        if self.role != "broker" and self.storage is not None:
            raise ValueError("only brokers have storage overrides")
        return self

    @property
    def publish_port(self) -> int:
        return self.pub_port if self.pub_port is not None else self.port + 100

    @property
    def http_metrics_port(self) -> int:
        return self.metrics_port if self.metrics_port is not None else self.port + 1

    @property
    def rpc_port(self) -> int:
        """The ZeroMQ ROUTER port: ``port``, except for a role whose ``port`` is HTTP (the
        gateway), whose ROUTER is ``control_port``."""
        if ROLES[self.role].port_serves == ROUTER:
            return self.port
        return self.control_port if self.control_port is not None else self.port + 200

    def bound_ports(self) -> list[int]:
        """Every port a node of this role binds (fabric/roles.py says which sockets)."""
        spec = ROLES[self.role]
        ports = [self.port]
        if ROUTER in spec.binds and self.rpc_port != self.port:
            ports.append(self.rpc_port)
        if PUB in spec.binds:
            ports.append(self.publish_port)
        if HTTP in spec.binds and spec.port_serves != HTTP:
            ports.append(self.http_metrics_port)
        if self.dashboard_port:
            ports.append(self.dashboard_port)
        return ports

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.host}:{self.rpc_port}"

    @property
    def pub_endpoint(self) -> str:
        return f"tcp://{self.host}:{self.publish_port}"


class ClusterSection(_Model):
    name: str = "loom"
    data_dir: str = "./data"


class TopicDefaults(_Model):
    partitions: int = Field(3, ge=1, le=10_000)
    replication_factor: int = Field(3, ge=1, le=16)
    min_insync_replicas: int = Field(2, ge=1, le=16)
    retention_ms: int = Field(-1, ge=-1)
    retention_bytes: int = Field(-1, ge=-1)
    # how often each broker applies retention to its logs (Kafka's
    # log.retention.check.interval.ms): a broker-wide timer, kept beside the retention defaults
    retention_check_interval_ms: int = Field(30_000, ge=10)
    auto_create: bool = False


class ReplicationConfig(_Model):
    # pubsub: leaders publish appends, followers repair gaps by fetching (the default);
    # fetch: followers long-poll the leader only (Kafka's way) -- for experiments.
    transport: Literal["pubsub", "fetch"] = "pubsub"
    replica_lag_time_max_ms: int = Field(10_000, ge=100)
    unclean_leader_election: bool = False
    replica_fetch_wait_ms: int = Field(200, ge=1)
    replica_fetch_bytes_max: int = Field(8 * 1024 * 1024, ge=1024)
    # how often the coordinator moves leadership back to preferred replicas alive and in sync
    preferred_leader_check_ms: int = Field(5000, ge=100)


class LivenessConfig(_Model):
    heartbeat_interval_ms: int = Field(300, ge=10)
    session_timeout_ms: int = Field(3000, ge=100)
    # a broker whose connection closed and that stays silent for two heartbeat intervals is
    # dead at once (a crash); paused or partitioned brokers still wait out the session
    crash_detection: bool = True

    @model_validator(mode="after")
    def _check(self) -> "LivenessConfig":
        if self.session_timeout_ms < 2 * self.heartbeat_interval_ms:
            raise ValueError("session_timeout_ms must be at least twice heartbeat_interval_ms")
        return self


class LimitsConfig(_Model):
    message_bytes_max: int = Field(1024 * 1024, ge=1024)
    batch_bytes_max: int = Field(16 * 1024 * 1024, ge=1024)
    fetch_bytes_max: int = Field(16 * 1024 * 1024, ge=1024)
    fetch_wait_ms_max: int = Field(30_000, ge=0)
    # a group with no members whose newest commit is older than this loses its committed
    # offsets, and the group goes (Kafka's offsets.retention.minutes: 7 days)
    group_offsets_retention_ms: int = Field(7 * 24 * 3600 * 1000, ge=60_000)


class ApiKey(_Model):
    """One gateway API key: only its hash (``loom keys add`` prints the key once)."""

    name: str = Field(min_length=1, max_length=64)
    key_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    roles: list[Literal["admin", "produce", "consume", "read"]] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _no_plaintext(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "key" in raw:
            raise ValueError("keys are not stored in clear: replace `key` with the `key_hash` "
                             "that `loom keys add NAME --roles ...` prints")
        return raw


# Request threads the gateway keeps for REST whatever WebSockets hold (each holds one for its
# life): at least REST_THREADS_MIN and at least 1/REST_THREADS_SHARE of ``worker_threads``.
# REST needs a few at any moment -- the monitor's /health/live probe, /health, a browser
# loading the dashboard (up to six connections), the long polls' budget below -- and a larger
# gateway serves proportionally more REST clients.
REST_THREADS_MIN = 4
REST_THREADS_SHARE = 4
# Of the REST threads, at most 1/LONG_POLL_SHARE may wait in a long poll at once (webui/long_polls.py)
LONG_POLL_SHARE = 2


class GatewayConfig(_Model):
    """The API gateway (nodes/gateway, webui)."""

    auto_create_topics: bool = False          # producing to a missing topic creates it
    request_bytes_max: int = Field(16 * 1024 * 1024, ge=1024)   # larger bodies get 413
    worker_threads: int = Field(48, ge=REST_THREADS_MIN + 1, le=512)  # gunicorn gthread threads
    # each holds a thread for its life; must leave the REST reserve (REST_THREADS_MIN, _SHARE),
    # checked on the default too: worker_threads: 8 alone left the default 24 sockets every thread
    websockets_max: int = Field(24, ge=1, le=512, validate_default=True)
    websockets_per_key_max: int = Field(8, ge=1, le=512)        # of those, open with one key
    ws_send_queue_max: int = Field(256, ge=1, le=100_000)       # messages queued per client
    ws_slow_client_timeout_ms: int = Field(5000, ge=10)         # queue full this long: closed
    # a request's headers must arrive within this, its body at 64 KiB/s beyond it: else cut (408)
    request_read_timeout_ms: int = Field(5_000, ge=100, le=3_600_000)
    rate_limit_clients_max: int = Field(10_000, ge=1)           # address buckets kept (+1 per key)

    @field_validator("websockets_max")
    @classmethod
    def _leaves_rest_threads(cls, websockets_max: int, info: ValidationInfo) -> int:
        """WebSockets may not take the threads REST needs: with every thread held by a socket,
        REST, /health and the dashboard stopped answering, and the monitor, whose probe is
        /health/live, restarted the gateway -- users' load turned into restarts."""
        threads = info.data.get("worker_threads")
        if threads is None:  # worker_threads is invalid itself, and said so
            return websockets_max
        reserve = rest_threads_reserve(threads)
        if threads - websockets_max < reserve:
            raise ValueError(f"{websockets_max} leaves {threads - websockets_max} of worker_threads {threads} for REST; "
                             f"at least {reserve} must be left (a quarter of worker_threads, at least "
                             f"{REST_THREADS_MIN}): websockets_max may be at most {threads - reserve}")
        return websockets_max

    @property
    def rest_threads(self) -> int:
        """Request threads no WebSocket can hold."""
        return self.worker_threads - self.websockets_max

    @property
    def long_polls_max(self) -> int:
        """Request threads that may wait in a long poll at once (half the REST threads): the
        other half answers everything else however many clients long-poll."""
        return max(1, self.rest_threads // LONG_POLL_SHARE)


def rest_threads_reserve(worker_threads: int) -> int:
    """Request threads no WebSocket may hold, of ``worker_threads``."""
    return max(REST_THREADS_MIN, -(-worker_threads // REST_THREADS_SHARE))


class SecurityConfig(_Model):
    api_keys: list[ApiKey] = Field(default_factory=list)
    rate_limit_per_s: float = Field(1000.0, gt=0)
    rate_limit_burst: int = Field(2000, ge=1)


class AlertRuleConfig(_Model):
    """One alert rule: off or on, how long its condition must hold before it fires, and
    (for threshold rules) the threshold; None takes the monitor section's default."""

    enabled: bool = True
    for_ms: int = Field(0, ge=0)
    threshold: float | None = Field(None, ge=0)


class AlertsConfig(_Model):
    node_down: AlertRuleConfig = Field(default_factory=AlertRuleConfig)
    node_unresponsive: AlertRuleConfig = Field(default_factory=AlertRuleConfig)
    under_replicated: AlertRuleConfig = Field(default_factory=lambda: AlertRuleConfig(for_ms=30_000))
    offline_partitions: AlertRuleConfig = Field(default_factory=AlertRuleConfig)
    consumer_lag: AlertRuleConfig = Field(default_factory=lambda: AlertRuleConfig(for_ms=30_000))  # records
    disk_usage: AlertRuleConfig = Field(default_factory=AlertRuleConfig)  # percent used
    crash_loop: AlertRuleConfig = Field(default_factory=AlertRuleConfig)
    gateway_5xx: AlertRuleConfig = Field(default_factory=lambda: AlertRuleConfig(for_ms=60_000, threshold=1.0))  # per s


class WebhookConfig(_Model):
    """Alerts are POSTed as JSON to ``url``; each webhook has its own queue and thread."""

    url: str = Field(pattern=r"^https?://")
    timeout_ms: int = Field(2000, ge=10, le=60_000)
    retries: int = Field(3, ge=0, le=20)
    retry_backoff_ms: int = Field(500, ge=0, le=60_000)


class MonitorConfig(_Model):
    health_interval_ms: int = Field(1000, ge=100)
    unresponsive_after_ms: int = Field(10_000, ge=500)
    consumer_lag_alert: int = Field(10_000, ge=0)
    disk_usage_alert_percent: float = Field(90.0, gt=0, le=100)
    slow_response_ms: int = Field(1000, ge=10)  # a STATS answer slower than this: degraded
    # ask the supervisor to restart an unresponsive node, at most once per node per backoff
    restart_unresponsive: bool = True
    restart_backoff_ms: int = Field(30_000, ge=100)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    webhooks: list[WebhookConfig] = Field(default_factory=list, max_length=16)


class SupervisorConfig(_Model):
    restart: bool = True
    restart_backoff_ms: int = Field(500, ge=10)
    restart_backoff_max_ms: int = Field(30_000, ge=10)
    startup_timeout_ms: int = Field(30_000, ge=1000)
    # a node that exits more than this many times within the window is given up on (an alert)
    crash_loop_restarts_max: int = Field(5, ge=1, le=1000)
    crash_loop_window_ms: int = Field(60_000, ge=1000)


class ServicesConfig(_Model):
    """The producer service and the consumer services (nodes/producer.py, nodes/consumer.py)."""

    producer_linger_ms: int = Field(0, ge=0, le=10_000)   # a request is a batch already: no wait for more
    producer_buffer_bytes_max: int = Field(32 * 1024 * 1024, ge=1024)
    # after SIGTERM, how long the requests taken get to be acknowledged (nodes/producer.py): the
    # supervisor's SIGKILL comes 15 s after SIGTERM, and the rest of the stop takes up to 2 s
    # (nodes.producer.DRAIN_STOP_MS)
    producer_drain_timeout_ms: int = Field(5000, ge=0, le=6000)
    consumer_instances_max: int = Field(256, ge=1, le=10_000)
    consumer_instance_idle_timeout_ms: int = Field(300_000, ge=100)
    # what a consumer service's hosted instances may fetch ahead, all together: each instance's
    # share is this divided by consumer_instances_max (at least 256 KiB, at most the client
    # library's 64 MiB), so that a full service on topics with a backlog stays within it
    consumer_buffer_bytes_max: int = Field(256 * 1024 * 1024, ge=1024 * 1024, le=1 << 40)


class FaultsConfig(_Model):
    """Test-only fault injection in the fabric: drop traffic between named nodes."""

    enabled: bool = False
    drop: list[tuple[str, str]] = Field(default_factory=list)
