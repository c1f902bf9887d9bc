"""Consumer instances the gateway left behind on a consumer service it saw down, when it made
them again on a live one (nodes/gateway/agent_instances.py). A service that was only paused
(SIGSTOP, a stall longer than the health watcher's patience) still hosts the old instance and,
resumed, kept it a member of its group: it held partitions nobody fetches -- their records were
not delivered -- until its idle expiry (5 minutes by default). ``LeftBehind`` deletes each once
its service is seen up again, naming the instance's owner (only the instance this gateway
process made), unless the service restarted meanwhile (another pid: the instance went with the
process) or the gateway's instance of that name is back on that service.

Thread-safety: thread-safe. The table is under a lock; one daemon thread of its own, running
while the table holds something, does the deletes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from fabric import protocol as P
from fabric.client.services import ServiceConsumer
from fabric.errors import CodedError

if TYPE_CHECKING:
    from nodes.gateway.agent_instances import InstanceEntry

log = logging.getLogger(__name__)

LEFT_BEHIND_MAX = 10_000         # instances waiting for their service to be seen up again
LEFT_BEHIND_CHECK_MS = 500       # how often their services are looked at
LEFT_BEHIND_WAIT_MS = 300_000    # for how long: the default idle expiry has ended them by then
LEFT_BEHIND_PING_TIMEOUT_MS = 1000


@dataclass(frozen=True)
class Left:
    group: str
    name: str
    endpoint: str
    service_pid: int | None  # of the process hosting it (None: not known)
    owner: str | None
    until_s: float           # time.monotonic() past which it is no longer looked for


class LeftBehind:
    """``is_up(endpoint)``: the health watcher's view. ``holder(group, name)``: the gateway's
    instance entry of that name now, if any (its ``move_lock`` is held while one is deleted)."""

    def __init__(self, is_up: Callable[[str], bool], holder: Callable[[str, str], InstanceEntry | None]) -> None:
        self.is_up, self.holder = is_up, holder
        self._lock = threading.Lock()
        self._left: list[Left] = []
        self._thread: threading.Thread | None = None

    def add(self, entry: InstanceEntry) -> None:
        """``entry`` is being made again elsewhere: remember the instance on its endpoint now."""
        left = Left(entry.group, entry.name, entry.endpoint, entry.service_pid, entry.config.get("owner"),
                    time.monotonic() + LEFT_BEHIND_WAIT_MS / 1000)
        with self._lock:
            if len(self._left) >= LEFT_BEHIND_MAX:
                log.warning("consumer instance %s/%s left behind on %s not deleted: %d are waiting already",
                            left.group, left.name, left.endpoint, LEFT_BEHIND_MAX)
                return
            self._left.append(left)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="loom-left-behind", daemon=True)
                self._thread.start()

    def waiting(self) -> int:
        with self._lock:
            return len(self._left)

    def _run(self) -> None:
        while True:
            time.sleep(LEFT_BEHIND_CHECK_MS / 1000)
            with self._lock:
                left, self._left = self._left, []
            kept = [x for x in left if not self._look(x)]
            with self._lock:
                self._left += kept
                if not self._left:
                    self._thread = None
                    return

    def _look(self, left: Left) -> bool:
        """``_done``, and True (dropped, the error logged) when it fails unexpectedly -- not a
        coded answer: a socket error, a bug --, which would otherwise end this thread with the
        table's thread still named, and no instance left behind later would be deleted."""
        try:
            return self._done(left)
        except Exception:
            log.exception("consumer instance %s/%s left behind on %s: not deleted", left.group, left.name,
                          left.endpoint)
            return True

    def _done(self, left: Left) -> bool:
        """Whether ``left`` needs nothing more: deleted now, or gone. False: look again later."""
        if time.monotonic() > left.until_s:
            return True
        if not self.is_up(left.endpoint):
            return False
        entry = self.holder(left.group, left.name)
        with entry.move_lock if entry is not None else contextlib.nullcontext():  # no move meanwhile
            if entry is not None and entry.endpoint == left.endpoint:
                return True  # made there again since: that one is the gateway's instance now
            services = ServiceConsumer([left.endpoint], is_down=lambda ep: not self.is_up(ep))
            try:
                pid = services.call(left.endpoint, P.PING, {}, timeout_ms=LEFT_BEHIND_PING_TIMEOUT_MS).get("pid")
                if left.service_pid is not None and pid != left.service_pid:
                    return True  # another process: the instance went with the one that hosted it
                services.instance(left.group, left.name, left.endpoint).delete(owner=left.owner)
            except CodedError as e:
                return e.code == P.UNKNOWN_CONSUMER_INSTANCE  # expired, or deleted already
            finally:
                services.close()
        log.warning("deleted consumer instance %s/%s left behind on %s (made again elsewhere while it was down)",
                    left.group, left.name, left.endpoint)
        return True
