"""The gateway node: the Flask app of ``webui`` served by gunicorn (gthread worker) on the
node's ``port`` (REST + WebSocket API) and ``dashboard_port`` (the dashboard).

    python -m nodes.run -c CONFIG --node gateway

The process the supervisor starts is gunicorn's master: it binds the HTTP ports and forks one
worker, and holds no ZeroMQ state (ZeroMQ contexts do not survive a fork). The worker, after
the fork, builds everything cluster-side -- the agent (nodes/gateway/agent.py) and the control
node (nodes/gateway/control.py: PING/STATS on ``control_port``, heartbeats, the health
watcher) -- and hands the agent to ``webui.app.create_app``. One worker with
``gateway.worker_threads`` threads: the consumer-instance table and the rate limiter live in
one process, and a WebSocket holds one thread.

SIGTERM/SIGINT stop gunicorn (workers get ``GRACEFUL_TIMEOUT_S`` to finish requests); a
stopping worker closes its WebSockets with 1001 "going away" (a /ws/consume stream commits what
went out and leaves its group first) and exits once their routes end.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

import zmq
from gunicorn.app.base import BaseApplication

from fabric.apikeys import read_admin_key
from fabric.config import ConfigError, LoomConfig
from nodes.gateway.worker import GatewayWorker
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway as GatewayContext
from webui.context import HttpRequestCounter
from webui.spec import REQUEST_LINE_BYTES_MAX
from webui.events import EventHub
from webui.read_deadline import EXTENSION as READ_WATCH
from webui.read_deadline import ReadWatch
from webui.request_hold import RequestHold
from webui.ws_outbox import OpenSockets

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT_S = 5
GOING_AWAY_WAIT_S = 3.0     # a stopping worker waits this long for its WebSocket routes to end (1001)
GOING_AWAY_REASON = "the gateway is stopping: reconnect"
RECLAIM_TRIES = 30          # consumer services asked for the previous worker's instances, RECLAIM_PAUSE_S apart
RECLAIM_PAUSE_S = 2.0
EXIT_HUNG_AT_EXIT = 70      # a worker's exit code when threads still running held its exit past the grace
WORKER_TIMEOUT_S = 60       # a worker silent this long is restarted by the master
KEEPALIVE_S = 5
PORT_BIND_TRIES = 5         # a taken port is tried this often at the start, PORT_BIND_PAUSE_S apart (gunicorn's)
PORT_BIND_PAUSE_S = 1.0


class _Server(BaseApplication):
    def __init__(self, gateway: "Gateway", options: dict[str, Any]) -> None:
        self.gateway = gateway
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings:  # e.g. control_socket_disable exists from gunicorn 24 on
                self.cfg.set(key, value)

    def load(self) -> Any:
        return self.gateway.build_app()  # in the worker, after the fork


def stop_worker() -> None:
    """A request failed with a programmer error (already answered 500 and logged): stop this
    worker as a node with a bug stops (gunicorn stops it gracefully -- other requests in flight
    finish -- and its master starts a fresh worker that builds everything anew)."""
    log.critical("a programmer error in a request: stopping worker %d; the master starts a new one", os.getpid())
    os.kill(os.getpid(), signal.SIGTERM)


def check_ports_free(host: str, ports: dict[str, int], tries: int = PORT_BIND_TRIES,
                     pause_s: float = PORT_BIND_PAUSE_S) -> None:
    """Bind each port once and let it go, so that a port another process holds stops the node at
    its start with the one line nodes/run.py prints for a taken port (``zmq.ZMQError``, naming
    the config key). gunicorn's own bind of a taken port said only "Can't connect to (host,
    port)" after its tries; the worker's control ROUTER or PUB failed after the fork, with a
    traceback. A taken port is tried ``tries`` times, ``pause_s`` apart, as gunicorn tries: the
    worker of a gateway killed with SIGKILL holds the ports until it sees its master gone. Binds
    as gunicorn does (SO_REUSEADDR: a port in TIME_WAIT is free). Raises zmq.ZMQError
    (EADDRINUSE, EADDRNOTAVAIL...)."""
    for key, port in ports.items():
        for attempt in range(tries):
            try:
                family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
                with socket.socket(family, socket.SOCK_STREAM) as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind((host, port))
                break
            except OSError as e:  # reported like a taken ROUTER port (nodes/run.py)
                if e.errno != errno.EADDRINUSE or attempt == tries - 1:
                    raise zmq.ZMQError(e.errno or 0, f"{key} {port}: {e.strerror}") from e
                time.sleep(pause_s)


def broker_storage(config: LoomConfig) -> dict[int, dict[str, Any]]:
    """Each broker's engine and fsync mode from the config it runs with (per-broker overrides applied)."""
    out = {}
    for name, node in config.nodes.items():
        if node.role == "broker" and node.broker_id is not None:
            st = config.storage_for(name)
            out[node.broker_id] = {"engine": st.engine, "fsync": st.fsync, "fsync_interval_ms": st.fsync_interval_ms}
    return out


