"""Local clusters on loopback: a config with ports picked free at run time, one process per
node (``python -m nodes.run``), and a stop of every process by its pid.

The tests, the benchmarks (``loom bench``) and anyone experimenting from Python use it; it lives
in the package so that an installed ``loom`` can start one in any directory. Synchronise on
conditions with deadlines (``wait_until``), never bare sleeps. Not thread-safe.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import yaml

from fabric import protocol as P
from fabric.apikeys import ROLES, hash_key
from fabric.blocking_client import BlockingClient
from fabric.errors import CodedError
from fabric.roles import HTTP
from fabric.roles import ROLES as NODE_ROLES
from fabric.zmq_context import context as zmq_context
from nodes.processes import terminate_and_wait

# the directory that holds the `nodes` package: node processes import the same code as we do
SOURCE_ROOT = Path(__file__).resolve().parent.parent
TEST_ADMIN_KEY = "test-admin-key"  # make_config's key with every role (only its hash is written)
STOP_TIMEOUT_S = 10.0  # a node's SIGTERM grace before SIGKILL in stop_all (the drains end well inside it)


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def wait_until(predicate: Callable[[], Any], timeout_s: float = 20.0, interval_s: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # the condition may raise until the system is ready
            last_exc = e
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


ROLE_KEYS = {"admin": "key-admin-0123456789", "produce": "key-produce-0123456789",
             "consume": "key-consume-0123456789", "read": "key-read-0123456789"}
GATEWAY_NODES = ("producer", "consumer-1", "consumer-2", "gateway")


def gateway_overrides(**gateway: Any) -> dict:
    """Config overrides: one key per role (names = roles), generous rate limits."""
    keys = [{"name": role, "key_hash": hash_key(key), "roles": [role]} for role, key in ROLE_KEYS.items()]
    return {"security": {"api_keys": keys, "rate_limit_per_s": 100_000, "rate_limit_burst": 100_000},
            "gateway": {"request_bytes_max": 4 * 1024 * 1024, **gateway}}


def make_config(tmp: Path, brokers: int = 3, *, engine: str = "segment", fsync: str = "interval",
                extra_nodes: tuple[str, ...] = (), overrides: dict | None = None) -> Path:
    """Write a cluster config with free ports under ``tmp``; return its path."""
    roles = ["coordinator"] + [f"broker-{i}" for i in range(1, brokers + 1)] + list(extra_nodes)
    ports = free_ports(2 * len(roles) + 3)  # every port a node binds is picked free, none derived
    nodes: dict[str, dict] = {}
    for i, name in enumerate(roles):
        role, _, number = name.rpartition("-") if name[-1].isdigit() else (name, "", "")
        spec = NODE_ROLES[role]  # node names are role names, numbered where there are several
        node: dict[str, Any] = {"role": role, "port": ports[2 * i], "pub_port": ports[2 * i + 1]}
        if role == "broker":
            node["broker_id"] = int(number)
        if spec.port_serves == HTTP:  # the gateway: its ROUTER and the dashboard on ports of their own
            node["dashboard_port"] = ports[-1]
            node["control_port"] = ports[-2]
        elif HTTP in spec.binds:  # the monitor's metrics
            node["metrics_port"] = ports[-3]
        nodes[name] = node
    cfg: dict[str, Any] = {
        "cluster": {"name": "test", "data_dir": str(tmp / "data")},
        "nodes": nodes,
        "storage": {"engine": engine, "fsync": fsync, "fsync_interval_ms": 50},
        "topics": {"partitions": 3, "replication_factor": min(3, brokers), "min_insync_replicas": min(2, brokers)},
        "liveness": {"heartbeat_interval_ms": 200, "session_timeout_ms": 3000},
        "replication": {"replica_lag_time_max_ms": 2000},
        "security": {"api_keys": [{"name": "test", "key_hash": hash_key(TEST_ADMIN_KEY), "roles": list(ROLES)}]},
    }
    for key, value in (overrides or {}).items():
        section = cfg.setdefault(key, {})
        section.update(value) if isinstance(value, dict) else cfg.__setitem__(key, value)
    path = tmp / "cluster.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@contextmanager
def running_cluster(directory: Path, brokers: int = 3, **config: Any) -> Iterator["Cluster"]:
    """A started cluster in ``directory`` (for module-scoped fixtures), stopped on exit."""
    c = Cluster(make_config(directory, brokers, **config))
    try:
        c.start()
        yield c
    finally:
        c.stop_all()


class Cluster:
    """Processes of one test cluster. ``start()`` waits until each node answers PING (and, when
    it starts the coordinator, until the coordinator has heard every broker that runs)."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.raw = yaml.safe_load(config_path.read_text())
        self.procs: dict[str, subprocess.Popen] = {}
        self.log_dir = config_path.parent / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self.ctx = zmq_context()

    @property
    def node_names(self) -> list[str]:
        return list(self.raw["nodes"])

    def endpoint(self, name: str) -> str:
        node = self.raw["nodes"][name]
        return f"tcp://127.0.0.1:{node.get('control_port', node['port'])}"  # the gateway's port is HTTP

    @property
    def bootstrap(self) -> str:
        names = [n for n in self.node_names if n == "coordinator" or n.startswith("broker-")]
        return ",".join(f"127.0.0.1:{self.raw['nodes'][n]['port']}" for n in names)

    def start(self, names: list[str] | None = None, wait: bool = True) -> None:
        for name in names or self.node_names:
            self.start_node(name, wait=False)
        if wait:
            for name in names or self.node_names:
                self.wait_ready(name)
            if "coordinator" in (names or self.node_names):
                self.wait_heard([n for n, p in self.procs.items() if self.raw["nodes"][n]["role"] == "broker" and p.poll() is None])

    def start_node(self, name: str, wait: bool = True) -> None:
        assert name not in self.procs or self.procs[name].poll() is not None, f"{name} already running"
        log = open(self.log_dir / f"{name}.log", "ab")
        env = dict(os.environ, PYTHONPATH=str(SOURCE_ROOT), PYTHONUNBUFFERED="1")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "nodes.run", "-c", str(self.config_path), "--node", name],
            stdout=log, stderr=subprocess.STDOUT, cwd=str(SOURCE_ROOT), env=env)
        if wait:
            self.wait_ready(name)

    def ping(self, name: str, timeout_ms: int = 500) -> dict:
        c = BlockingClient(self.ctx, self.endpoint(name))
        try:
            return c.call(P.PING, timeout_ms=timeout_ms)[0]
        finally:
            c.close()

    def call(self, name: str, command: bytes, header: dict | None = None, payloads: list | tuple = (), timeout_ms: int = 5000) -> tuple[dict, list]:
        c = BlockingClient(self.ctx, self.endpoint(name))
        try:
            return c.call(command, header or {}, payloads, timeout_ms=timeout_ms)
        finally:
            c.close()

    def stats(self, name: str) -> dict:
        return self.call(name, P.STATS, timeout_ms=2000)[0]

    def wait_ready(self, name: str, timeout_s: float = 20.0) -> None:
        def ready() -> bool:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}; see {self.log_dir / (name + '.log')}")
            try:
                return self.ping(name)["node"] == name
            except CodedError:
                return False
        wait_until(ready, timeout_s, what=f"{name} to answer PING")

    def wait_heard(self, brokers: list[str], timeout_s: float = 20.0) -> None:
        """Wait until the coordinator has heard each of ``brokers`` (registered or heartbeated
        since its start): until then a new partition is led by the brokers it heard, and the
        preferred-leader check moves it later (nodes/coordinator/topics.py). A broker answers
        PING before its registration lands."""
        ids = {self.raw["nodes"][n]["broker_id"] for n in brokers}
        wait_until(lambda: ids <= set(self.stats("coordinator")["brokers_heard"]), timeout_s,
                   what=f"the coordinator to hear {', '.join(brokers)}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.kill(proc.pid, sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                proc.wait(timeout=10)

    def stop(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def stop_all(self) -> None:
        """Stop every node as ``loom down`` does, a wave at a time, each wave at once: the
        front ends and services (their drains still reach the brokers and the coordinator),
        then the brokers, then the coordinator. One by one, each node's stop waited for the one
        before it (seconds per cluster in every test's teardown)."""
        roles = {name: node["role"] for name, node in self.raw["nodes"].items()}
        for wave in ([n for n in self.procs if roles.get(n) not in ("broker", "coordinator")],
                     [n for n in self.procs if roles.get(n) == "broker"],
                     [n for n in self.procs if roles.get(n) == "coordinator"]):
            procs = [self.procs[n] for n in wave if self.procs[n].poll() is None]
            for proc in procs:
                os.kill(proc.pid, signal.SIGCONT)  # a SIGSTOPped node would never see the SIGTERM
            terminate_and_wait([p.pid for p in procs], STOP_TIMEOUT_S, procs)

    def replica_log_dir(self, broker: str, topic: str, partition: int, engine: str | None = None) -> Path:
        """The engine's directory of one replica (layout: nodes/broker/partition_dirs.py)."""
        engine = engine or self.raw["storage"]["engine"]
        return Path(self.raw["cluster"]["data_dir"]) / broker / f"{topic}-{partition}" / engine / "log"

    def broker_names(self) -> list[str]:
        return [n for n in self.node_names if n.startswith("broker-")]

    def create_topic(self, topic: str, partitions: int = 1, replication_factor: int = 1) -> None:
        """Create ``topic`` and wait until it is ready (``wait_topic_ready``)."""
        from fabric.client import Admin
        with Admin(self.bootstrap) as admin:
            admin.create_topic(topic, partitions=partitions, replication_factor=replication_factor)
            self.wait_topic_ready(admin, topic)

    def wait_topic_ready(self, admin: Any, topic: str, timeout_s: float | None = None, full_isr: bool = True) -> None:
        """Wait until every partition has a leader that knows it leads (and a full ISR), for
        ``timeout_s`` or (None) 20 s plus 40 ms per partition: each broker opens its replicas a
        few milliseconds apiece (a few fsyncs each), on a shared disk several times slower, so a
        1,000-partition topic gets a minute -- a functional bound, not a speed check."""
        if timeout_s is None:
            partitions = wait_until(lambda: len(admin.metadata().topics[topic].partitions), 20.0,
                                    what=f"topic {topic} in the metadata")
            timeout_s = 20.0 + 0.04 * partitions

        def ready() -> bool:
            md = admin.metadata()
            t = md.topics.get(topic)
            if t is None:
                return False
            for p in t.partitions:
                if p.leader < 0 or (full_isr and len(p.isr) < len(p.replicas)):
                    return False
            admin.list_offsets(topic)  # raises until every leader has taken over
            return True
        wait_until(ready, timeout_s, what=f"topic {topic} to be ready")
