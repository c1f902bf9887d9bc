"""The coordinator-silence rules of metadata asks: when the coordinator went silent (an ask of
it timed out, or its connection failed or was refused), the other endpoints are asked first
for a backoff, and the coordinator is then probed briefly; brokers the latest metadata says are
dead are asked last. ``CoordinatorSilence`` keeps that state (shared by the clients of several
threads); ``others_may_answer`` says whether another endpoint is left to ask instead. The asks
themselves are fabric/client/bootstrap.py's (``fetch_metadata``, ``metadata_endpoint``) and the
clients' own metadata refreshes.
"""

from __future__ import annotations

import threading
from typing import Callable

from fabric.errors import ConnectionRefused, RemoteError, RequestTimeout
from fabric.metadata import ClusterMetadata

COORDINATOR_SILENT_BACKOFF_MS_MIN = 1000   # brokers first for this long after the coordinator went silent
COORDINATOR_SILENT_BACKOFF_MS_MAX = 10000  # doubled at each further silence, up to this
COORDINATOR_PROBE_TIMEOUT_MS = 500  # the ask of a silent coordinator once its backoff is over
COORDINATOR_ASK_TIMEOUT_MS = 1000  # any ask of the coordinator while a broker could be asked instead


class CoordinatorSilence:
    """Whether the coordinator went silent: a metadata ask of it timed out or its connection
    failed or was refused. For a backoff from then (``COORDINATOR_SILENT_BACKOFF_MS_MIN``,
    doubled at each silence in a row up to ``..._MAX``) metadata is asked of the other
    endpoints first -- with the coordinator's process dead, every refresh spent its whole
    timeout (3 s) there before a broker's copy was asked; then the coordinator is asked
    again, for at most ``COORDINATOR_PROBE_TIMEOUT_MS`` (a live one answers in ms; a dead one
    held each such refresh, and a gateway's produce requests behind it, for the whole timeout
    again). The silence ends at once when the coordinator answers anything, or when metadata
    names another coordinator (endpoint, or process: ``state_id``) than the one that went
    silent. Times are ms of the caller's monotonic clock. Thread-safe, and may be shared by
    the clients of several threads on one clock (a gateway's request threads: what one learnt,
    the others need not wait for); its calls come with metadata asks only, never per request."""

    def __init__(self, down: Callable[[str], bool] | None = None) -> None:
        """``down(endpoint)``: whether another watcher (a gateway's health watcher, which PINGs
        every node) sees that node down now: it is asked after the others (``order``)."""
        self._down = down
        self._lock = threading.Lock()
        self._known: tuple[str, str] = ("", "")  # (coordinator, state_id) of the latest metadata seen
        self._known_cluster_id, self._known_version = "", -1  # of that metadata (versions only grow)
        self._silent: tuple[str, str] | None = None  # that of the coordinator that went silent
        self._backoff_ms = 0
        self._until_ms = 0
        self._answered = ""  # the endpoint that answered last
        self._answered_at: tuple[str, int] = ("", 0)  # the coordinator, and when (ms) it answered last
        self._dead: frozenset[str] = frozenset()  # endpoints of brokers the latest metadata says are dead

    def seen(self, md: ClusterMetadata) -> None:
        """Metadata taken, from any node: one naming another coordinator ends the silence. One
        naming none (a client's before its first answer) tells nothing: shared, it ended the
        silence of every client; nor does one older than the latest seen of the same cluster (a
        lower version: another client's, kept since its last refresh -- naming the coordinator's
        process before a restart, it ended the silence of the process after)."""
        if not md.coordinator:
            return
        dead = md.dead_endpoints()
        with self._lock:
            if md.cluster_id == self._known_cluster_id and md.version < self._known_version:
                return
            self._known_cluster_id, self._known_version = md.cluster_id, md.version
            self._known, self._dead = (md.coordinator, md.state_id), dead
            if self._silent is not None and self._silent != self._known:
                self._silent = None

    def heard(self, endpoint: str, error: Exception | None, now_ms: int, sent_ms: int | None = None) -> None:
        """A metadata ask of ``endpoint`` sent at ``sent_ms`` (default: taken for ``now_ms``)
        ended with ``error`` (None: a reply) at ``now_ms``. Any answer of the node (a reply,
        ``RemoteError``) ends its silence; a timeout, a connection lost or refused (each a
        ``RequestTimeout``: a refusal does not tell a dead coordinator from one restarting)
        of the coordinator begins one, or doubles its backoff when the ask was sent once that
        was over -- but for a refusal, which ended at once: the backoff is the shortest again,
        and a coordinator restarting is probed (for nothing) until it listens -- one sent before (another thread's, however late it ends) does not, nor does
        one sent before the coordinator last answered (another thread's ask). Other errors
        (found by the client alone) tell nothing."""
        with self._lock:
            if error is None or isinstance(error, RemoteError):
                self._answered = endpoint
                if endpoint == self._known[0]:
                    last_ms = self._answered_at[1] if self._answered_at[0] == endpoint else now_ms
                    self._answered_at = (endpoint, max(now_ms, last_ms))
                if self._is_silent(endpoint):
                    self._silent = None
                return
            if not isinstance(error, RequestTimeout) or endpoint != self._known[0]:
                return
            if self._answered_at[0] == endpoint and (now_ms if sent_ms is None else sent_ms) < self._answered_at[1]:
                return  # it answered an ask sent after this one (another thread's): not silent
            if self._silent != self._known:
                self._silent, self._backoff_ms = self._known, COORDINATOR_SILENT_BACKOFF_MS_MIN
            elif (now_ms if sent_ms is None else sent_ms) >= self._until_ms:
                # a refused probe cost nothing (it ended at once): probed as often as at first, a
                # coordinator restarting is seen back within the shortest backoff of listening
                self._backoff_ms = COORDINATOR_SILENT_BACKOFF_MS_MIN if isinstance(error, ConnectionRefused) \
                    else min(2 * self._backoff_ms, COORDINATOR_SILENT_BACKOFF_MS_MAX)
            else:
                return
            self._until_ms = now_ms + self._backoff_ms

    def _is_silent(self, endpoint: str) -> bool:
        """``silent``, with the lock held."""
        return self._silent is not None and self._silent[0] == endpoint

    def silent(self, endpoint: str) -> bool:
        """Whether ``endpoint`` is the coordinator that went silent and has not answered since."""
        with self._lock:
            return self._is_silent(endpoint)

    def timeout_ms(self, endpoint: str, timeout_ms: int, brokers_left: bool = True) -> int:
        """How long to wait for ``endpoint``'s answer while ``brokers_left`` (another endpoint
        may be asked instead): ``COORDINATOR_PROBE_TIMEOUT_MS`` at most while it is the
        coordinator gone silent or seen down by ``down``, ``COORDINATOR_ASK_TIMEOUT_MS`` at most while it is the
        coordinator (one just killed held the first refresh of every client the whole timeout,
        one process after the other); else, and with nothing else to ask (a probe that short
        never heard a coordinator back but slow), ``timeout_ms``."""
        if not brokers_left:
            return timeout_ms
        with self._lock:
            silent = self._is_silent(endpoint)
            coordinator = endpoint == self._known[0]
        if silent or coordinator and self._down is not None and self._down(endpoint):
            return min(timeout_ms, COORDINATOR_PROBE_TIMEOUT_MS)
        return min(timeout_ms, COORDINATOR_ASK_TIMEOUT_MS) if coordinator else timeout_ms

    def order(self, endpoints: list[str], prefer: str | None, now_ms: int) -> list[str]:
        """``endpoints`` in the order to ask them: ``prefer`` (the coordinator; default: the one
        the latest metadata seen names, when listed) first, or last within its backoff or while
        ``down`` says so of it silent (not probed at its backoff's end; not silent, it is asked
        first all the same, briefly: ``timeout_ms`` -- it is the source of truth, and the
        watcher takes a busy node for down too, while the brokers' copies lag a topic just made
        through it); the others from the one that answered last, those of brokers the
        metadata says are dead, and then those ``down`` says are, after the rest (a dead broker
        first in the list held every ask the whole timeout too, the coordinator skipped or not)."""
        down = self._down or _never_down
        with self._lock:
            if not prefer and self._known[0] in endpoints:
                prefer = self._known[0]  # another client's (shared): this one has no metadata yet
            others = [e for e in endpoints if e != prefer]
            if self._answered in others:
                at = others.index(self._answered)
                others = others[at:] + others[:at]
            dead = self._dead
        others.sort(key=lambda e: (e in dead, down(e)))  # stable: the live ones in the same order
        if not prefer:
            return others
        last = self.skips(prefer, now_ms) or down(prefer) and self.silent(prefer)
        return others + [prefer] if last else [prefer] + others

    def skips(self, endpoint: str, now_ms: int) -> bool:
        """Whether ``endpoint`` is to be asked after the others at ``now_ms``: within its backoff."""
        with self._lock:
            return self._is_silent(endpoint) and now_ms < self._until_ms


def _never_down(endpoint: str) -> bool:
    return False


def others_may_answer(metadata: ClusterMetadata, endpoints: list[str], endpoint: str) -> bool:
    """Whether an endpoint besides ``endpoint`` may answer a metadata ask instead: one that
    ``metadata`` does not say is dead (``CoordinatorSilence.timeout_ms``'s ``brokers_left``; with
    every broker dead, a silent coordinator's short probe never heard it back but slow)."""
    dead = metadata.dead_endpoints()
    return any(e != endpoint and e not in dead for e in endpoints)
