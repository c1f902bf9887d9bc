"""A consumer service: consumer-group members hosted for the gateway (a REST consumer
instance or a WebSocket stream is one instance here).

Requests (every one names ``group`` and ``instance``, except CREATE without a name and LIST):

    CONSUMER_CREATE        {group, instance?, config?}  -> {group, instance, node, pid}
        config: auto_offset_reset (earliest|latest), enable_auto_commit, auto_commit_interval_ms,
                session_timeout_ms, heartbeat_interval_ms, rebalance_timeout_ms, assignor,
                client_id, idle_timeout_ms
    CONSUMER_SUBSCRIBE     {topics: [...]}  ([] unsubscribes; not while assigned) -> {}
    CONSUMER_SUBSCRIPTION  {}                                         -> {topics}
    CONSUMER_FETCH         {timeout_ms?, max_bytes?, max_records?, frame?, positions?, budget_ms?,
                            fetch_id?} -> {records: [[topic,
                                                   partition, offset, timestamp_ms, key, value, headers], ...]}
                           with frame: true -> {count} + one payload frame of those rows
                           (fabric.client.services.pack_rows: out of the 1 MiB header)
                           with positions: true the answer adds {positions: [[t, p, offset]] | null,
                           generation}: where the instance stands after these records, null while it
                           is not positioned (it joins, or looks a partition's position up)
                           fetch_id (from the gateway: its fetches of the instance numbered from 1):
                           one at or below the last one run is refused (request_timed_out): its
                           caller went on without it
    CONSUMER_COMMIT        {offsets: [[topic, partition, offset]...] | null (= current positions)} -> {}
    CONSUMER_COMMITTED     {partitions: [[topic, partition]...]}      -> {offsets: [[t, p, offset|-1]]}
    CONSUMER_SEEK          {to: beginning|end|offsets, partitions?, offsets?} -> {}
    CONSUMER_ASSIGNMENT    {}                                         -> {partitions, positions: [[t, p, o|-1]]}
    CONSUMER_ASSIGN        {partitions: [[topic, partition]...]} (not while subscribed) -> {}
        An instance is subscribed or assigned, never both (Kafka's consumer): the other op is
        refused with ``subscription_conflict`` and changes nothing. Unsubscribing ends either,
        committing first with auto-commit; a new assignment commits the partitions it drops
        (``GroupConsumer.assign``).
    CONSUMER_DELETE        {owner?}  (commits with auto-commit, leaves the group at once) -> {}
    CONSUMER_LIST          {}                                         -> {instances: [{group, instance, ...}]}

Each instance is a ``fabric.client.group.GroupConsumer`` driven by its own thread (its poll
blocks; ``nodes.consumer_instance``); the reactor hands it commands through a bounded queue
and gets answers back through a deque and an inproc wake-up socket. An instance idle for its ``idle_timeout_ms`` (default
``services.consumer_instance_idle_timeout_ms``) is closed, which leaves its group at once.
What each instance fetches ahead of its client is bounded by its share of
``services.consumer_buffer_bytes_max`` (``fetch_limits``), and a fetch's ``max_bytes`` is
answered by a poll that keeps the records past it buffered -- the batch it cut kept decoded
for them, which the share counts too (``fabric.client.consumer_fetch``) -- and a give-back of
that answer's records (a lost answer, a poll that outlasted its caller) puts them back in front
of those instead of fetching the partition again.
If this whole service dies, its members stop heartbeating and the coordinator hands their
partitions to the members living elsewhere after their session timeout.

Stopped cleanly (SIGTERM/SIGINT: ``drain``, run by ``nodes.base.Node.run`` with the reactor
still turning), it answers what it took and its members leave their groups at once: every
instance stops -- the request it serves ends (a fetch's long poll returns what it has) and is
answered, it commits (auto-commit, as at any close) and leaves its group, and a request queued
behind is answered ``buffer_full`` -- and a request arriving meanwhile is refused at once with
``buffer_full`` (retriable; PING says ``stopping``, and the gateway makes its instances again on
another consumer service). The drain ends once every instance has closed and answered and no
request came for ``DRAIN_QUIET_MS``, or after DRAIN_TIMEOUT_MS.

Any request may say ``answered`` and ``lost`` (the gateway's ``fabric.client.fetch_ledger``: its
last fetch answered, and the last that ended without its answer): when the last fetch the
instance ran is numbered in between, its answer was lost, and before serving the request the
instance seeks that fetch's partitions back to where it began (in the same generation only;
never forward; not a partition the client sought since) -- its records go out again instead of
being skipped. A request whose ``answered`` is below the last fetch run (lost, or still on its
way when another thread sent it) does not count as the client coming back for that fetch.

Auto-commit follows Kafka's REST proxy, whose consumer commits inside its next poll: the
records of a fetch answer may never reach the client (it timed out, its connection dropped,
the gateway worker died mid-answer), so until the instance's next request (any op) arrives,
auto-commits -- the timer in ``maintain()``, a revocation at a rebalance, the close at the idle
expiry or at a gateway's DELETE with ``owner`` (reclaiming the instances of one of its dead
processes) -- stop at the first record of each partition in the latest answer
(``GroupConsumer.auto_commit_bounds``). CONSUMER_COMMIT with ``offsets: null`` and the
client's own DELETE commit the positions, which cover everything handed out. An assigned
instance (CONSUMER_ASSIGN, no subscription) auto-commits the same way, outside any generation
(refused, and logged once, while the group has members).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from typing import Any

from fabric import protocol as P
from fabric import wire
from fabric.client.consumer_fetch import BUFFERED_BYTES_MAX, FETCH_BYTES_MAX, PARTITION_FETCH_BYTES_MAX
from fabric.config import LoomConfig
from fabric.errors import RemoteError
from fabric.waker import Waker
from fabric.rpc import DEFER
from nodes.base import Node, stopping_refusal
from nodes.consumer_instance import OPS, Answer, Framed, Instance, InstanceHost, check_op_header

log = logging.getLogger(__name__)

IDLE_CHECK_INTERVAL_MS = 500
# SIGTERM: how long the instances get to answer, commit and leave their groups (a leave waits
# 2 s at most): well inside the supervisor's 15 s before SIGKILL, and the test harness's 10 s
DRAIN_TIMEOUT_MS = 8000
STOPPING_MESSAGE = ("the consumer service is stopping: its consumer instances leave their groups; make the "
                    "instance again on another consumer service (the gateway does), then ask again")
CONFIG_TYPES: dict[str, type] = {
    "auto_offset_reset": str, "enable_auto_commit": bool, "auto_commit_interval_ms": int,
    "session_timeout_ms": int, "heartbeat_interval_ms": int, "rebalance_timeout_ms": int,
    "assignor": str, "client_id": str, "idle_timeout_ms": int,
    "owner": str,  # who made it (a gateway: "gateway:NODE"), shown by CONSUMER_LIST; not the consumer's
}


# an instance's share of ``services.consumer_buffer_bytes_max``: at least this (a share below
# a few batches reads in small steps), at most what the client library fetches ahead alone
INSTANCE_BUFFER_BYTES_MIN = 256 * 1024


def fetch_limits(services: Any) -> dict[str, int]:
    """The fetch bounds of each hosted instance's GroupConsumer: its share of the service's
    buffer budget (what it fetches ahead -- buffered, with what a cut batch left decoded, and
    in flight -- across every broker), its
    FETCH and partition caps no larger. Static: an instance made when the service is full reads
    with the same share as the first one, and the service's total stays within the budget
    (floor aside: ``INSTANCE_BUFFER_BYTES_MIN`` times ``consumer_instances_max``)."""
    share = max(INSTANCE_BUFFER_BYTES_MIN,
                min(BUFFERED_BYTES_MAX, services.consumer_buffer_bytes_max // services.consumer_instances_max))
    return {"buffered_bytes_max": share, "fetch_bytes_max": min(FETCH_BYTES_MAX, share),
            "partition_fetch_bytes_max": min(PARTITION_FETCH_BYTES_MAX, share)}


class ConsumerService(Node):
    role = "consumer"

    def __init__(self, config: LoomConfig, name: str, **kw: Any) -> None:
        super().__init__(config, name, **kw)
        self.instance_host = InstanceHost(name, config.bootstrap(), config.services.consumer_instance_idle_timeout_ms,
                                          self.fail_from_thread, fetch_limits(config.services))
        self.instances: dict[tuple[str, str], Instance] = {}
        self._done: deque[tuple[wire.Request, dict | Framed | None, RemoteError | None]] = deque()
        self._forgets: deque[tuple[str, str]] = deque()  # instances that failed to start (any thread)
        self._waker = Waker()
        self.reactor.add_waker(self._waker, self._on_wake)
        self.server.route(P.CONSUMER_CREATE, self._on_create)
        self.server.route(P.CONSUMER_LIST, self._on_list)
        for cmd in OPS:
            self.server.route(cmd, self._on_op)
        self.reactor.call_every(IDLE_CHECK_INTERVAL_MS, self._expire_idle)
        self.metrics.add_collector(lambda: (("loom_consumer_service_instances", (), len(self.instances)),))

    # -- answers from instance threads ---------------------------------------------------------
    def _answer(self, req: wire.Request) -> Answer:
        def answer(header: dict | Framed | None, err: RemoteError | None) -> None:
            self._done.append((req, header, err))
            self._waker.wake()
        return answer

    def _on_wake(self) -> None:
        while self._forgets:
            self._forget(*self._forgets.popleft())
        while self._done:
            req, header, err = self._done.popleft()
            if isinstance(header, Framed):
                self.server.reply(req, header.header, header.payloads)
            elif err is None:
                self.server.reply(req, header)
            else:
                self.server.reply_error(req, err.code, err.message)

    # -- requests ----------------------------------------------------------------------------------
    def _on_create(self, req: wire.Request) -> Any:
        self.take_request(req, STOPPING_MESSAGE)
        group = req.get("group", str)
        name = req.get("instance", str, "") or f"{self.name}-{os.urandom(6).hex()}"
        if not 1 <= len(group) <= P.GROUP_ID_LEN_MAX or len(name) > P.GROUP_ID_LEN_MAX:
            raise RemoteError(P.MALFORMED_REQUEST, f"group and instance names have 1 to {P.GROUP_ID_LEN_MAX} characters")
        if (group, name) in self.instances:
            raise RemoteError(P.CONSUMER_INSTANCE_EXISTS, f"instance {name!r} of group {group!r} already exists")
        if len(self.instances) >= self.config.services.consumer_instances_max:
            raise RemoteError(P.BUFFER_FULL, f"{self.name} already hosts {len(self.instances)} instances")
        config = dict(req.get("config", dict, {}))
        for key, value in config.items():
            kind = CONFIG_TYPES.get(key)
            if kind is None:
                raise RemoteError(P.INVALID_CONFIG, f"unknown consumer config {key!r} (known: {', '.join(sorted(CONFIG_TYPES))})")
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise RemoteError(P.INVALID_CONFIG, f"consumer config {key} must be {kind.__name__}")
        config.setdefault("client_id", name)
        inst = Instance(self.instance_host, group, name, config, self.clock.now_ms())
        self.instances[(group, name)] = inst
        inst.start()
        inst.submit("create", {}, self._created(req, group, name))
        return DEFER

    def _created(self, req: wire.Request, group: str, name: str) -> Answer:
        inner = self._answer(req)

        def answer(header: dict | None, err: RemoteError | None) -> None:
            if err is not None:  # the instance could not start: forget it (on the reactor, in _on_wake)
                self._forgets.append((group, name))
            inner(header, err)
        return answer

    def _forget(self, group: str, name: str) -> None:
        inst = self.instances.pop((group, name), None)
        if inst is not None:
            inst.stop()

    def _on_op(self, req: wire.Request) -> Any:
        self.take_request(req, STOPPING_MESSAGE)
        key = (req.get("group", str), req.get("instance", str))
        inst = self.instances.get(key)
        if inst is None:
            raise RemoteError(P.UNKNOWN_CONSUMER_INSTANCE, f"no consumer instance {key[1]!r} in group {key[0]!r} on {self.name}")
        op = OPS[req.command]
        check_op_header(op, req.header)
        owner = req.header.get("owner")
        if op == "delete" and owner is not None and owner != inst.owner:  # not the instance the caller listed
            raise RemoteError(P.UNKNOWN_CONSUMER_INSTANCE, f"no consumer instance {key[1]!r} in group {key[0]!r} "
                                                           f"made by {owner!r} on {self.name}")
        inst.last_used_ms = self.clock.now_ms()
        header = req.header if op != "fetch" else {**req.header, "_received": time.monotonic()}
        inst.submit(op, header, self._answer(req))
        if op == "delete":
            del self.instances[key]
        self.counters[f"instance_{op}"] += 1
        return DEFER

    def _on_list(self, req: wire.Request) -> dict:
        now = self.clock.now_ms()
        return {"instances": [{"group": g, "instance": n, "idle_ms": now - i.last_used_ms,
                               "idle_timeout_ms": i.idle_timeout_ms, "owner": i.owner}
                              for (g, n), i in sorted(self.instances.items())]}

    def _expire_idle(self) -> None:
        now = self.clock.now_ms()
        for key, inst in list(self.instances.items()):
            if now - inst.last_used_ms > inst.idle_timeout_ms:
                log.info("consumer instance %s/%s idle for %d ms: closed", key[0], key[1], now - inst.last_used_ms)
                del self.instances[key]
                inst.stop()
                self.counters["instances_expired"] += 1

    # -- stats / lifecycle ---------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {"instances": len(self.instances), "instances_max": self.config.services.consumer_instances_max}

    def drain(self) -> None:
        """SIGTERM/SIGINT (``Node.run``, the reactor still usable): see the module doc."""
        log.info("stopping: closing %d consumer instances (at most %d ms)", len(self.instances), DRAIN_TIMEOUT_MS)
        refusal = stopping_refusal(STOPPING_MESSAGE)
        for inst in self.instances.values():
            inst.stop(refusal)
        self.drive_until(lambda now_ms: (not self._done and self.quiet(now_ms)
                                         and not any(i.is_alive() for i in self.instances.values())),
                         self.clock.now_ms() + DRAIN_TIMEOUT_MS)
        left = [f"{g}/{n}" for (g, n), i in self.instances.items() if i.is_alive()]
        if left:
            log.warning("stopping: consumer instances %s did not close in %d ms", left, DRAIN_TIMEOUT_MS)

    def close(self) -> None:
        for inst in self.instances.values():
            inst.stop()
        # one wait for them all, none after a drain that gave them theirs (the supervisor's
        # SIGKILL comes 15 s after SIGTERM)
        deadline = time.monotonic() + (0 if self.draining else 5)
        for inst in self.instances.values():
            inst.join(timeout=max(0.0, deadline - time.monotonic()))
        self.reactor.remove_waker(self._waker)
        self._waker.close()
        super().close()
