"""The alert rules of ``monitor.alerts``: which conditions hold now, for the rules that can be
judged now. Pure functions; the state machine is nodes/monitor/alerts.py.

Rules and subjects: node_down, node_unresponsive, disk_usage (percent used), crash_loop (the
supervisor gave up) -- per node; under_replicated, offline_partitions -- "cluster";
consumer_lag (records) -- per group; gateway_5xx (responses per second) -- per gateway node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fabric.config import AlertsConfig, MonitorConfig
from nodes.monitor import health as H
from nodes.monitor.alerts import Alert
from nodes.monitor.cluster import ClusterFacts

NODE_RULES = ("node_down", "node_unresponsive")
RULES = ("node_down", "node_unresponsive", "under_replicated", "offline_partitions", "consumer_lag", "disk_usage",
         "crash_loop", "gateway_5xx")
Conditions = dict[tuple[str, str], tuple[str, float | None]]


def rule_for_ms(alerts: AlertsConfig, rule: str) -> int:
    return getattr(alerts, rule).for_ms


def lag_threshold(mon: MonitorConfig) -> float:
    t = mon.alerts.consumer_lag.threshold
    return t if t is not None else mon.consumer_lag_alert


def alert_conditions(mon: MonitorConfig, views: Iterable[H.NodeView], facts: ClusterFacts,
                     given_up: Mapping[str, str] | None, active: Mapping[tuple[str, str], Alert]) -> tuple[Conditions, set[str]]:
    """(conditions, judged rules). ``given_up``: node -> why, from the supervisor (None when
    no supervisor answers); ``active``: the alerts now pending or firing."""
    rules = mon.alerts
    cond: Conditions = {}
    judged = {"node_down", "node_unresponsive", "disk_usage", "gateway_5xx"}
    disk_pct = H.disk_threshold_percent(mon)
    for v in views:
        if v.state == H.UNKNOWN:  # a restarted monitor has not heard yet: keep what it had
            for rule in NODE_RULES:
                if (rule, v.name) in active:
                    a = active[(rule, v.name)]
                    cond[(rule, v.name)] = (a.message, a.value)
            continue
        if v.state == H.DOWN:
            cond[("node_down", v.name)] = (f"{v.name} ({v.role}) is down: {v.reason}", None)
        elif v.state == H.UNRESPONSIVE:
            cond[("node_unresponsive", v.name)] = (f"{v.name} ({v.role}) is unresponsive: {v.reason}", None)
        used = v.value("loom_broker_disk_used_ratio")
        if used is not None and used * 100 > disk_pct:
            cond[("disk_usage", v.name)] = (f"{v.name}: disk {used * 100:.1f}% used (threshold {disk_pct:g}%)", used * 100)
        errors = sum(r for (name, labels), r in v.rates.items()
                     if name == "loom_gateway_http_requests_total" and labels[1].startswith("5"))
        if errors > (rules.gateway_5xx.threshold or 0):
            cond[("gateway_5xx", v.name)] = (f"{v.name}: {errors:.1f} 5xx responses/s", errors)
    counts = facts.partition_counts()
    if counts:
        judged |= {"under_replicated", "offline_partitions"}
        if counts["under_replicated"]:
            cond[("under_replicated", "cluster")] = (f"{counts['under_replicated']} under-replicated partitions",
                                                     counts["under_replicated"])
        if counts["offline"]:
            cond[("offline_partitions", "cluster")] = (f"{counts['offline']} offline partitions", counts["offline"])
    if facts.lag_known:
        judged.add("consumer_lag")
        limit = lag_threshold(mon)
        for group, lag in facts.group_lag().items():
            if lag > limit:
                cond[("consumer_lag", group)] = (f"group {group}: lag {lag} records (threshold {limit:g})", lag)
    if given_up is not None:
        judged.add("crash_loop")
        for node, why in given_up.items():
            cond[("crash_loop", node)] = (f"{node}: the supervisor gave up restarting it: {why}", None)
    enabled = {r for r in RULES if getattr(rules, r).enabled}
    return {k: v for k, v in cond.items() if k[0] in enabled}, judged
