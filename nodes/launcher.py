"""The supervisor behind ``loom up``: one child process per node, restarted with backoff.

Every node of the config runs as ``python -m nodes.run -c CONFIG --node NAME`` with its output
in ``<data_dir>/logs/NAME.log``. Roles whose implementation module is not part of this build
are listed but never started. The supervisor writes ``<data_dir>/loom.pid`` (JSON: its own pid
and its children's) so that ``loom down`` can find it (nodes/running_cluster.py, which owns
these files); SIGTERM or SIGINT stop every child by pid (SIGTERM, then SIGKILL after
``STOP_TIMEOUT_S``). SIGHUP (the terminal closed) does the same, and a closed stdout or stderr
(``loom up | head``, a vanished terminal) never kills the supervisor: its output goes to
/dev/null from then on, and the nodes keep being supervised.

Children run in their own session, so Ctrl-C reaches only the supervisor, which then stops
them in order (the coordinator last, so brokers do not see it vanish first).

One supervisor per data dir: ``<data_dir>/loom.lock`` is held (``flock``) for the supervisor's
life, so two ``loom up`` started together cannot both pass the pid-file check; the kernel
drops the lock when the supervisor dies, even by SIGKILL. The lock and the pid file are
``SupervisorLock`` (``nodes.launcher_lock``), mixed in. A child that exits with
``EXIT_CONFIG_ERROR`` (its config no longer loads, or its host is not this machine) is not
restarted: the supervisor says why and keeps the others running.

The monitor restarts nodes that hang through the supervisor; the supervisor watches the monitor
(nodes/monitor_watch.py): one that does not answer PING for as long as the monitor would call
any node unresponsive is SIGKILLed and restarted like a node that crashed (with the backoff),
unless ``supervisor.restart`` is off.

Thread-safety: a ``Supervisor`` belongs to the thread that calls ``run``; its signal handlers
only set a flag.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import zmq

from fabric import protocol as P
from fabric.clock import Clock
from fabric.config import LoomConfig, NodeConfig
from fabric.errors import FabricError, RemoteError
from fabric.roles import ROLES
from fabric.zmq_context import context as zmq_context
from nodes.control import ControlServer, EventLog, control_path
# LOCK_FILE_NAME lives in launcher_lock; importable from here as before
from nodes.launcher_lock import LOCK_FILE_NAME, SupervisorLock
from nodes.monitor_watch import MonitorWatch
# pid_alive and is_loom_process: importable from here as before (the CLI and tests use them)
from nodes.processes import SUPERVISED_ENV, is_loom_process, kill_group, pid_alive, terminate_and_wait
from nodes.run import EXIT_CONFIG_ERROR
from nodes.running_cluster import LOG_DIR_NAME, STOP_TIMEOUT_S, ask, log_path, ping

# this module's public names, and those the CLI and tests read of it that live elsewhere now
__all__ = ["EXIT_CONFIG_ERROR", "LOCK_FILE_NAME", "LOG_TAIL_LINES_MAX", "LOOP_INTERVAL_MS", "NOT_AVAILABLE", "ROOT",
           "STABLE_RUN_MS", "STOP_SIGNALS", "Child", "Supervisor", "end_group", "is_loom_process", "log_tail",
           "pid_alive", "role_available", "silence_stream"]

ROOT = Path(__file__).resolve().parent.parent
LOOP_INTERVAL_MS = 200           # how often the supervisor looks at its children
STABLE_RUN_MS = 10_000          # a child that ran this long resets its backoff
LOG_TAIL_LINES_MAX = 5
NOT_AVAILABLE = "not available in this build"
# Each stops every node as Ctrl-C does; SIGHUP's default (exit) would orphan them all.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def silence_stream(stream: "object") -> None:
    """Point a stream whose reader is gone (EPIPE, EIO) at /dev/null, so that later writes --
    and the flush at interpreter exit -- succeed instead of raising."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())  # type: ignore[attr-defined]
    finally:
        os.close(devnull)


