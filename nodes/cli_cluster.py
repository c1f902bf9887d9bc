"""``loom up``, ``loom down``, ``loom restart``, ``loom status``: start, stop, restart a node of
and inspect a cluster.

``up`` runs the supervisor (nodes/launcher.py) in the foreground: it prints a summary once
every node answers PING and keeps the nodes running until Ctrl-C or ``loom down``.
"""

from __future__ import annotations

import logging
import sys
from concurrent.futures import ThreadPoolExecutor

import click
from rich.console import Console
from rich.table import Table

from fabric import protocol as P
from fabric.apikeys import ensure_admin_key
from fabric.config import ConfigError, LoomConfig, NodeConfig, load_config
from fabric.client.bootstrap import check_cluster, fetch_metadata, parse_bootstrap
from fabric.errors import FabricError
from fabric.metadata import ClusterMetadata
from fabric.zmq_context import context as zmq_context
from nodes import launcher, running_cluster
from nodes.cli_common import BOOTSTRAP_NOT_ENOUGH_HELP, bootstrap_alone, config_for, target_options

log = logging.getLogger(__name__)

PING_THREADS_MAX = 16
LEADS_SHOWN_MAX = 6
PIPE_WIDTH_CHARS = 200
METADATA_TIMEOUT_MS = 2000


class _StdoutConsole(Console):
    """rich ends the process (SystemExit) when stdout's reader has gone; a supervisor must
    live on, so the broken pipe is raised to the caller instead."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError("stdout is closed")


def _stdout() -> Console:
    # Piped output keeps whole rows (scripts and tests read it); a terminal wraps to its width.
    width = None if sys.stdout.isatty() else PIPE_WIDTH_CHARS
    return _StdoutConsole(file=sys.stdout, highlight=False, soft_wrap=False, width=width)


def _stderr_progress() -> Console | None:
    """A console for progress on stderr, only when stderr is a terminal."""
    return Console(file=sys.stderr) if sys.stderr.isatty() else None


def format_uptime(ms: int | None) -> str:
    if ms is None:
        return "-"
    s = ms // 1000
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


# -- up -------------------------------------------------------------------------------------
@click.command()
@target_options(bootstrap_help="refused: loom up starts the nodes of a config (-c CONFIG)")
@click.option("--node", "node_name", default=None, help="run only this node, in the foreground")
def up(config: str | None, bootstrap: str | None, node_name: str | None) -> None:
    """Start every node of the config, supervised (or one node with --node)."""
    if bootstrap:  # the option every command has; endpoints name no nodes to start
        raise click.BadOptionUsage("bootstrap", "loom up starts the nodes of a config (-c CONFIG): "
                                                "--bootstrap endpoints name none to start")
    cfg = load_config(config)
    if node_name is not None:
        _run_one(cfg, node_name)
        return
    sup = launcher.Supervisor(cfg, cfg.source)
    admin_key = _dev_admin_key(cfg)
    progress = _stderr_progress()
    try:
        if progress is not None:
            with progress.status(f"starting {len(sup.children)} nodes of {cfg.cluster.name}..."):
                sup.start_all()
        else:
            sup.start_all()
    except KeyboardInterrupt:
        sup.stop_all()
        raise
    try:
        print_summary(cfg, sup, admin_key)
    except OSError:  # `loom up | head`: the reader left; the nodes still need their supervisor
        launcher.silence_stream(sys.stdout)
    sup.run()
    try:
        click.echo("loom: every node stopped", err=True)
    except OSError:
        launcher.silence_stream(sys.stderr)


def _run_one(cfg: LoomConfig, name: str) -> None:
    node = cfg.node(name)
    if not launcher.role_available(node.role):
        raise FabricError(f"{name}: role {node.role} is {launcher.NOT_AVAILABLE}")
    from nodes.run import main as run_node
    sys.exit(run_node(["-c", cfg.source, "--node", name]))


def _dev_admin_key(cfg: LoomConfig) -> tuple[str, str] | None:
    """(key, source) of the gateway's dev admin key, made on first start; None without a gateway."""
    if not cfg.nodes_with_role("gateway"):
        return None
    try:
        return ensure_admin_key(cfg.cluster.data_dir)
    except (OSError, ValueError) as e:
        raise FabricError(f"dev admin key: {e}") from e


