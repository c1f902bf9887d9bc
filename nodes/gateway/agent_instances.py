"""The gateway agent's consumer instances (a mixin of ``nodes.gateway.agent.GatewayAgent``,
whose module doc says how they are kept, moved and made again): the table of the instances
this process made, and the calls that make, find, call, move and delete them.

Thread-safety: as the agent's: the table under the agent's lock, a move under the entry's.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from fabric import protocol as P
from fabric.client.fetch_ledger import FetchLedger
from fabric.client.services import CALL_TIMEOUT_MS, ServiceConsumer
from fabric.errors import CodedError, ConnectionLost, FabricError, GaveUp, RequestTimeout
from nodes.gateway.left_behind import LeftBehind
from nodes.gateway.translate import translated
from webui.errors import ClusterError

log = logging.getLogger(__name__)

INSTANCES_MAX = 10_000                 # consumer instances the gateway remembers
SERVICE_PING_TIMEOUT_MS = 1000       # asking a consumer service's pid (did it restart?)
# a call's connection to its consumer service ended (killed with the call): how long PING is
# asked again while the supervisor starts it again -- no longer than the lost call would have
# waited; the health watcher seeing it down ends the wait sooner (made again elsewhere)
SERVICE_RESTART_WAIT_MS = CALL_TIMEOUT_MS


@dataclass
class InstanceEntry:
    group: str
    name: str
    endpoint: str
    config: dict[str, Any]
    fmt: str
    topics: list[str] = field(default_factory=list)
    assigned: list[tuple[str, int]] = field(default_factory=list)
    service_pid: int | None = None  # the pid of the service process that made it (None: unknown)
    made: int = 0                   # times made again: a thread whose call failed before that retries
    deleted: bool = False           # a DELETE took it: never made again
    # its fetches, numbered, and whether their answers arrived: every call on it says when one
    # was lost, and the instance sends that one's records again (fabric.client.fetch_ledger)
    fetches: FetchLedger = field(default_factory=FetchLedger, repr=False, compare=False)
    move_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)



class ConsumerInstances:
    """The consumer-instance half of the gateway agent: the state it reads (``_instances``,
    ``_lock``, ``consumer_endpoints``, ``owner``, ``is_up``, ``takes_work``) and the calls it makes
    (``_consumers``, ``_is_down``, ``topic``) are the agent's."""

    _instances: dict[tuple[str, str], InstanceEntry]
    _lock: threading.Lock
    left_behind: LeftBehind  # instances on services seen down, made again elsewhere: deleted when back
    consumer_endpoints: list[str]
    owner: str
    owner_base: str
    is_up: Callable[[str], bool]

    if TYPE_CHECKING:
        def _consumers(self) -> ServiceConsumer: ...
        def _is_down(self, endpoint: str) -> bool: ...
        def takes_work(self, endpoint: str) -> bool: ...  # up and not stopping (its instances leave)
        def topic(self, name: str) -> Any: ...

    def create_instance(self, group: str, name: str | None, config: dict[str, Any], fmt: str) -> InstanceEntry:
        with self._lock:
            full = len(self._instances) >= INSTANCES_MAX
        if full:
            self._forget_expired_instances()
        with self._lock:
            if len(self._instances) >= INSTANCES_MAX:
                raise ClusterError("unavailable", f"the gateway already holds {INSTANCES_MAX} consumer instances")
            if name and (group, name) in self._instances:
                raise ClusterError("instance_exists", f"consumer instance {name!r} of group {group!r} already exists")
        if self.owner:
            config = {**config, "owner": self.owner}
        live = [ep for ep in self.consumer_endpoints if self.takes_work(ep)] or self.consumer_endpoints
        with translated("the consumer services"):
            if len(live) == len(self.consumer_endpoints):
                inst = self._consumers().create(group, name, config)
            else:  # a client of the live services for this one call, closed with it: its sockets
                # are in a reference cycle (its clients' factory holds it), which only a full
                # collection would free -- four descriptors an instance made while one was down
                services = ServiceConsumer(live, is_down=self._is_down)
                try:
                    inst = services.create(group, name, config)
                finally:
                    services.close()
        entry = InstanceEntry(group, inst.name, inst.endpoint, dict(config), fmt, service_pid=inst.pid)
        with self._lock:
            self._instances[(group, inst.name)] = entry
        return entry

    def _forget_expired_instances(self) -> None:
        """Drop the entries of instances their service no longer hosts (idle expiry, a
        restart): only services that answered the list are believed."""
        with self._lock:  # only entries (and their endpoints) older than the list are judged by it
            before = {key: (e, e.endpoint) for key, e in self._instances.items()}
        try:
            listed = self._consumers().list_instances()
        except FabricError:
            return
        hosted = {(ep, i["group"], i["instance"]) for ep, instances in listed.items() for i in instances}
        with self._lock:
            for key, (e, ep) in before.items():
                if self._instances.get(key) is e and e.endpoint == ep and ep in listed \
                        and (ep, e.group, e.name) not in hosted:
                    del self._instances[key]

    def reclaim_instances(self) -> int | None:
        """Delete the consumer instances that an earlier process of this gateway made (tagged
        with its ``owner``: another process id than ours). This process does not know them, so
        their clients get 404 and make them again; left alone they held their names (409 on the
        new create) and, as members of their groups, their partitions until the idle expiry.
        Returns how many were deleted, None when a consumer service did not answer (call again)."""
        if not self.owner or not self.consumer_endpoints:
            return 0
        services = ServiceConsumer(self.consumer_endpoints, is_down=self._is_down)
        try:
            listed = services.list_instances()
            deleted = 0
            for ep, instances in listed.items():
                for i in instances:
                    owner = i.get("owner") or ""
                    if owner.startswith(self.owner_base + ":") and owner != self.owner:  # an earlier process's
                        try:
                            services.instance(i["group"], i["instance"], ep).delete(owner=owner)  # still that one
                            deleted += 1
                        except CodedError as e:
                            log.info("consumer instance %s/%s of a previous gateway process not deleted: %s",
                                     i["group"], i["instance"], e)
            return deleted if len(listed) == len(self.consumer_endpoints) else None
        finally:
            services.close()

    def holder(self, group: str, name: str) -> InstanceEntry | None:
        """The entry of the instance of that name, if this gateway process has one."""
        with self._lock:
            return self._instances.get((group, name))

    def instance(self, group: str, name: str) -> InstanceEntry:
        with self._lock:
            entry = self._instances.get((group, name))
        if entry is None:
            raise _not_found(group, name)
        return entry

    def call_instance(self, group: str, name: str, op: Callable[[Any], Any]) -> Any:
        """Run ``op(instance handle)``. When the instance's service is down, move the instance
        to a live service first; when the service lost it by restarting (it answers "unknown
        instance", or a call to it timed out or lost its connection -- the process was killed
        with it -- and another process than the one that made it answers PING), make it again
        and run ``op`` once more (see the module doc). A call that ended because the health
        watcher saw its service down -- it gave up waiting (``GaveUp``), or the wait for the
        service's restart ended there -- is run once more too: on the instance where it is, if
        the watcher sees the service up again by then (it saw it down only for a moment: a
        health PING lost with a process killed just before), else moved. Raises ClusterError;
        instance_not_found (the entry forgotten) when it was deleted or expired."""
        entry = self.instance(group, name)
        for attempt in range(2):
            with entry.move_lock:  # one move per instance: a second thread finds it moved
                if entry.deleted:
                    raise _not_found(entry.group, entry.name)
                # only then: a slow but live service keeps its instance; a stopping one closes it
                if not self.takes_work(entry.endpoint):
                    self._make_again(entry, elsewhere=True)
                made = entry.made
            handle = self._handle(entry)
            try:
                with translated("the consumer service"):
                    return op(handle)
            except ClusterError as e:
                lost = e.kind == "instance_not_found" or isinstance(e.__cause__, RequestTimeout)
                # killed with the call: it is being started again (PING unanswered meanwhile)
                wait_ms = SERVICE_RESTART_WAIT_MS if isinstance(e.__cause__, ConnectionLost) else 0
                again = self._made_again_after_restart(entry, made, wait_ms) if not attempt and lost else False
                if again:
                    continue
                if e.kind == "instance_not_found":
                    self._forget(entry)
                    raise
                # seen down while it was handled, not only now: a watcher that saw a live
                # service down for a moment sees it up again by now, and the call that gave up
                # on it was taken for a live service's timeout (final) -- a /ws/consume stream closed
                seen_down = again is None or isinstance(e.__cause__, GaveUp)
                if e.kind != "unavailable" or attempt or (self.takes_work(entry.endpoint) and not seen_down):
                    raise
        raise AssertionError("unreachable")

    def _handle(self, entry: InstanceEntry) -> Any:
        """A handle on ``entry``'s instance where it lives now, keeping the entry's fetch ledger."""
        handle = self._consumers().instance(entry.group, entry.name, entry.endpoint)
        handle.fetches = entry.fetches
        return handle

    def _made_again_after_restart(self, entry: InstanceEntry, made: int, wait_ms: int = 0) -> bool | None:
        """After a call made on the ``made``-th making of ``entry`` failed as if its service
        lost it: True when it is to be asked again -- another thread made it again meanwhile, or
        its service restarted (another pid) and it is made again now, on a live service with
        its subscription or assignment. False when it is gone for good (deleted, or expired on
        that same process) or nothing can be told (the service does not answer PING within
        ``wait_ms``); None when the health watcher saw the service down before PING was
        answered (``_service_restarted``)."""
        with entry.move_lock:
            if entry.deleted:
                return False
            if entry.made != made:
                return True
            restarted = self._service_restarted(entry, wait_ms)
            if not restarted:
                return restarted
            self._make_again(entry, elsewhere=False)
            return True

    def _service_restarted(self, entry: InstanceEntry, wait_ms: int = 0) -> bool | None:
        """Whether another process than the one that made ``entry`` serves its endpoint now;
        with ``wait_ms``, PING is asked again until then while unanswered and the health
        watcher does not see the service down (the supervisor is starting it again). None
        (falsy: no telling) when the watcher saw it down before PING was answered."""
        if entry.service_pid is None:
            return False  # made by a service that did not say its pid: no telling
        deadline = time.monotonic() + wait_ms / 1000
        while True:
            try:
                pid = self._consumers().call(entry.endpoint, P.PING, {}, timeout_ms=SERVICE_PING_TIMEOUT_MS).get("pid")
            except RequestTimeout as e:  # each one on a fresh connection (the timed-out one is closed)
                if isinstance(e, GaveUp) or not self.is_up(entry.endpoint):
                    return None
                if time.monotonic() < deadline:
                    continue
                return False
            except FabricError:
                return False
            return type(pid) is int and pid != entry.service_pid

    def _make_again(self, entry: InstanceEntry, elsewhere: bool) -> None:
        """Make ``entry``'s instance again (same group, name and config) on a live consumer
        service -- another one than its own with ``elsewhere`` -- and subscribe or assign it as
        it was; it starts at the group's committed offsets. Caller holds ``entry.move_lock``.
        Raises ClusterError: unavailable without a live service; instance_not_found (the entry
        forgotten) when the name is taken there by an instance this gateway did not make."""
        live = [ep for ep in self.consumer_endpoints if self.takes_work(ep)]
        targets = [ep for ep in live if ep != entry.endpoint] if elsewhere else live or [entry.endpoint]
        if not targets:
            raise ClusterError("unavailable", "no consumer service is up to host the consumer instance")
        services = ServiceConsumer(targets, is_down=self._is_down)
        try:
            with translated("the consumer services"):
                inst = services.create(entry.group, entry.name, entry.config)
                try:
                    if entry.topics:
                        inst.subscribe(entry.topics)
                    elif entry.assigned:
                        inst.assign(entry.assigned)
                except FabricError:
                    _delete_quietly(inst, entry.config.get("owner"))  # not left behind half made
                    raise
        except ClusterError as e:
            if e.kind != "instance_exists":
                raise
            self._forget(entry)  # another gateway process's instance holds the name now
            raise ClusterError("instance_not_found", f"consumer instance {entry.name!r} of group {entry.group!r} "
                                                     "was lost with its consumer service, and another gateway "
                                                     "process has made one of that name since") from e
        finally:
            services.close()
        log.warning("consumer instance %s/%s made again on %s (its service %s %s)", entry.group, entry.name,
                    inst.endpoint, entry.endpoint, "is down" if elsewhere else "restarted")
        if elsewhere:  # a service only paused still hosts the old one: a member of its group once resumed
            self.left_behind.add(entry)
        entry.endpoint, entry.service_pid, entry.made = inst.endpoint, inst.pid, entry.made + 1

    def _forget(self, entry: InstanceEntry) -> None:
        with self._lock:
            if self._instances.get((entry.group, entry.name)) is entry:  # not a newer one of the same name
                del self._instances[(entry.group, entry.name)]

    def delete_instance(self, group: str, name: str) -> None:
        """Delete the instance (it commits with auto-commit and leaves its group). An instance
        its service lost (the service is down, or restarted) is gone already: deleted without
        being made again. Raises ClusterError(instance_not_found) when it expired or another
        request deleted it."""
        entry = self.instance(group, name)
        with entry.move_lock:  # a move under way ends first; none starts after this
            if entry.deleted:
                raise _not_found(entry.group, entry.name)
            entry.deleted = True
        try:
            handle = self._handle(entry)
            with translated("the consumer service"):
                handle.delete()
        except ClusterError as e:
            gone = (e.kind == "instance_not_found" and self._service_restarted(entry)) or \
                (e.kind == "unavailable" and not self.takes_work(entry.endpoint))
            if not gone:
                raise
        finally:
            self._forget(entry)

    def subscribe(self, group: str, name: str, topics: list[str]) -> None:
        for t in topics:
            self.topic(t)
        self.call_instance(group, name, lambda h: h.subscribe(topics) if topics else h.unsubscribe())
        entry = self.instance(group, name)
        # done: the instance has no assigned partitions now (refused while it had, or
        # unsubscribed), so a move must not assign them again
        entry.topics, entry.assigned = list(topics), []

    def assign(self, group: str, name: str, partitions: list[tuple[str, int]]) -> None:
        for t, p in partitions:
            if p >= len(self.topic(t).partitions):
                raise ClusterError("partition_not_found", f"topic {t!r} has no partition {p}")
        self.call_instance(group, name, lambda h: h.assign(partitions))
        entry = self.instance(group, name)
        # done: the instance has no subscription (refused while it had one), even if this
        # gateway missed the end of an unsubscribe that outlasted its call: a move must not
        # subscribe it again
        entry.topics, entry.assigned = [], list(partitions)



def _not_found(group: str, name: str) -> ClusterError:
    return ClusterError("instance_not_found", f"consumer instance {name!r} of group {group!r} not found")


def _delete_quietly(inst: Any, owner: str | None) -> None:
    try:
        inst.delete(owner=owner)
    except FabricError as e:  # its idle expiry ends it
        log.info("consumer instance %s/%s left half made on %s: %s", inst.group, inst.name, inst.endpoint, e)
