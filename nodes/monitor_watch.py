"""The supervisor's watch over the monitor: who restarts a monitor that hangs.

The monitor asks the supervisor to restart nodes that are alive but do not answer; a monitor
that is itself alive and silent (SIGSTOP, a deadlock) was restarted by nobody. The supervisor
(nodes/launcher.py) PINGs it every ``monitor.health_interval_ms`` and judges its silence as the
monitor judges any node's (nodes/monitor/health.py): silent for ``monitor.unresponsive_after_ms``
(and at least two heartbeats and a check) while its process exists. A new process is silent
from when it was started.

Silence the supervisor did not listen to is forgiven (fabric/stall.py): a supervisor that was
itself stopped or starved moves the last answer forward by its stall, so that it does not kill
a healthy monitor for the replies it did not read.

Not thread-safe: owned by the supervisor's loop.
"""

from __future__ import annotations

import logging

import zmq

from fabric import protocol as P
from fabric import wire
from fabric.clock import Clock
from fabric.config import LoomConfig, NodeConfig
from fabric.errors import MalformedFrame
from fabric.rpc import make_socket
from fabric.stall import StallWatch, forgiven_ms, stall_threshold_ms

log = logging.getLogger(__name__)
REPLIES_PER_TICK_MAX = 64        # replies read per loop pass (late ones of a resumed monitor pile up)


def silent_after_ms(config: LoomConfig) -> int:
    """How long a monitor may be silent before it is unresponsive: the monitor's own rule for
    any node (nodes/monitor/health.py ``classify``)."""
    from nodes.monitor.health import SILENT_HEARTBEATS  # a monitor is supervised: its package is there
    mon = config.monitor
    return max(mon.unresponsive_after_ms,
               SILENT_HEARTBEATS * config.liveness.heartbeat_interval_ms + mon.health_interval_ms)


class MonitorWatch:
    def __init__(self, ctx: zmq.Context, clock: Clock, config: LoomConfig, name: str, node: NodeConfig) -> None:
        self.clock = clock
        self.name = name
        self.interval_ms = config.monitor.health_interval_ms
        self.silent_after_ms = silent_after_ms(config)
        self.sock = make_socket(ctx, zmq.DEALER, None)
        self.sock.setsockopt(zmq.SNDHWM, 4)  # PINGs to a stopped monitor: a few queued, the rest dropped
        # refused while the monitor is down (killed, restarting), the reconnects back off: at the
        # usual cap (5 s) a restarted monitor went unheard for seconds after it began to serve,
        # silence that is the watch's own -- killed again at once on a slow start
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, self.interval_ms)
        self.sock.connect(node.endpoint)
        now = clock.now_ms()
        self.pid: int | None = None
        self.last_answer_ms = now
        self.next_ping_ms = now
        self.stall_watch = StallWatch(clock, stall_threshold_ms(self.interval_ms), self._forgive)

    def _forgive(self, now_ms: int, stalled_ms: int) -> None:
        self.last_answer_ms = forgiven_ms(self.last_answer_ms, now_ms, stalled_ms)

    def silent_ms(self) -> int:
        return self.clock.now_ms() - self.last_answer_ms

    def tick(self, pid: int | None) -> str | None:
        """Once per supervisor loop pass, with the monitor's current pid (None: not running).
        Returns why it must be killed when process ``pid`` has been silent too long, else None."""
        self.stall_watch.tick()  # before the verdict: a stall of our own is no evidence
        now = self.clock.now_ms()
        if pid != self.pid:  # started (again): silent from now, answers of its predecessor do not count
            self.pid, self.last_answer_ms, self.next_ping_ms = pid, now, now
        self._read_replies(now)
        if pid is None:
            return None
        if now >= self.next_ping_ms:
            self.next_ping_ms = now + self.interval_ms
            try:
                self.sock.send_multipart(wire.encode_request(P.PING, {"id": now}), zmq.NOBLOCK)
            except zmq.Again:
                pass  # PINGs already queued for it: one more says nothing new
        silent = now - self.last_answer_ms
        if silent > self.silent_after_ms:
            return f"process {pid} has not answered PING for {silent} ms (limit {self.silent_after_ms} ms)"
        return None

    def _read_replies(self, now_ms: int) -> None:
        for _ in range(REPLIES_PER_TICK_MAX):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                reply, _payloads = wire.decode_reply(frames)
            except MalformedFrame:
                log.debug("malformed PING reply from %s dropped", self.name)
                continue
            if reply.get("node") == self.name and reply.get("pid") == self.pid and self.pid is not None:
                self.last_answer_ms = now_ms

    def close(self) -> None:
        self.sock.close(0)