def _emit_to_stderr(line: str) -> None:
    """The supervisor's progress line; a closed stderr must not stop the supervision."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        silence_stream(sys.stderr)


def role_available(role: str) -> bool:
    """Is the implementation of ``role`` importable in this build? (No import happens.)"""
    spec = ROLES.get(role)
    if spec is None:
        return False
    try:
        return importlib.util.find_spec(spec.module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


@dataclass
class Child:
    """One supervised node: its process, crash count and restart schedule."""

    name: str
    node: NodeConfig
    proc: subprocess.Popen | None = None
    started_ms: int = 0
    restarts: int = 0
    backoff_ms: int = 0
    restart_at_ms: int | None = None
    last_exit: int | None = None
    healthy: bool = False
    exits_ms: deque[int] = field(default_factory=deque)  # recent exits, for the crash-loop limit
    given_up: str | None = None  # why the supervisor stopped restarting it
    # the process group the node's process leads (started in a session of its own): it and what
    # it forked, e.g. the gateway's gunicorn worker; None when no group of ours may be left
    group: int | None = None
    killed_for: str | None = None  # why the supervisor killed this process (a hung monitor)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class Supervisor(SupervisorLock):
    """Starts every available node of ``config``, restarts crashed ones with exponential
    backoff, stops them all on SIGTERM/SIGINT. ``emit`` receives progress lines."""

    def __init__(self, config: LoomConfig, config_path: str, emit: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.config_path = str(Path(config_path).resolve())
        self.emit = emit or _emit_to_stderr
        self.data_dir = Path(config.cluster.data_dir)
        self.children: dict[str, Child] = {}
        self.unavailable: dict[str, NodeConfig] = {}
        for name, node in config.nodes.items():
            if role_available(node.role):
                self.children[name] = Child(name, node)
            else:
                self.unavailable[name] = node
        self._stopping = False
        self._lock_fd: int | None = None
        self.events = EventLog()
        self.control: ControlServer | None = None
        self.watches: dict[str, MonitorWatch] = {}

    # -- start ------------------------------------------------------------------------------
    def start_all(self) -> None:
        """Start the coordinator, wait for it, then every other node; wait until all answer
        PING and the coordinator has heard every broker (a topic made before that is led by
        the brokers it heard, and moved to its preferred leaders later). Raises FabricError
        (after stopping what it started) when a node does not come up within
        supervisor.startup_timeout_ms; a broker not heard by then is only reported."""
        self.check_not_running()
        (self.data_dir / LOG_DIR_NAME).mkdir(parents=True, exist_ok=True)
        self.install_signal_handlers()
        self._open_control()
        first = [n for n, c in self.children.items() if c.node.role == "coordinator"]
        rest = [n for n in self.children if n not in first]
        deadline_ms = _now_ms() + self.config.supervisor.startup_timeout_ms
        for group in (first, rest):
            for name in group:
                self._spawn(self.children[name])
            self._write_pid_file()
            self._wait_healthy(group, deadline_ms)
        self._wait_brokers_heard(first, deadline_ms)

    def _spawn(self, child: Child) -> None:
        path = log_path(self.config, child.name)
        path.parent.mkdir(parents=True, exist_ok=True)  # `make clean` may have removed it meanwhile
        handle = open(path, "ab")  # noqa: SIM115 - the child owns it until it exits
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env[SUPERVISED_ENV] = str(self.config.cluster.data_dir)  # whose node it is (and what it forks)
        child.proc = subprocess.Popen(
            [sys.executable, "-m", "nodes.run", "-c", self.config_path, "--node", child.name],
            stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=os.getcwd(), env=env, start_new_session=True)
        child.group = child.proc.pid
        handle.close()  # the child holds its own descriptor
        child.started_ms = _now_ms()
        child.restart_at_ms = None
        child.healthy = False
        child.killed_for = None

    def _open_control(self) -> None:
        try:
            self.control = ControlServer(self.data_dir, self.events, self.children_status, self.restart_now,
                                         self.start_again)
        except zmq.ZMQError as e:  # e.g. a data dir path too long for a unix socket
            self.emit(f"loom: no control socket at {control_path(self.data_dir)}: {e}; "
                      "the monitor can report hung nodes but not restart them")

    def children_status(self) -> dict[str, dict]:
        """Every child: pid, state (running, restarting, given_up, stopped), restarts, reason."""
        out = {}
        for name, c in self.children.items():
            state = "given_up" if c.given_up else "running" if c.pid else "restarting" if c.restart_at_ms else "stopped"
            out[name] = {"pid": c.pid, "state": state, "restarts": c.restarts, "reason": c.given_up or ""}
        return out

    def restart_now(self, name: str, reason: str, pid: int | None = None) -> int:
        """Kill ``name`` (SIGKILL: a stopped or hung process cannot handle SIGTERM) and start a
        new process at once. ``pid``: only if this is still the running process. Returns the
        new pid; raises RemoteError when the node is not ours, given up on, or already gone."""
        child = self.children.get(name)
        if child is None:
            raise RemoteError(P.UNKNOWN_NODE, f"{name} is not supervised here")
        if child.given_up:
            raise RemoteError(P.NODE_GIVEN_UP, f"{name} was given up on: {child.given_up}")
        if child.proc is None or child.proc.poll() is not None or (pid is not None and pid != child.proc.pid):
            raise RemoteError(P.NODE_NOT_RUNNING, f"{name} is not running as pid {pid}: nothing to restart")
        old = child.proc.pid
        child.proc.kill()
        end_group(child)  # and what it forked: a gateway's worker outliving its master held its ports
        try:
            child.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RemoteError(P.REQUEST_TIMED_OUT, f"{name} (pid {old}) did not die on SIGKILL") from None
        child.last_exit = child.proc.returncode
        # a node that keeps hanging loops too: the monitor asks at most once per its restart
        # backoff, so its kills are counted over a window that can hold more than the limit
        kill_window_ms = max(self.config.supervisor.crash_loop_window_ms,
                             (self.config.supervisor.crash_loop_restarts_max + 1) * self.config.monitor.restart_backoff_ms)
        if self._crash_loop(child, _now_ms(), kill_window_ms):
            self._write_pid_file()
            raise RemoteError(P.NODE_GIVEN_UP, f"{name} was given up on: {child.given_up}")
        self._spawn(child)
        child.restarts += 1
        self.events.add("restarted", name, reason, pid=child.proc.pid, old_pid=old)  # type: ignore[union-attr]
        self.emit(f"loom: restarted {name} (pid {old}) as pid {child.proc.pid}: {reason}")  # type: ignore[union-attr]
        self._write_pid_file()
        return child.proc.pid  # type: ignore[union-attr]

    def start_again(self, name: str, reason: str) -> int:
        """Start ``name`` now if it does not run: given up on (a crash loop), stopped (a
        configuration error, an exit with restart off) or waiting out its restart backoff -- an
        operator's ``loom restart`` once the cause is fixed; its crash count starts over. Returns
        the new pid; raises RemoteError (unknown_node, node_running)."""
        child = self.children.get(name)
        if child is None:
            raise RemoteError(P.UNKNOWN_NODE, f"{name} is not supervised here")
        if child.pid is not None:
            raise RemoteError(P.NODE_RUNNING, f"{name} is running as pid {child.pid}: nothing to start")
        if child.proc is not None:
            end_group(child)  # what the exited process forked must not hold the node's ports
        child.given_up, child.backoff_ms = None, 0
        child.exits_ms.clear()
        self._spawn(child)
        child.restarts += 1
        pid = child.proc.pid  # type: ignore[union-attr]
        self.events.add("started", name, reason, pid=pid)
        self.emit(f"loom: started {name} as pid {pid}: {reason}")
        self._write_pid_file()
        return pid

    def _wait_healthy(self, names: list[str], deadline_ms: int) -> None:
        pending = set(names)
        while pending:
            if self._stopping:
                raise KeyboardInterrupt
            for name in sorted(pending):
                child = self.children[name]
                if child.proc is not None and child.proc.poll() is not None:
                    self._fail_start(f"{name} exited with code {child.proc.returncode} while starting", name)
                reply = ping(child.node)
                if reply and reply.get("node") == name and reply.get("pid") == child.pid:
                    child.healthy = True
                    pending.discard(name)
            if pending and _now_ms() >= deadline_ms:
                self._fail_start(f"{', '.join(sorted(pending))} did not answer PING within "
                                 f"{self.config.supervisor.startup_timeout_ms} ms", sorted(pending)[0])
            if pending:
                time.sleep(0.1)

    def _wait_brokers_heard(self, coordinators: list[str], deadline_ms: int) -> None:
        """Until the coordinator has heard every broker, or one of the nodes exited (it is
        restarted by the supervision that follows, not waited for here)."""
        brokers = {c.node.broker_id for c in self.children.values() if c.node.role == "broker"}
        if not coordinators or not brokers:
            return
        coordinator = self.children[coordinators[0]].node
        heard: set[int] = set()
        while not any(c.proc is None or c.proc.poll() is not None for c in self.children.values()):
            if self._stopping:
                raise KeyboardInterrupt
            stats = ask(coordinator, P.STATS) or {}
            heard = set(stats.get("brokers_heard", ()))
            if brokers <= heard or _now_ms() >= deadline_ms:
                break
            time.sleep(0.05)
        else:
            return
        if not brokers <= heard:
            self.emit(f"loom: the coordinator has not heard broker(s) {', '.join(map(str, sorted(brokers - heard)))} "
                      "yet; topics made until it does are led by the others")

    def _fail_start(self, message: str, name: str) -> None:
        tail = log_tail(log_path(self.config, name))
        self.stop_all()
        detail = f"; last log line: {tail[-1]}" if tail else ""
        raise FabricError(f"{message} (log: {log_path(self.config, name)}{detail})")

    # -- supervise ---------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def _stop(signum: int, frame: object) -> None:
            self._stopping = True
        for sig in STOP_SIGNALS:
            signal.signal(sig, _stop)

    def run(self) -> None:
        """Supervise until SIGTERM/SIGINT, then stop every child."""
        if self.config.supervisor.restart:
            self.watches = {n: MonitorWatch(zmq_context(), Clock(), self.config, n, c.node)
                            for n, c in self.children.items() if c.node.role == "monitor"}
        try:
            while not self._stopping:
                self.tick(_now_ms())
                self.watch_monitors()
                if self.control is not None:
                    self.control.serve(LOOP_INTERVAL_MS)
                else:
                    time.sleep(LOOP_INTERVAL_MS / 1000)
        finally:
            for watch in self.watches.values():
                watch.close()
            self.stop_all()

    def watch_monitors(self) -> None:
        """SIGKILL a monitor that stopped answering PING; ``tick`` restarts it, with the backoff,
        on seeing it exit."""
        for name, watch in self.watches.items():
            child = self.children[name]
            pid = child.pid if child.restart_at_ms is None and not child.given_up else None
            why = watch.tick(pid)
            if why is None or child.proc is None:
                continue
            child.killed_for = why
            self.emit(f"loom: {name} (pid {pid}) is alive but does not answer: {why}; killing it to restart it")
            child.proc.kill()  # SIGKILL: a stopped or hung process cannot handle SIGTERM
            try:
                child.proc.wait(timeout=STOP_TIMEOUT_S)  # so that the next tick sees it exit, and it is killed once
            except subprocess.TimeoutExpired:
                self.emit(f"loom: {name} (pid {pid}) did not die on SIGKILL")

    def tick(self, now_ms: int) -> None:
        """Notice exits, schedule restarts with backoff, start what is due."""
        sup = self.config.supervisor
        changed = False
        for child in self.children.values():
            proc = child.proc
            if proc is not None and proc.poll() is not None and child.restart_at_ms is None:
                end_group(child)  # what the node forked must not outlive it (and hold its ports)
                child.last_exit = proc.returncode
                ran_ms = now_ms - child.started_ms
                why = self._exit_reason(child.name, proc.returncode)
                if child.killed_for:
                    why = f"killed by the supervisor: {child.killed_for}"
                self.events.add("exited", child.name, why or f"exit code {proc.returncode}", pid=proc.pid,
                                code=proc.returncode)
                if proc.returncode == EXIT_CONFIG_ERROR:
                    self.emit(f"loom: {child.name} (pid {proc.pid}) cannot start: {why or 'configuration error'}; "
                              "not restarting it: fix the config, then restart the cluster")
                    child.proc = None
                    changed = True
                    continue
                if not sup.restart:
                    self.emit(f"loom: {child.name} exited with code {proc.returncode} (restart is off)"
                              + (f": {why}" if why else ""))
                    child.proc = None
                    changed = True
                    continue
                if self._crash_loop(child, now_ms):
                    changed = True
                    continue
                if ran_ms >= STABLE_RUN_MS or child.backoff_ms == 0:
                    child.backoff_ms = sup.restart_backoff_ms
                else:
                    child.backoff_ms = min(child.backoff_ms * 2, sup.restart_backoff_max_ms)
                child.restart_at_ms = now_ms + child.backoff_ms
                self.emit(f"loom: {child.name} (pid {proc.pid}) exited with code {proc.returncode}; "
                          f"restarting in {child.backoff_ms} ms (log: {log_path(self.config, child.name)}"
                          + (f"; {why})" if why else ")"))
            if child.restart_at_ms is not None and now_ms >= child.restart_at_ms:
                self._spawn(child)
                child.restarts += 1
                changed = True
                self.emit(f"loom: restarted {child.name} as pid {child.proc.pid}")
                self.events.add("restarted", child.name, f"it exited ({self._exit_reason(child.name, child.last_exit or 0)})",
                                pid=child.proc.pid)
        if changed:
            self._write_pid_file()

    def _crash_loop(self, child: Child, now_ms: int, window_ms: int | None = None) -> bool:
        """Count an exit (a crash, or a kill the monitor asked for); True (and the child given
        up on) when it is over the crash-loop limit."""
        sup = self.config.supervisor
        window_ms = window_ms or sup.crash_loop_window_ms
        child.exits_ms.append(now_ms)
        while child.exits_ms and now_ms - child.exits_ms[0] > window_ms:
            child.exits_ms.popleft()
        if len(child.exits_ms) <= sup.crash_loop_restarts_max:
            return False
        child.given_up = (f"exited {len(child.exits_ms)} times within {sup.crash_loop_window_ms} ms "
                          f"(limit {sup.crash_loop_restarts_max}); last: {self._exit_reason(child.name, child.last_exit or 0)}")
        child.proc = None
        self.events.add("gave_up", child.name, child.given_up)
        self.emit(f"loom: giving up on {child.name}: {child.given_up} (log: {log_path(self.config, child.name)})")
        return True

    def _exit_reason(self, name: str, returncode: int) -> str:
        """A signal's name, or the child's last log line (its error, when it failed)."""
        if returncode < 0:
            try:
                return f"killed by {signal.Signals(-returncode).name}"
            except ValueError:
                return f"killed by signal {-returncode}"
        tail = log_tail(log_path(self.config, name), 1)
        return f"last line: {tail[-1].strip()}" if tail else ""

    # -- stop -----------------------------------------------------------------------------
    def stop_all(self) -> None:
        """SIGTERM every child (the coordinator last), wait, SIGKILL the stragglers."""
        self._stopping = True
        order = sorted(self.children.values(), key=lambda c: c.node.role == "coordinator")
        for group in ([c for c in order if c.node.role != "coordinator"],
                      [c for c in order if c.node.role == "coordinator"]):
            procs = [c.proc for c in group if c.proc is not None and c.proc.poll() is None]
            terminate_and_wait([p.pid for p in procs], STOP_TIMEOUT_S, procs)
            for c in group:
                end_group(c)
        self._remove_pid_file()
        if self.control is not None:
            self.control.close()
            self.control = None
        self.release_lock()


def end_group(child: Child) -> None:
    """SIGKILL whatever is left of the process group ``child``'s process led (nothing when none
    is), and forget it. A process group's id is not reused while any of its processes lives."""
    if child.group is None:
        return
    kill_group(child.group)
    child.group = None


def log_tail(path: Path, lines_max: int = LOG_TAIL_LINES_MAX) -> list[str]:
    """The last non-empty lines of a log file (bounded read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if ln.strip()][-lines_max:]