class Gateway:
    role = "gateway"

    def __init__(self, config: LoomConfig, name: str) -> None:
        self.config = config
        self.name = name
        self.node_config = config.node(name)
        self.master_pid = os.getpid()
        self.control: Any = None
        self.websockets: OpenSockets | None = None  # the worker's, once it built the app
        try:  # read here, in the master: a bad key stops the node with a config error, not each worker
            self.admin_key = read_admin_key(config.cluster.data_dir)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        check_ports_free(self.node_config.host, self.ports())

    def ports(self) -> dict[str, int]:
        """The ports this node binds, by config key: gunicorn's master binds the HTTP ones, the
        worker the control node's ROUTER and PUB (after the fork)."""
        n = self.node_config
        ports = {"port": n.port}
        if n.dashboard_port and n.dashboard_port != n.port:
            ports["dashboard_port"] = n.dashboard_port
        ports["control_port"] = n.rpc_port
        ports["pub_port"] = n.publish_port
        return ports

    def binds(self) -> list[str]:
        n = self.node_config
        ports = [n.port] + ([n.dashboard_port] if n.dashboard_port and n.dashboard_port != n.port else [])
        return [f"{n.host}:{p}" for p in ports]

    def run(self) -> None:
        options = {
            "bind": self.binds(), "workers": 1, "worker_class": GatewayWorker,  # gthread, reads watched
            "threads": self.config.gateway.worker_threads, "graceful_timeout": GRACEFUL_TIMEOUT_S,
            "timeout": WORKER_TIMEOUT_S, "keepalive": KEEPALIVE_S, "proc_name": f"loom-{self.name}",
            "accesslog": None, "errorlog": "-", "loglevel": "info", "preload_app": False,
            "worker_exit": self._worker_exit, "post_worker_init": self._post_worker_init,
            "worker_int": self._worker_int,
            "control_socket_disable": True,  # one per host by default: two gateways would clash
            "limit_request_line": REQUEST_LINE_BYTES_MAX,  # longer: 414, documented in /openapi.json
        }
        log.info("%s (gateway) serving HTTP on %s, control on %s, pid %d", self.name, ", ".join(self.binds()),
                 self.node_config.endpoint, self.master_pid)
        _Server(self, options).run()

    def build_app(self) -> Any:
        """The WSGI app with its cluster side; runs in the worker process."""
        from nodes.gateway.agent import GatewayAgent
        from nodes.gateway.control import GatewayControl
        from webui.app import create_app

        hub = EventHub()
        http_requests = HttpRequestCounter()
        hold = RequestHold() if self.config.faults.enabled else None  # test configs only
        self.control = GatewayControl(self.config, self.name, self.master_pid, hub, http_requests, hold)
        agent = GatewayAgent(self.config, is_up=self.control.is_up, takes_work=self.control.takes_work,
                             owner=f"gateway:{self.name}")
        sec = self.config.security
        keys = KeyStore([(k.name, k.key_hash, list(k.roles)) for k in sec.api_keys], self.admin_key)
        limiter = RateLimiter(sec.rate_limit_per_s, sec.rate_limit_burst, self.config.gateway.rate_limit_clients_max)
        ctx = GatewayContext(agent=agent, hub=hub, keys=keys, limiter=limiter, settings=self.config.gateway,
                             security=sec, cluster_id=self.config.cluster.name,
                             http_requests=http_requests, broker_storage=broker_storage(self.config),
                             on_bug=stop_worker, hold=hold)
        app = create_app(ctx)
        watch = ReadWatch(self.config.gateway.request_read_timeout_ms / 1000)
        app.wsgi_app = watch.wrap(app.wsgi_app)  # outermost: a request without a body is let go before any hold
        app.extensions[READ_WATCH] = watch  # for the worker (nodes/gateway/worker.py)
        self.websockets = ctx.websockets
        self.control.metrics.add_collector(ctx.long_polls.samples)
        self.control.metrics.add_collector(limiter.samples)
        self.control.metrics.add_collector(watch.samples)
        self.control.start()
        threading.Thread(target=reclaim_instances, args=(agent,), name="loom-reclaim-instances", daemon=True).start()
        return app

    def _post_worker_init(self, worker: Any) -> None:
        """On SIGTERM the worker stops accepting and waits up to GRACEFUL_TIMEOUT_S for its
        connections to end; a WebSocket's route never ends by itself, so it waited the whole
        grace and was then cut without a close frame. Its sockets are now closed with 1001 at
        the signal: their routes end (a /ws/consume stream commits what went out and leaves
        its group first), and the worker exits as soon as they have."""
        stop = worker.handle_exit  # gunicorn's: stop accepting, then the graceful wait

        def on_sigterm(signum: int, frame: Any) -> None:
            if self.websockets is not None:
                self.websockets.going_away(GOING_AWAY_REASON)
            stop(signum, frame)
        signal.signal(signal.SIGTERM, on_sigterm)

    def _worker_int(self, worker: Any) -> None:
        if self.websockets is not None:  # SIGINT/SIGQUIT: gunicorn exits at once, then _worker_exit
            self.websockets.going_away(GOING_AWAY_REASON)

    def _worker_exit(self, server: Any, worker: Any) -> None:
        if self.websockets is not None:
            self.websockets.going_away(GOING_AWAY_REASON)  # a stop on a bug, or a signal's race
            left = self.websockets.wait_closed(GOING_AWAY_WAIT_S)
            if left:
                log.warning("%d WebSockets still open %.0f s after their close: cut at exit", left, GOING_AWAY_WAIT_S)
        if self.control is not None:
            self.control.stop()
        exit_hard_after(GRACEFUL_TIMEOUT_S)


