"""``loom alerts`` and the monitor's view for ``loom status``.

Both ask the monitor node (MONITOR_STATUS / MONITOR_ALERTS / MONITOR_EVENTS); ``loom status``
falls back to asking every node directly when no monitor answers.
"""

from __future__ import annotations

import json
import sys
import time

import click
from rich.console import Console
from rich.table import Table

from fabric.config import LoomConfig
from fabric.errors import CodedError, FabricError
from nodes.cli_common import BOOTSTRAP_NOT_ENOUGH_HELP, config_for, target_options

MONITOR_STATUS_TIMEOUT_MS = 1000
NOT_UP = ("down", "unresponsive")
NOT_KNOWN = "unknown"  # a node the monitor has had no sign of life from since its start


def _monitor_client(cfg: LoomConfig, timeout_ms: int = MONITOR_STATUS_TIMEOUT_MS):  # noqa: ANN202
    from fabric.client.monitor import MonitorClient
    monitors = cfg.nodes_with_role("monitor")
    if not monitors:
        return None
    # a port that refuses the connection is a monitor down: said at once, as the other
    # commands say the nodes are down, not after the timeout
    return MonitorClient(next(iter(monitors.values())).endpoint, timeout_ms=timeout_ms, fail_on_refused=True)


def _when(wall_ms: int | None) -> str:
    if not wall_ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(wall_ms / 1000)) + "Z"


def print_monitor_status(cfg: LoomConfig, out: Console) -> int | None:
    """Print the monitor's view; None when no monitor answers or it has not heard from every
    node yet (right after ``loom up`` its nodes are ``unknown`` and its cluster "down": each
    node is then asked directly), else how many nodes are down or unresponsive."""
    client = _monitor_client(cfg)
    if client is None:
        return None
    try:
        st = client.status()
    except CodedError:
        return None
    finally:
        client.close()
    from fabric.client.bootstrap import check_cluster
    check_cluster(st["cluster"].get("name", ""), cfg.cluster.name, "the monitor")
    if any(n["state"] == NOT_KNOWN for n in st["nodes"]):
        return None
    table = Table(box=None, pad_edge=False)
    for col in ("NODE", "ROLE", "ENDPOINT", "STATE", "PID", "RESTARTS", "REASON"):
        table.add_column(col)
    bad = 0
    for n in st["nodes"]:
        bad += n["state"] in NOT_UP
        table.add_row(n["node"], n["role"], f"{n['host']}:{n['port']}", n["state"], str(n["pid"] or "-"),
                      str(n["restarts"]), n["reason"] or "")
    out.print(table)
    c = st["cluster"]
    # the internal topics' partitions (__consumer_offsets) counted apart, as the topics are
    internal, i_under, i_offline = (c.get(k, 0) for k in ("internal_partitions", "internal_under_replicated",
                                                           "internal_offline"))
    besides = f" ({internal} internal partitions besides" + (f": {i_under} under-replicated" if i_under else "") + \
        (f", {i_offline} offline" if i_offline else "") + ")" if internal else ""
    parts = (f"topics: {c['topics']}, partitions: {c['partitions'] - internal}, under-replicated: "
             f"{c['under_replicated'] - i_under}, offline: {c['offline'] - i_offline}" + besides) \
        if "partitions" in c else "partitions: unknown (no metadata yet)"
    out.print(f"cluster: {c['state']} (coordinator {'up' if c['coordinator_up'] else 'down'}, "
              f"brokers up: {c['brokers_up']}); {parts}")
    r = st["rates"]
    out.print(f"records/s in: {r['records_in_per_s']:.0f}, out: {r['records_out_per_s']:.0f}; "
              f"alerts firing: {st['alerts_firing']}  (view of the monitor; `loom alerts` lists them)")
    return bad


@click.command()
@target_options(bootstrap_help=BOOTSTRAP_NOT_ENOUGH_HELP)
@click.option("--all", "show_all", is_flag=True, help="resolved alerts too")
@click.option("--events", "show_events", is_flag=True, help="the event log (alerts, health changes, recovery actions)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def alerts(config: str | None, bootstrap: str | None, show_all: bool, show_events: bool, as_json: bool) -> None:
    """Firing and pending alerts (with --all resolved ones too), or the event log (--events)."""
    cfg = config_for(config, bootstrap, "loom alerts", "the monitor's address is in the config")
    client = _monitor_client(cfg, timeout_ms=3000)
    if client is None:
        raise FabricError(f"{cfg.source}: no node with role monitor in the config")
    try:
        reply = client.events() if show_events else client.alerts_reply(show_all)
    except CodedError as e:
        raise FabricError(f"the monitor does not answer: {e}") from e
    finally:
        client.close()
    from fabric.client.bootstrap import check_cluster
    check_cluster(reply.get("cluster", ""), cfg.cluster.name, "the monitor")
    rows = reply["events"] if show_events else reply["alerts"]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, sort_keys=True))
        return
    out = Console(file=sys.stdout, highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)
    table = Table(box=None, pad_edge=False)
    if show_events:
        for col in ("SEQ", "TIME", "KIND", "NODE", "WHAT", "REASON"):
            table.add_column(col)
        for e in rows:
            what = e.get("action") or e.get("state") or ""
            subject = e.get("node") or e.get("subject") or ""
            reason = e.get("reason") or e.get("message") or ""
            table.add_row(str(e["seq"]), _when(e.get("ts_ms")), e["kind"], subject, f"{e.get('rule', '')} {what}".strip(), reason)
    else:
        for col in ("RULE", "SUBJECT", "STATE", "SINCE", "FIRED", "RESOLVED", "MESSAGE"):
            table.add_column(col)
        for a in rows:
            table.add_row(a["rule"], a["subject"], a["state"], _when(a["started_ms"]), _when(a["fired_ms"]),
                          _when(a["resolved_ms"]), a["message"])
    out.print(table)
    if not rows:
        out.print("no events" if show_events else "no alerts")


COMMANDS = [alerts]
