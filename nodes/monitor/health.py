"""Health of one node, judged from what the monitor heard of it.

States: ``healthy``; ``degraded`` (it answers, but: replicas of partitions it leads lag, its
STATS answer is slow or missing, a gateway's HTTP port does not answer, its buffer is nearly
full, its disk is above the alert threshold); ``unresponsive`` (silent for
``monitor.unresponsive_after_ms`` while its process exists -- e.g. SIGSTOP, a livelock -- or a
gateway whose HTTP port has not answered for that long while its heartbeats go on); ``down``
(its process is gone, the supervisor saw it exit, or -- when the process cannot be looked at
from here -- it has been silent that long);
``unknown`` only while a freshly started monitor waits for a first sign of life (a new process of
a node it has judged before is ``down`` until it is heard: each health change starts where the
one before it ended).

Pure functions over ``NodeView``; not thread-safe (owned by the monitor's reactor).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fabric.config import LoomConfig, MonitorConfig, NodeConfig
from fabric.metrics import Sample
from fabric.stall import forgiven_ms
from nodes.monitor.http_probe import ProbeOutcome

HEALTHY = "healthy"
DEGRADED = "degraded"
UNRESPONSIVE = "unresponsive"
DOWN = "down"
UNKNOWN = "unknown"
STATES = (HEALTHY, DEGRADED, UNRESPONSIVE, DOWN)
BUFFER_FULL_RATIO = 0.9          # a producer service buffer this full: degraded
SILENT_HEARTBEATS = 2            # a silence shorter than this many heartbeats (and a check) is never judged
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass
class NodeView:
    """What the monitor knows of one node. Times are the monitor's monotonic ms."""

    name: str
    node: NodeConfig
    pid: int | None = None
    last_heard_ms: int | None = None
    stats_rtt_ms: int | None = None
    stats_failed: bool = False
    http_probe: ProbeOutcome | None = None   # a gateway's last HTTP liveness probe (nodes/monitor/http_probe.py)
    http_failing_since_ms: int | None = None  # since when its probes fail, without a success between
    samples: tuple[Sample, ...] = ()
    exited_pid: int | None = None       # the supervisor saw this pid exit: down until a new one speaks
    exit_reason: str = ""
    state: str = UNKNOWN
    reason: str = "no sign of life yet"
    since_ms: int = 0                    # wall ms of the last state change
    restarts: int = 0                    # by the supervisor
    last_restart_request_ms: int | None = None
    # when the monitor learnt of the current process from the supervisor (a restart), before its
    # first heartbeat: its silence counts from there, not from its predecessor's last heartbeat
    process_since_ms: int | None = None
    rates: dict[tuple[str, tuple], float] = field(default_factory=dict)  # counter -> per second
    counters_at: tuple[int, dict[tuple[str, tuple], float]] | None = None  # (ms, values) for rates

    @property
    def role(self) -> str:
        return self.node.role

    def value(self, name: str, labels: tuple = ()) -> float | None:
        for s in self.samples:
            if s.name == name and s.labels == labels:
                return s.value
        return None

    def new_process(self, pid: int, now_ms: int) -> None:
        """The supervisor started process ``pid`` in place of the one we knew: nothing heard
        of it yet, its HTTP port not judged yet."""
        self.pid, self.last_heard_ms, self.process_since_ms = pid, None, now_ms
        self.http_failing_since_ms = None

    def took_http_probe(self, out: ProbeOutcome, now_ms: int) -> None:
        """The outcome of its last HTTP probe: a failure starts a run of failures (or goes on
        with one), an answer ends it."""
        self.http_probe = out
        if out.answered:
            self.http_failing_since_ms = None
        elif self.http_failing_since_ms is None:
            self.http_failing_since_ms = now_ms

    def forgive_http_failures(self, now_ms: int) -> None:
        """Its run of failed HTTP probes, if any, counts from ``now_ms``."""
        if self.http_failing_since_ms is not None:
            self.http_failing_since_ms = now_ms

    def forgive_stall(self, now_ms: int, stalled_ms: int) -> None:
        """The monitor did not run for ``stalled_ms`` until ``now_ms``: its silence and failing
        HTTP probes of that time do not count (fabric/stall.py), what was heard before still does."""
        if self.last_heard_ms is not None:
            self.last_heard_ms = forgiven_ms(self.last_heard_ms, now_ms, stalled_ms)
        if self.process_since_ms is not None:
            self.process_since_ms = forgiven_ms(self.process_since_ms, now_ms, stalled_ms)
        if self.http_failing_since_ms is not None:
            self.http_failing_since_ms = forgiven_ms(self.http_failing_since_ms, now_ms, stalled_ms)

    def heard(self, now_ms: int, pid: object) -> None:
        self.last_heard_ms = now_ms
        if isinstance(pid, int) and pid > 0:
            if pid != self.pid:
                self.pid = pid
                self.http_failing_since_ms = None  # a new process: its HTTP port is judged afresh
            if pid != self.exited_pid:
                self.exited_pid = None


