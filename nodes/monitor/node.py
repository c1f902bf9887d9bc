"""The monitor node: health of every node, metrics with history, alerts, recovery requests.

It subscribes to every node's heartbeats (PUB/SUB; the coordinator's metadata too) and pulls
each node's typed metrics with STATS over ROUTER/DEALER once per ``monitor.health_interval_ms``.
A gateway's HTTP port is probed too, once per check, on a thread per gateway
(nodes/monitor/http_probe.py): its heartbeats and STATS come from its control thread, which
runs on when the HTTP serving hangs.
Each check then, in a fixed order: judges every node's health (nodes/monitor/health.py),
derives the cluster's facts (nodes/monitor/cluster.py), evaluates the alert rules
(nodes/monitor/alerts.py), asks the supervisor to restart unresponsive nodes
(nodes/monitor/recovery.py), appends a point to the history, and swaps in the snapshot that
``GET /metrics`` on ``metrics_port`` serves (nodes/monitor/exposition.py).

Requests: MONITOR_STATUS, MONITOR_HISTORY, MONITOR_ALERTS, MONITOR_EVENTS, MONITOR_METRICS (see
fabric/client/monitor.py). Events (alerts firing and resolving, health
changes, recovery actions) are published on the PUB socket (topic ``ev``), and the cluster
status once per check (topic ``st``).

Stateless apart from the alert history (``<data_dir>/<name>/alerts.json``): a restart loses
the in-memory history only. Not thread-safe: everything runs on the reactor's thread, except
the Prometheus HTTP server, webhook and HTTP probe threads, which only read a swapped-in
snapshot, take items from their own queues or hand back one outcome under a lock.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from typing import Any

import zmq

from fabric import protocol as P
from fabric import wire
from fabric.config import LoomConfig
from fabric.errors import RemoteError
from fabric.metadata import UNREADABLE_METADATA, ClusterMetadata, read_answer
from fabric.metrics import Sample, decode_samples
from fabric.roles import HTTP, ROLES
from fabric.rpc import RpcClient, make_socket
from fabric.stall import StallWatch, forgiven_ms, stall_threshold_ms
from nodes.base import Node
from nodes.launcher import role_available
from nodes.processes import pid_alive
from nodes.monitor import health as H
from nodes.monitor.alerts import FIRING, Alert, AlertBook
from nodes.monitor.cluster import ClusterFacts
from nodes.monitor.exposition import CONTENT_TYPE, Exposition, make_registry, render_text, serve_http
from nodes.monitor.history import History
from nodes.monitor.http_probe import STOP_JOIN_TIMEOUT_S, HttpProbe
from nodes.monitor.recovery import Recovery
from nodes.monitor.rules import alert_conditions, rule_for_ms
from nodes.monitor.webhook import WebhookSender

log = logging.getLogger(__name__)

RATE_METRICS = frozenset({"loom_broker_records_in_total", "loom_broker_bytes_in_total", "loom_broker_records_out_total",
                          "loom_broker_bytes_out_total", "loom_process_cpu_seconds_total",
                          "loom_gateway_http_requests_total"})
EVENTS_REPLY_MAX = 1000
SUB_KINDS = (P.PUB_HEARTBEAT, P.PUB_METADATA, P.PUB_METADATA_DELTA, P.PUB_METADATA_VERSION)
METADATA_RETRY_MS = 500
EVENT_TYPES = {"health": "node", "alert": "alert", "recovery": "recovery"}


class Monitor(Node):
    role = "monitor"

    def __init__(self, config: LoomConfig, name: str, **kw: Any) -> None:
        super().__init__(config, name, **kw)
        mon = config.monitor
        self.mon = mon
        self.data_dir = self.take_data_dir(config.data_dir_for(name))  # raises DataDirInUse
        now = self.clock.now_ms()
        self.started_wall_ms = self.clock.wall_ms()  # its own row's since: healthy since it started
        # roles this build lacks are never started by `loom up`: nothing to watch
        self.views = {n: H.NodeView(n, c, since_ms=self.clock.wall_ms()) for n, c in config.nodes.items()
                      if n != name and role_available(c.role)}
        self.facts = ClusterFacts()
        self.history = History()
        self.checks = 0
        self.checked_wall_ms = 0
        self.events: deque[dict] = deque(maxlen=P.EVENTS_MAX)
        self.alerts = AlertBook(self.data_dir, lambda rule: rule_for_ms(mon.alerts, rule), self._on_alert_change)
        self.events.extend(self.alerts.saved_events)
        self.event_seq = max((e.get("seq", 0) for e in self.events), default=0)
        # node -> (state, wall ms) of its last saved health change: a node this monitor first
        # judges as that state has been so since then, not since this monitor started
        self.saved_health = {e["node"]: (e.get("state"), e.get("since_ms", e.get("ts_ms"))) for e in self.events
                             if e.get("kind") == "health" and isinstance(e.get("node"), str)}
        self.health_changed = False  # a health event not saved yet
        self.webhooks = [WebhookSender(w) for w in mon.webhooks]
        self.exposition = Exposition.empty()
        self.sub = make_socket(self.ctx, zmq.SUB)
        self.sub.setsockopt(zmq.RECONNECT_IVL_MAX, config.liveness.heartbeat_interval_ms)
        self.sub.setsockopt(zmq.SUBSCRIBE, P.TOPIC_HEARTBEAT)
        self.sub.setsockopt(zmq.SUBSCRIBE, P.TOPIC_METADATA)
        self.stats_clients: dict[str, RpcClient] = {}
        for n, c in config.nodes.items():
            if n in self.views:  # every role heartbeats on PUB and answers STATS (the gateway on its rpc port)
                self.sub.connect(c.pub_endpoint)
                self.stats_clients[n] = RpcClient(self.ctx, self.reactor, c.endpoint, identity=name)
        self.reactor.add_socket(self.sub, self._on_sub)
        # a node whose ``port`` serves HTTP (the gateway): that port is probed as users reach it
        self.http_probes = {n: HttpProbe(c.host, c.port, mon.slow_response_ms,
                                         wait_ms=mon.unresponsive_after_ms, clock=self.clock)
                            for n, c in config.nodes.items() if n in self.views and ROLES[c.role].port_serves == HTTP}
        self.coordinator = self.stats_clients[config.coordinator_name]
        self._in_flight: set[str] = set()
        self._metadata_in_flight = False
        self.reactor.call_later(0, self._refresh_metadata)
        self.recovery = Recovery(self.ctx, self.reactor, config, name, self._emit, list(self.events))
        for cmd, fn in ((P.MONITOR_STATUS, self._on_status), (P.MONITOR_HISTORY, self._on_history),
                        (P.MONITOR_ALERTS, self._on_alerts), (P.MONITOR_EVENTS, self._on_events),
                        (P.MONITOR_METRICS, self._on_metrics)):
            self.server.route(cmd, fn)
        self.registry = make_registry(lambda: self.exposition)
        try:
            self.http = serve_http(self.node_config.host, self.node_config.http_metrics_port, self.registry)
        except OSError as e:  # reported like a taken ROUTER port (nodes/run.py)
            raise zmq.ZMQError(e.errno, f"metrics_port {self.node_config.http_metrics_port}: {e.strerror}") from e
        self.started_check_ms = now
        # a monitor back from a pause of its own (SIGSTOP, starved) judged every node by the
        # heartbeats it had not read: unresponsive, and the supervisor restarted them all at once
        self.stall_watch = StallWatch(self.clock, stall_threshold_ms(mon.health_interval_ms),
                                      self._resume_after_stall)
        self.reactor.after_pass(self.stall_watch.tick)  # before the check that passes verdicts
        self.reactor.call_every(mon.health_interval_ms, self._check)

    # -- what the nodes say ------------------------------------------------------------------
    def _on_sub(self, frames: list[bytes]) -> None:
        """A heartbeat or a metadata push. Only reading it is forgiven (a peer's bad input:
        counted, logged, dropped); a bug while applying it stops the node."""
        try:
            msg = wire.decode_pub(frames, SUB_KINDS)
            update = self._read_push(msg)
        except UNREADABLE_METADATA as e:
            self.counters["sub_malformed"] += 1
            log.warning("unreadable %r message dropped: %s: %s", bytes(frames[2][:32]) if len(frames) > 2 else b"",
                        type(e).__name__, e)
            return
        if msg.kind == P.PUB_HEARTBEAT:
            node = msg.header.get("node")
            view = self.views.get(node) if isinstance(node, str) else None
            if view is not None:
                view.heard(self.clock.now_ms(), msg.header.get("pid"))
        elif update is not None:
            self.facts.apply_metadata(update)

    def _read_push(self, msg: wire.PubMessage) -> ClusterMetadata | None:
        """The metadata a push makes of ours (None: nothing to apply; a missed delta asks for a
        snapshot). Raises what reading a malformed push raises (UNREADABLE_METADATA)."""
        header = msg.header
        if msg.kind == P.PUB_METADATA:
            return ClusterMetadata.from_wire(header)
        if msg.kind == P.PUB_METADATA_DELTA:
            return self._metadata_after_delta(header)
        if msg.kind == P.PUB_METADATA_VERSION and int(header["version"]) > self._metadata_version():
            self._refresh_metadata()  # a delta went missing
        return None

    # -- the coordinator's metadata: a snapshot, then its deltas ---------------------------------
    def _metadata_version(self) -> int:
        return self.facts.metadata.version if self.facts.metadata is not None else -1

    def _metadata_after_delta(self, raw: dict) -> ClusterMetadata | None:
        md = self.facts.metadata
        if md is None:
            self._refresh_metadata()
            return None
        if int(raw["version"]) <= md.version:
            return None
        try:
            new, _changed = md.apply_delta(raw)
        except ValueError:  # it does not start at our version: we missed one
            self._refresh_metadata()
            return None
        return new

    def _refresh_metadata(self) -> None:
        """Ask the coordinator for a full snapshot (at start and after a gap); one at a time."""
        if self._metadata_in_flight:
            return
        self._metadata_in_flight = True

        def done(header: dict | None, payloads: list, err: RemoteError | None) -> None:
            self._metadata_in_flight = False
            md = read_answer(header, "the coordinator") if header is not None else None
            if md is not None:
                self.facts.apply_metadata(md)
                return
            if header is not None:
                self.counters["metadata_malformed"] += 1
            if self.facts.metadata is None:
                self.reactor.call_later(METADATA_RETRY_MS, self._refresh_metadata)
        self.coordinator.request(P.METADATA, {}, callback=done, timeout_ms=METADATA_RETRY_MS * 5)

    def _poll(self, name: str) -> None:
        if name in self._in_flight:
            return
        view, sent_ms = self.views[name], self.clock.now_ms()
        self._in_flight.add(name)

        def done(header: dict | None, payloads: list, err: RemoteError | None) -> None:
            self._in_flight.discard(name)
            now = self.clock.now_ms()
            if header is None:
                view.stats_failed = True
                return
            view.stats_failed = False
            view.stats_rtt_ms = now - sent_ms
            view.heard(now, header.get("pid"))
            self._take_samples(view, decode_samples(header.get("metrics")), now)
        self.stats_clients[name].request(P.STATS, {"metrics_only": True}, callback=done,
                                         timeout_ms=max(self.mon.health_interval_ms, self.mon.slow_response_ms * 2))

    def _take_http_probes(self, now_ms: int) -> None:
        """Take each gateway's last HTTP probe outcome into its view, then start the next probe
        (none while the last is in flight: at most one per gateway)."""
        for name, probe in self.http_probes.items():
            view, out = self.views[name], probe.outcome()
            if out is not None:
                view.took_http_probe(out, now_ms)
            probe.start()

    def _judging_order(self) -> list[H.NodeView]:
        """The views in the order a check judges them: the coordinator's first, as the others'
        judgement may depend on it (``_forgive_http_failures``)."""
        coordinator = self.config.coordinator_name
        return sorted(self.views.values(), key=lambda v: v.name != coordinator)

    def _forgive_http_failures(self, view: H.NodeView, now_ms: int) -> None:
        """While the coordinator is not up, a gateway's failed HTTP probes count from now: its
        requests that need metadata (produce, ``/health``) each hold a request thread for
        seconds then, under load every thread and the probe behind them, and a restart would
        cure nothing (the new process waits on the same coordinator) but drop every WebSocket
        and consumer instance. Such a gateway stays degraded, and is judged unresponsive only
        after failing ``unresponsive_after_ms`` with the coordinator back."""
        coordinator = self.views.get(self.config.coordinator_name)
        if coordinator is None or coordinator.state not in (H.HEALTHY, H.DEGRADED):
            view.forgive_http_failures(now_ms)

    def _take_samples(self, view: H.NodeView, samples: list[Sample], now_ms: int) -> None:
        counters = {(s.name, s.labels): s.value for s in samples if s.name in RATE_METRICS}
        if view.counters_at is not None:
            then_ms, before = view.counters_at
            dt_s = max(now_ms - then_ms, 1) / 1000
            # a counter that went down belongs to a restarted process: it counted from zero
            view.rates = {k: (v - before.get(k, 0.0) if v >= before.get(k, 0.0) else v) / dt_s
                          for k, v in counters.items()}
        view.counters_at = (now_ms, counters)
        view.samples = tuple(samples)

    def _poll_groups(self) -> None:
        if "__groups" in self._in_flight:
            return
        self._in_flight.add("__groups")

        def described(header: dict | None, payloads: list, err: RemoteError | None) -> None:
            self._in_flight.discard("__groups")
            if header is not None and isinstance(header.get("groups"), list):
                self.facts.apply_groups(header["groups"], self._high_watermarks())

        def listed(header: dict | None, payloads: list, err: RemoteError | None) -> None:
            groups = header.get("groups") if header is not None else None
            if not isinstance(groups, list):
                self._in_flight.discard("__groups")
                return
            names = [g["group"] for g in groups if isinstance(g, dict) and isinstance(g.get("group"), str)]
            self.coordinator.request(P.DESCRIBE_GROUPS, {"groups": names[:P.MONITORED_GROUPS_MAX]}, callback=described,
                                     timeout_ms=self.mon.health_interval_ms)
        self.coordinator.request(P.LIST_GROUPS, {}, callback=listed, timeout_ms=self.mon.health_interval_ms)

    def _high_watermarks(self) -> dict[tuple[str, int], float]:
        out: dict[tuple[str, int], float] = {}
        for v in self.views.values():
            if v.role == "broker" and v.state in (H.HEALTHY, H.DEGRADED):
                for s in v.samples:
                    if s.name == "loom_partition_high_watermark" and s.labels[1].isdigit():
                        out[(s.labels[0], int(s.labels[1]))] = s.value
        return out

    # -- the check ----------------------------------------------------------------------------
    def _resume_after_stall(self, now_ms: int, stalled_ms: int) -> None:
        """The monitor did not run for ``stalled_ms``: no node's silence of that time counts."""
        self.started_check_ms = forgiven_ms(self.started_check_ms, now_ms, stalled_ms)
        for view in self.views.values():
            view.forgive_stall(now_ms, stalled_ms)

    def _check(self) -> None:
        now, wall = self.clock.now_ms(), self.clock.wall_ms()
        self.stall_watch.tick()  # also when a check is run by hand (tests)
        for name in self.stats_clients:
            self._poll(name)
        self._poll_groups()
        self._take_http_probes(now)
        self.recovery.poll(self.views)
        for view in self._judging_order():
            self._forgive_http_failures(view, now)
            alive = pid_alive(view.pid) if view.pid and H.is_local(view.node) else None
            state, reason = H.classify(view, now, self.started_check_ms, self.config, alive)
            if state != view.state:
                view.since_ms = self._since_ms(view, state, wall)
                self._emit({"kind": "health", "node": view.name, "role": view.role, "state": state,
                            "previous": view.state, "reason": reason, "since_ms": view.since_ms})
            view.state, view.reason = state, reason
            if state in (H.DOWN, H.UNRESPONSIVE):
                view.rates = {}  # what it last reported is not what it does now
        conditions, judged = alert_conditions(self.mon, self.views.values(), self.facts, self.recovery.given_up,
                                              self.alerts.active)
        if self.alerts.evaluate(conditions, judged, wall, now) or self.health_changed:
            self.health_changed = False
            self.alerts.save(list(self.events))
        self.recovery.act(self.views, now)
        self.checks += 1
        self.checked_wall_ms = wall
        self._record_history(wall)
        self.exposition = self._build_exposition()
        self.publish(P.TOPIC_STATUS, P.PUB_STATUS, self.status())

    def _record_history(self, wall_ms: int) -> None:
        point: dict[str, float] = {}
        for v in self.views.values():
            for (name, labels), rate in v.rates.items():
                if name.startswith("loom_broker_"):
                    short = name.removeprefix("loom_broker_").removesuffix("_total") + "_per_s"
                    point[short] = point.get(short, 0.0) + rate
                    key = f"{short}{{topic={labels[0]}}}"
                    point[key] = point.get(key, 0.0) + rate
                elif name == "loom_process_cpu_seconds_total":
                    point[f"cpu_ratio{{node={v.name}}}"] = rate
            rss = v.value("loom_process_resident_memory_bytes")
            if rss is not None and v.state in (H.HEALTHY, H.DEGRADED):
                point[f"rss_bytes{{node={v.name}}}"] = rss
        counts = self.facts.partition_counts()
        for k in ("under_replicated", "offline", "partitions", "brokers_alive"):
            if k in counts:
                point[k] = counts[k]
        for g, lag in self.facts.group_lag().items():
            point[f"lag{{group={g}}}"] = lag
        self.history.append(wall_ms, point)

    def _build_exposition(self) -> Exposition:
        per_node = []
        for v in self.views.values():
            up = v.state in (H.HEALTHY, H.DEGRADED)
            own = [Sample("loom_node_up", (v.role,), 1.0 if up else 0.0),
                   Sample("loom_node_restarts_total", (), v.restarts)]
            own += [Sample("loom_node_health", (v.role, s), 1.0 if v.state == s else 0.0) for s in H.STATES]
            per_node.append((v.name, tuple(v.samples if up else ()) + tuple(own)))
        per_node.append((self.name, tuple(self.metrics.snapshot())
                         + (Sample("loom_node_restarts_total", (), self.recovery.restarts(self.name)),)))
        firing: dict[str, int] = {}
        for a in self.alerts.firing():
            firing[a.rule] = firing.get(a.rule, 0) + 1
        cluster = self.facts.samples() + [Sample("loom_alerts_firing", (r,), n) for r, n in sorted(firing.items())]
        return Exposition(tuple(per_node), tuple(cluster))

    # -- events -------------------------------------------------------------------------------
    def _emit(self, event: dict) -> dict:
        """Record and publish one event; returns it with its ``seq`` and ``ts_ms``."""
        self.event_seq += 1
        # ``type`` (and ``name`` for alerts) as the gateway's event hub (webui/events.py) keys them
        event = dict(event, seq=self.event_seq, ts_ms=self.clock.wall_ms(), type=EVENT_TYPES[event["kind"]])
        if event["kind"] == "alert":
            event["name"] = f"{event['rule']}/{event['subject']}"
        self.events.append(event)
        self.publish(P.TOPIC_EVENT, P.PUB_EVENT, event)
        if event["kind"] == "recovery":
            log.warning("recovery: %s", event)
            self.alerts.save(list(self.events))
        elif event["kind"] == "health":  # saved once the check that judged it ends
            self.health_changed = True
        return event

    def _since_ms(self, view: H.NodeView, state: str, wall_ms: int) -> int:
        """When ``view`` became ``state``: now, except at this monitor's first verdict on it when
        its last saved health change (a predecessor's) said the same."""
        saved = self.saved_health.pop(view.name, None)
        if view.state == H.UNKNOWN and saved is not None and saved[0] == state and isinstance(saved[1], int):
            return saved[1]
        return wall_ms

    def _on_alert_change(self, alert: Alert) -> None:
        event = self._emit({"kind": "alert", **alert.to_dict()})
        (log.warning if alert.state == FIRING else log.info)("alert %s %s: %s", alert.rule, alert.state, alert.message)
        for w in self.webhooks:
            w.submit({"source": "loom", "cluster": self.config.cluster.name, "event": event})

    # -- requests -----------------------------------------------------------------------------
    def status(self) -> dict:
        now = self.clock.now_ms()
        counts = self.facts.partition_counts()
        coord = self.views[self.config.coordinator_name]
        brokers = [v for v in self.views.values() if v.role == "broker"]
        up = lambda v: v.state in (H.HEALTHY, H.DEGRADED)  # noqa: E731
        nodes = [{"node": v.name, "role": v.role, "host": v.node.host, "port": v.node.port, "state": v.state,
                  "reason": v.reason, "pid": v.pid, "since_ms": v.since_ms, "restarts": v.restarts,
                  "silent_ms": now - v.last_heard_ms if v.last_heard_ms is not None else None,
                  "supervised": self.recovery.supervises(v.name), "http_probe": self._http_probe_status(v, now)}
                 for v in self.views.values()]
        nodes.append({"node": self.name, "role": self.role, "host": self.node_config.host, "port": self.node_config.port,
                      "state": H.HEALTHY, "reason": "", "pid": os.getpid(), "since_ms": self.started_wall_ms,
                      "restarts": self.recovery.restarts(self.name), "silent_ms": 0,
                      "supervised": self.recovery.supervises(self.name), "http_probe": None})
        if not up(coord) or counts.get("offline") or not any(up(b) for b in brokers):
            cluster_state = H.DOWN if not up(coord) or not any(up(b) for b in brokers) else H.DEGRADED
        elif counts.get("under_replicated") or any(v.state != H.HEALTHY for v in self.views.values()):
            cluster_state = H.DEGRADED
        else:
            cluster_state = H.HEALTHY
        rates = {k: 0.0 for k in ("records_in_per_s", "bytes_in_per_s", "records_out_per_s", "bytes_out_per_s")}
        for v in brokers:
            for (name, _), rate in v.rates.items():
                short = name.removeprefix("loom_broker_").removesuffix("_total") + "_per_s"
                if short in rates:
                    rates[short] += rate
        return {"cluster": {"name": self.config.cluster.name, "state": cluster_state, "coordinator_up": up(coord),
                            "brokers_up": sum(up(b) for b in brokers), **counts},
                "nodes": nodes, "rates": rates, "alerts_firing": len(self.alerts.firing()),
                "supervisor": self.recovery.available, "checks": self.checks, "checked_ms": self.checked_wall_ms,
                "health_interval_ms": self.mon.health_interval_ms}

    @staticmethod
    def _http_probe_status(v: H.NodeView, now_ms: int) -> dict | None:
        """A gateway's last HTTP liveness probe, for ``status()`` (None: not probed)."""
        p = v.http_probe
        if p is None:
            return None
        failing_ms = now_ms - v.http_failing_since_ms if v.http_failing_since_ms is not None else None
        return {"answered": p.answered, "status": p.status, "rtt_ms": p.rtt_ms, "detail": p.detail,
                "failing_ms": failing_ms}

    def _on_status(self, req: wire.Request) -> dict:
        return self.status()

    def _on_history(self, req: wire.Request) -> dict:
        prefixes = req.header.get("series")
        if prefixes is not None and not (isinstance(prefixes, list) and all(isinstance(p, str) for p in prefixes)):
            raise RemoteError(P.MALFORMED_REQUEST, "series must be a list of series-name prefixes")
        since = req.get("since_ms", int, 0)
        return {"interval_ms": self.mon.health_interval_ms, **self.history.query(prefixes, since)}

    def _on_alerts(self, req: wire.Request) -> dict:
        # "cluster": a client found through a config checks it, as for MONITOR_STATUS
        return {"alerts": self.alerts.listing(bool(req.header.get("all", True))), "cluster": self.config.cluster.name}

    def _on_events(self, req: wire.Request) -> dict:
        since = req.get("since_seq", int, 0)
        limit = min(max(req.get("limit", int, EVENTS_REPLY_MAX), 1), EVENTS_REPLY_MAX)
        events = [e for e in self.events if e["seq"] > since][-limit:]
        return {"events": events, "seq": self.event_seq, "cluster": self.config.cluster.name}

    def _on_metrics(self, req: wire.Request) -> tuple[dict, list]:
        return {"content_type": CONTENT_TYPE}, [render_text(self.exposition)]

    def stats(self) -> dict[str, Any]:
        return {"checks": self.checks, "stalls": self.stall_watch.stalls, "nodes": {v.name: v.state for v in self.views.values()},
                "alerts_firing": len(self.alerts.firing()), "history_series": len(self.history.series),
                "webhooks": [{"url": w.config.url, "delivered": w.delivered, "failed": w.failed, "dropped": w.dropped}
                             for w in self.webhooks]}

    def close(self) -> None:
        self.http.shutdown()  # type: ignore[attr-defined]
        self.http.server_close()  # type: ignore[attr-defined]  # shutdown() leaves the port bound
        for w in self.webhooks:
            w.close()
        for p in self.http_probes.values():  # all told first, then one deadline for all
            p.close(join=False)
        deadline_s = time.monotonic() + STOP_JOIN_TIMEOUT_S
        for p in self.http_probes.values():
            p.join(deadline_s - time.monotonic())
        for c in self.stats_clients.values():
            c.close()
        self.recovery.close()
        self.reactor.remove_socket(self.sub)
        self.sub.close(0)
        super().close()
