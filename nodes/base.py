"""What every ZeroMQ node has: a context, one reactor, a ROUTER for requests, a PUB socket
for heartbeats (and whatever else the role publishes), PING and STATS, and a clean stop on
SIGTERM/SIGINT. A role subclasses ``Node`` and adds routes, sockets and timers.

A clean stop: the signal stops the reactor, then ``drain`` runs (on the reactor's thread, the
reactor still usable through ``run_once``: a role that took requests it answers later -- the
producer and consumer services -- finishes them there, within its own deadline), then
``close``. While it drains, PING answers ``stopping: true``: the gateway's health watcher then
sends it nothing new and still waits for what it sent (``nodes.gateway.control.takes_work``).

A programmer error on the reactor thread (see ``fabric.reactor``), or one a worker thread
hands over with ``fail_from_thread``, leaves ``run`` without the clean close -- a close could persist the broken state -- and ``nodes.run`` exits with
``EXIT_PROGRAMMER_ERROR`` so that the supervisor restarts the node from disk.

Not thread-safe: everything runs on the reactor's thread.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import zmq

from fabric import callcount
from fabric import protocol as P
from fabric import wire
from fabric.clock import Clock
from fabric.config import LoomConfig
from fabric.errors import RemoteError
from fabric.faults import FaultRules
from fabric.metrics import MetricsRegistry, process_samples
from fabric.reactor import Reactor
from fabric.rpc import RpcServer, make_socket
from fabric.zmq_context import context as zmq_context
from fabric.zmq_io import send_frames
from fabric.zmtp_pub import ZmtpPublisher
from nodes.data_dir_lock import lock_data_dir, unlock_data_dir

log = logging.getLogger(__name__)

# A draining node (``drain``) ends once no request of its role came for DRAIN_QUIET_MS: by then
# the gateway's health watcher (nodes.gateway.control.HEALTH_INTERVAL_MS, 500 ms) has seen PING
# say ``stopping`` and sends it nothing, so no request is in flight to it when its port closes.
DRAIN_QUIET_MS = 1000
DRAIN_PASS_MS = 50  # a drain's reactor pass waits at most this long


class Node:
    role = "node"
    # the PUB socket's kind: an XPUB (the coordinator's) also reads its subscribers'
    # subscriptions, every one of them (XPUB_VERBOSE), on the reactor (``_on_subscription``)
    PUB_KIND = zmq.PUB

    def __init__(self, config: LoomConfig, name: str, clock: Clock | None = None) -> None:
        self.config = config
        self.name = name
        self.node_config = config.node(name)
        self.clock = clock or Clock()
        self.ctx = zmq_context()
        self.reactor = Reactor(self.clock, contain_handler_errors=True)
        self.started_ms = self.clock.now_ms()
        self.counters: Counter[str] = Counter()
        self.server = RpcServer(self.ctx, self.reactor, self.node_config.endpoint)
        self.server.route(P.PING, self._on_ping)
        self.server.route(P.STATS, self._on_stats)
        self.server.route(P.FAULTS, self._on_faults)
        self.metrics = MetricsRegistry()
        self.metrics.add_collector(process_samples)
        self.server.metrics = self.metrics
        self.faults = FaultRules(config.faults.enabled, {bid: n for bid, (n, _) in config.brokers().items()})
        self.server.drop_from = self.faults.blocks_identity
        pub_endpoint = f"tcp://{self.node_config.host}:{self.node_config.publish_port}"
        self.pub: ZmtpPublisher | zmq.Socket
        if self.PUB_KIND == zmq.XPUB:
            self.pub = make_socket(self.ctx, self.PUB_KIND)
            self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
            self.reactor.add_socket(self.pub, self._on_subscription)
            self.pub.bind(pub_endpoint)
        else:  # written by the reactor thread itself: no libzmq I/O thread to wake per message
            self.pub = ZmtpPublisher(self.reactor, pub_endpoint)
        self.reactor.call_every(config.liveness.heartbeat_interval_ms, self._heartbeat)
        self._thread_error: BaseException | None = None
        self.reactor.after_pass(self._raise_thread_error)
        self._data_dir_lock: int | None = None
        self.draining = False  # SIGTERM/SIGINT came: ``drain`` runs (PING says ``stopping``)
        self.last_request_ms = 0  # when the last request ``take_request`` saw came (the drain's quiet period)

    def take_data_dir(self, path: Path) -> Path:
        """Create ``path`` and hold its lock for this process's life (``nodes.data_dir_lock``):
        a role with a data directory calls this before it opens anything there. Raises
        DataDirInUse when another process holds it."""
        if self._data_dir_lock is None:
            self._data_dir_lock = lock_data_dir(path)
        return path

    def _on_subscription(self, frames: list[bytes]) -> None:
        """A subscriber's subscription (``\\x01`` and the prefix) or unsubscription (``\\x00``)
        read off an XPUB: nothing by default."""

    def fail_from_thread(self, error: BaseException) -> None:
        """A worker thread met a programmer error: the reactor raises it at its next pass (within
        a poll timeout), which stops the node as a bug on the reactor thread would. Thread-safe."""
        self._thread_error = error

    def _raise_thread_error(self) -> None:
        if self._thread_error is not None:
            raise self._thread_error

    # -- publishing ------------------------------------------------------------------------
    def publish(self, topic: bytes, kind: bytes, header: dict, payloads: list | tuple = ()) -> None:
        self.publish_frames(wire.encode_pub(topic, kind, header, payloads))

    def publish_frames(self, frames: list) -> None:
        """Publish one encoded PUB message (``fabric.wire``'s ``encode_*``); dropped and counted
        when the socket would block."""
        pub = self.pub
        if pub.__class__ is ZmtpPublisher:
            pub.send(frames)  # type: ignore[union-attr]  (its drops: STATS' pub_dropped)
            return
        try:
            send_frames(pub, frames)  # type: ignore[arg-type]
        except zmq.Again:
            self.counters["pub_dropped"] += 1

    def _heartbeat(self) -> None:
        self.publish(P.TOPIC_HEARTBEAT, P.PUB_HEARTBEAT, self.heartbeat_fields())

    def heartbeat_fields(self) -> dict[str, Any]:
        """The heartbeat's header: the fields of ``fabric.wire.Heartbeat`` (a role adds its own)."""
        return {"node": self.name, "role": self.role, "pid": os.getpid(), "ts_ms": self.clock.wall_ms()}

    # -- PING / STATS ----------------------------------------------------------------------
    def _on_ping(self, req: wire.Request) -> dict:
        reply = {"node": self.name, "role": self.role, "pid": os.getpid(),
                 "uptime_ms": self.clock.now_ms() - self.started_ms, "cluster": self.config.cluster.name}
        if self.draining:
            reply["stopping"] = True
        return reply

    def _on_stats(self, req: wire.Request) -> dict:
        if req.header.get("metrics_only") is True:  # the monitor's poll: typed metrics only
            return {"node": self.name, "role": self.role, "pid": os.getpid(), "metrics": self.metrics.encode()}
        counters = dict(self.counters)
        counters.update({f"rpc_{k}": v for k, v in self.server.counters.items()})
        if isinstance(self.pub, ZmtpPublisher):
            counters.update({f"pub_{k}": v for k, v in self.pub.counters.items()})
        return {"node": self.name, "role": self.role, "counters": counters, **self.stats(),
                "metrics": self.metrics.encode()}

    def _on_faults(self, req: wire.Request) -> dict:
        if not self.faults.enabled:
            raise RemoteError(P.INVALID_CONFIG, "fault injection is off (faults.enabled in the config)")
        if req.header.get("programmer_error") is True:
            # the test hook for the crash path: a bug in a handler must stop the node
            raise TypeError("fault injection: a programmer error in the FAULTS handler")
        names = req.get("block", list)
        self.faults.set_blocked([n for n in names if isinstance(n, str)])
        log.warning("fault injection: dropping traffic from %s", sorted(self.faults.blocked) or "nobody")
        return {"blocked": sorted(self.faults.blocked)}

    def stats(self) -> dict[str, Any]:
        """Role-specific metrics for STATS (override)."""
        return {}

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self) -> None:
        """Run until SIGTERM/SIGINT, then drain and close. A second signal while it drains
        changes nothing: Ctrl-C at ``loom up`` reaches the node and its supervisor, which
        sends SIGTERM on top; the drain is bounded by its role's deadline instead."""
        def _stop(signum: int, frame: Any) -> None:
            self.reactor.stop()
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        if callcount.install():
            log.warning("call counting on (%s): SIGUSR1 starts it, SIGUSR2 writes it", callcount.ENV)
        log.info("%s (%s) serving on %s:%d pid %d", self.name, self.role, self.node_config.host,
                 self.node_config.port, os.getpid())
        self.reactor.run()  # a programmer error propagates: no clean close of a broken state
        self.draining = True
        self.drain()
        self.close()

    def drain(self) -> None:
        """After SIGTERM/SIGINT stopped the reactor, before ``close``: finish what was taken,
        driving the reactor with ``run_once`` so that answers still go out, within a deadline
        well inside the supervisor's SIGKILL escalation (``nodes.running_cluster.STOP_TIMEOUT_S``).
        Nothing by default (override)."""

    def take_request(self, req: wire.Request, stopping_message: str) -> None:
        """A request of the kind ``drain`` finishes (the services' own): note when it came (the
        drain's quiet period, ``quiet``), and refuse it with ``buffer_full`` (retriable: nothing
        of it was done), ``stopping_message`` and ``stopping: true`` while the node drains: a
        client may send it to another service at once (``services.is_stopping_refusal``), where
        a full buffer is back-pressure."""
        self.last_request_ms = req.received_ms
        if self.draining:
            self.counters["refused_stopping"] += 1
            raise stopping_refusal(stopping_message)

    def quiet(self, now_ms: int) -> bool:
        """No request ``take_request`` saw came for DRAIN_QUIET_MS."""
        return now_ms - self.last_request_ms >= DRAIN_QUIET_MS

    def drive_until(self, done: Callable[[int], bool], deadline_ms: int) -> None:
        """Turn the reactor (in ``drain``) until ``done(now_ms)`` and every reply is handed to
        the kernel (``close`` drops what is not), or until ``deadline_ms``."""
        while True:
            now_ms = self.clock.now_ms()
            if (done(now_ms) and not self.server.output_bytes) or now_ms >= deadline_ms:
                return
            self.reactor.run_once(min(DRAIN_PASS_MS, max(1, deadline_ms - now_ms)))

    def close(self) -> None:
        self.server.close()
        if isinstance(self.pub, ZmtpPublisher):
            self.pub.close()
        else:
            self.pub.close(0)
        if self._data_dir_lock is not None:
            unlock_data_dir(self._data_dir_lock)
            self._data_dir_lock = None


def stopping_refusal(message: str) -> RemoteError:
    """A draining node's answer to a request it takes no more (``Node.take_request``), or took
    and will not do (a consumer service's queued instance requests): ``buffer_full`` --
    retriable, nothing of it was done -- with ``stopping: true``, which tells a client it may
    go to another service at once (``services.is_stopping_refusal``)."""
    return RemoteError(P.BUFFER_FULL, message, stopping=True)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.Formatter.converter = time.gmtime