def classify(view: NodeView, now_ms: int, started_ms: int, config: LoomConfig,
             process_alive: bool | None) -> tuple[str, str]:
    """(state, reason) of ``view`` now. ``process_alive``: whether its pid runs on this host
    (None: cannot tell -- another host, or no pid known yet)."""
    mon = config.monitor
    silent_after_ms = SILENT_HEARTBEATS * config.liveness.heartbeat_interval_ms + mon.health_interval_ms
    if view.exited_pid is not None and view.exited_pid == view.pid:
        return DOWN, f"process {view.pid} exited" + (f" ({view.exit_reason})" if view.exit_reason else "")
    heard = view.last_heard_ms
    if heard is None and view.process_since_ms is not None:
        started_ms = view.process_since_ms  # a restarted process: silent since it was started
    silent_ms = now_ms - (heard if heard is not None else started_ms)
    if process_alive is False and view.pid:
        # its process is gone: down now, not two heartbeats and a check later (a SIGKILLed node
        # turns red on the next check, within health_interval_ms)
        return DOWN, f"process {view.pid} is not running"
    if heard is None and silent_ms < mon.unresponsive_after_ms:
        if view.state != UNKNOWN and view.process_since_ms is not None:
            # a node judged before whose new process has not spoken: not serving yet. "unknown"
            # here put a step the dashboard leaves out (a first verdict) between down and the next
            return DOWN, f"process {view.pid} started, not heard from yet"
        return UNKNOWN, "no sign of life yet"
    if silent_ms > silent_after_ms and silent_ms > mon.unresponsive_after_ms:
        if process_alive:
            return UNRESPONSIVE, f"no heartbeat for {silent_ms} ms while process {view.pid} exists"
        return DOWN, f"no heartbeat for {silent_ms} ms"
    failing_ms = now_ms - view.http_failing_since_ms if view.http_failing_since_ms is not None else 0
    if view.http_probe is not None and failing_ms > mon.unresponsive_after_ms:
        # its heartbeats prove the process runs: the HTTP serving inside it hangs
        return UNRESPONSIVE, f"{view.http_probe.detail}, failing for {failing_ms} ms while its heartbeats go on"
    reasons = degraded_reasons(view, config)
    return (DEGRADED, "; ".join(reasons)) if reasons else (HEALTHY, "")


def degraded_reasons(view: NodeView, config: LoomConfig) -> list[str]:
    out = []
    if view.stats_failed:
        out.append("STATS got no answer")
    elif view.stats_rtt_ms is not None and view.stats_rtt_ms > config.monitor.slow_response_ms:
        out.append(f"slow responses ({view.stats_rtt_ms} ms)")
    probe = view.http_probe
    if probe is not None and not probe.answered:
        out.append(probe.detail)
    elif probe is not None and probe.rtt_ms is not None and probe.rtt_ms > config.monitor.slow_response_ms:
        out.append(f"slow HTTP answers ({probe.detail})")
    if view.value("loom_broker_metadata_refused"):
        out.append("refuses the coordinator's metadata, or is refused by the coordinator (its log, and "
                   "`loom status`, say why): the cluster counts it out")
    under = view.value("loom_broker_under_replicated_partitions")
    if under:
        out.append(f"lagging replicas: {int(under)} partitions it leads are under-replicated")
    used = view.value("loom_broker_disk_used_ratio")
    if used is not None and used * 100 > disk_threshold_percent(config.monitor):
        out.append(f"disk {used * 100:.1f}% used")
    buffered, cap = view.value("loom_producer_service_buffer_bytes"), view.value("loom_producer_service_buffer_max_bytes")
    if buffered is not None and cap and buffered >= BUFFER_FULL_RATIO * cap:
        out.append(f"buffer {100 * buffered / cap:.0f}% full")
    return out


def disk_threshold_percent(mon: MonitorConfig) -> float:
    """Disk usage (percent) above which a broker is degraded and the disk_usage rule holds."""
    t = mon.alerts.disk_usage.threshold
    return t if t is not None else mon.disk_usage_alert_percent


def is_local(node: NodeConfig) -> bool:
    return node.host in LOCAL_HOSTS