def reclaim_instances(agent: Any, tries: int = RECLAIM_TRIES, pause_s: float = RECLAIM_PAUSE_S) -> None:
    """In a new worker: delete the consumer instances the previous worker made (their clients
    get 404 and make them again; left alone they held their names and, as group members, their
    partitions until the idle expiry). A consumer service that does not answer yet is asked
    again, a few times."""
    for attempt in range(tries):
        try:
            done = agent.reclaim_instances()
        except Exception:  # a thread of its own: a bug here is logged, not the worker's end
            log.exception("reclaiming the previous worker's consumer instances failed")
            return
        if done is not None:
            if done:
                log.warning("deleted %d consumer instances of the gateway's previous worker", done)
            return
        time.sleep(pause_s)


def exit_hard_after(seconds: float) -> None:
    """End this process ``seconds`` from now, if it has not ended by then. The interpreter's
    exit waits for the worker's thread pool, and a thread serving a WebSocket does not end by
    itself: a worker stopping on a bug with a WebSocket open hung there, holding its control
    port, so that no new worker could start. Past the grace the worker ends without them (its
    sockets close with it; clients reconnect)."""
    timer = threading.Timer(seconds, os._exit, (EXIT_HUNG_AT_EXIT,))
    timer.daemon = True  # runs while the interpreter waits for the other threads
    timer.start()