def print_summary(cfg: LoomConfig, sup: launcher.Supervisor, admin_key: tuple[str, str] | None = None) -> None:
    table = Table(title=f"Loom cluster {cfg.cluster.name!r}", title_justify="left", box=None, pad_edge=False)
    for col in ("NODE", "ROLE", "PORT", "PID", "STATE"):
        table.add_column(col)
    for name, node in cfg.nodes.items():
        child = sup.children.get(name)
        if child is None:
            table.add_row(name, node.role, str(node.port), "-", launcher.NOT_AVAILABLE)
        else:
            table.add_row(name, node.role, str(node.port), str(child.pid or "-"), "up" if child.healthy else "starting")
    out = _stdout()
    out.print(table)
    out.print(f"{len(sup.children)} nodes running"
              + (f", {len(sup.unavailable)} {launcher.NOT_AVAILABLE}" if sup.unavailable else ""))
    gateways = cfg.nodes_with_role("gateway")
    for name, node in gateways.items():
        note = "" if name in sup.children else "  (not yet running: no gateway in this build)"
        out.print(f"gateway:   http://{node.host}:{node.port}/  (REST, WebSocket; API docs at /docs){note}")
        out.print(f"dashboard: http://{node.host}:{node.dashboard_port or node.port}/{note}")
    if admin_key is not None:
        out.print(f"API key:   {admin_key[0]}  (admin; from {admin_key[1]})")
    for name, node in cfg.nodes_with_role("monitor").items():
        if name in sup.children:
            out.print(f"metrics:   http://{node.host}:{node.http_metrics_port}/metrics  (`loom alerts` for alerts)")
    out.print(f"logs:      {running_cluster.log_path(cfg, 'NODE').parent}/NODE.log")
    out.print(f"stop:      Ctrl-C, or `loom down -c {cfg.source}`")
    sys.stdout.flush()


# -- down -----------------------------------------------------------------------------------
@click.command()
@target_options(bootstrap_help=BOOTSTRAP_NOT_ENOUGH_HELP)
@click.option("--timeout-s", default=30.0, show_default=True, help="grace before killing")
def down(config: str | None, bootstrap: str | None, timeout_s: float) -> None:
    """Stop the cluster that `loom up` started from this config."""
    cfg = config_for(config, bootstrap, "loom down", "the supervisor's pid file is in the config's data dir")
    if not running_cluster.stop_cluster(cfg, timeout_s, emit=lambda line: click.echo(line, err=True)):
        raise FabricError(f"no running cluster found (no live supervisor in {running_cluster.pid_file_path(cfg)})")
    click.echo("stopped")


# -- restart --------------------------------------------------------------------------------
@click.command()
@target_options(bootstrap_help=BOOTSTRAP_NOT_ENOUGH_HELP)
@click.argument("node")
def restart(config: str | None, bootstrap: str | None, node: str) -> None:
    """Start NODE again: one the supervisor gave up on (it kept crashing) or left stopped (a
    config error) starts now, its crash count set back; a running one is killed and started
    again. Fix what made it crash first (its log: <data_dir>/logs/NODE.log)."""
    cfg = config_for(config, bootstrap, "loom restart", "the supervisor's control socket is in the config's data dir")
    done, pid = running_cluster.restart_node(cfg, node)
    click.echo(f"{done} {node}: pid {pid}")


# -- status ---------------------------------------------------------------------------------
def _metadata(endpoints: list[str]) -> ClusterMetadata | None:
    if not endpoints:
        return None
    try:
        md, _ = fetch_metadata(zmq_context(), endpoints, METADATA_TIMEOUT_MS)
        return md
    except FabricError as e:  # `loom status` shows the nodes without cluster metadata
        log.debug("no cluster metadata: %s", e)
        return None


def _leads(md: ClusterMetadata | None, broker_id: int | None) -> str:
    if md is None or broker_id is None:
        return "-"
    led = [f"{p.topic}-{p.partition}" for p in md.partitions() if p.leader == broker_id and not p.topic.startswith(P.INTERNAL_TOPIC_PREFIX)]
    shown = " ".join(led[:LEADS_SHOWN_MAX]) + (f" +{len(led) - LEADS_SHOWN_MAX} more" if len(led) > LEADS_SHOWN_MAX else "")
    return f"{len(led)}" + (f" ({shown})" if led else "")


def _status_nodes(config: str | None, bootstrap: str | None) -> tuple[dict[str, NodeConfig], ClusterMetadata | None,
                                                                      str | None]:
    """The nodes to show: the config's; with only --bootstrap (or no config to read), the
    brokers in the metadata. Also the cluster name the config gives (None without a config)."""
    if not bootstrap_alone(config, bootstrap):
        try:
            cfg = load_config(config)
            return cfg.nodes, None, cfg.cluster.name
        except ConfigError:
            if not bootstrap:
                raise
    md = _metadata(parse_bootstrap(bootstrap))
    brokers = md.brokers.values() if md else ()
    return {f"broker-{b.broker_id}": NodeConfig(role="broker", host=b.host, port=b.port, broker_id=b.broker_id)
            for b in brokers}, md, None


@click.command()
@target_options
def status(config: str | None, bootstrap: str | None) -> None:
    """Health of every node, the partitions each broker leads, and the partition summary.
    Exits 1 when a node that should run is down. When the monitor answers, and has heard from
    every node since its start, its view is shown (the monitor is found through the config:
    with --bootstrap alone, the endpoints' brokers)."""
    alone = bootstrap_alone(config, bootstrap)
    if not alone and _monitor_view(config):
        return
    nodes, md, cluster = _status_nodes(config, bootstrap)
    available = {n: c for n, c in nodes.items() if launcher.role_available(c.role)}
    with ThreadPoolExecutor(max_workers=min(PING_THREADS_MAX, max(1, len(available)))) as pool:
        replies = dict(zip(available, pool.map(running_cluster.ping, available.values())))
    if md is None:  # ask only nodes that answered PING: a down node would cost a timeout each
        live = [c.endpoint for n, c in sorted(available.items(), key=lambda i: i[1].role != "coordinator")
                if replies[n] and c.role in ("coordinator", "broker")]
        md = _metadata(parse_bootstrap(bootstrap) if bootstrap else live)
    if md is not None:
        check_cluster(md.cluster, cluster, "the node answering metadata")
    table = Table(box=None, pad_edge=False)
    for col in ("NODE", "ROLE", "ENDPOINT", "STATE", "PID", "UPTIME", "LEADS", "ENGINE"):
        table.add_column(col)
    down_count = 0
    running = {} if alone else _supervised_running(config)
    for name, node in nodes.items():
        if name not in available:
            table.add_row(name, node.role, f"{node.host}:{node.port}", launcher.NOT_AVAILABLE, "-", "-", "-", "")
            continue
        r = replies[name]
        down_count += r is None
        leads = _leads(md, node.broker_id) if node.role == "broker" else ""
        engine = (r.get("engine") or "-" if r else "-") if node.role == "broker" else ""  # a swap shows here
        # silent, but the process the supervisor runs for it exists (SIGSTOP, a deadlock): not down
        state = "up" if r else "unresponsive" if name in running else "down"
        pid = str(r["pid"]) if r else str(running.get(name, "-"))
        table.add_row(name, node.role, f"{node.host}:{node.port}", state, pid,
                      format_uptime(r.get("uptime_ms")) if r else "-", leads, engine)
    out = _stdout()
    out.print(table)
    _print_broker_warnings(out, {n: r for n, r in replies.items() if r and nodes[n].role == "broker"})
    if md is None:
        out.print("partitions: unknown (no metadata: is the coordinator up?)")
    else:
        parts = [p for p in md.partitions() if not p.topic.startswith(P.INTERNAL_TOPIC_PREFIX)]
        out.print(f"topics: {sum(1 for t in md.topics if not t.startswith(P.INTERNAL_TOPIC_PREFIX))}, partitions: {len(parts)}, "
                  f"under-replicated: {sum(p.under_replicated for p in parts)}, "
                  f"offline: {sum(p.offline for p in parts)}")
    if not alone:
        _print_supervisor(out, config)
    sys.stdout.flush()
    if down_count:
        sys.exit(1)


def _supervised_running(config: str | None) -> dict[str, int]:
    """The nodes whose process, as the supervisor's pid file names it, runs: name -> pid
    (none without a config or a supervisor)."""
    try:
        cfg = load_config(config)
    except ConfigError:
        return {}
    children = (running_cluster.read_pid_file(cfg) or {}).get("children") or {}
    return {n: p for n, p in children.items() if isinstance(p, int) and launcher.pid_alive(p)}


def _print_broker_warnings(out: Console, replies: dict[str, dict]) -> None:
    """What a broker keeps but does not serve: refused metadata, stray partition directories."""
    for name, r in replies.items():
        if r.get("metadata_refused"):
            out.print(f"{name}: {r['metadata_refused']}")
        if r.get("strays"):
            out.print(f"{name}: {r['strays']} partition directories set aside as *.stray (kept; STATS lists them)")


def _print_broker_notes(out: Console, nodes: dict[str, NodeConfig]) -> None:
    """Beside the monitor's view, what only a broker itself tells (PING): its engine, refused
    metadata, stray partition directories."""
    brokers = {n: c for n, c in nodes.items() if c.role == "broker" and launcher.role_available(c.role)}
    if not brokers:
        return
    with ThreadPoolExecutor(max_workers=min(PING_THREADS_MAX, len(brokers))) as pool:
        replies = {n: r for n, r in zip(brokers, pool.map(running_cluster.ping, brokers.values())) if r}
    coordinators = [c.endpoint for c in nodes.values() if c.role == "coordinator"]
    md = _metadata(coordinators + [brokers[n].endpoint for n in replies]) if replies else None
    if md is not None:
        out.print("leads: " + ", ".join(f"{n} {_leads(md, c.broker_id)}" for n, c in brokers.items()))
    if replies:
        out.print("engines: " + ", ".join(f"{n} {r.get('engine') or '-'}" for n, r in replies.items()))
    _print_broker_warnings(out, replies)


def _monitor_view(config: str | None) -> bool:
    """Print the monitor's view of the cluster; False when there is no monitor to ask."""
    from nodes.cli_monitor import print_monitor_status
    try:
        cfg = load_config(config)
    except ConfigError:
        return False
    out = _stdout()
    bad = print_monitor_status(cfg, out)
    if bad is None:
        return False
    _print_broker_notes(out, cfg.nodes)
    _print_supervisor(out, config)
    sys.stdout.flush()
    if bad:
        sys.exit(1)
    return True


def _print_supervisor(out: Console, config: str | None) -> None:
    try:
        cfg = load_config(config)
    except ConfigError:
        return
    info = running_cluster.read_pid_file(cfg)
    pid = info.get("pid") if info else None
    if isinstance(pid, int) and launcher.pid_alive(pid):
        out.print(f"supervisor: pid {pid} ({running_cluster.pid_file_path(cfg)})")
    else:
        out.print("supervisor: not running")


COMMANDS = [up, down, restart, status]
