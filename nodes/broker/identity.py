"""Which coordinator a broker takes metadata from (Kafka's meta.properties and its cluster-id
check).

A broker belongs to one cluster: the id (a UUID the coordinator makes once, with its state) of
the first metadata it accepted, kept in ``meta.properties`` in its data directory together with
the highest metadata version it has accepted. It refuses metadata (a snapshot, a delta or a
version beacon alike: each carries the cluster id and the coordinator's state id)

- of another cluster: a coordinator started without its state (a replaced disk, a wrong
  ``data_dir``) has a new cluster id, and acting on its empty metadata would drop every
  partition;
- from a coordinator process (``state_id``) whose first metadata is older than what the broker
  has already accepted: a coordinator restarted from an old copy of its state. Versions only
  grow within one state, so within one coordinator process an older version is only a push
  that arrived late, and is ignored without complaint as before.

A refusal is logged once per coordinator process and shown in STATS (``metadata_refused``);
the broker keeps what it has. Recovery is the operator's call: see docs/replication.md.

The data directory has an id of its own (``directory.id``, Kafka's KIP-858), made and written
before the broker first registers: the broker names it in its registration and heartbeats, and
the coordinator refuses a second live process of one broker id from another directory (two
configs giving the same id to two brokers).

The version is written at most once per ``VERSION_PERSIST_INTERVAL_MS`` (``persist()``, from a
timer), so after a crash the broker may accept a state up to that much older.

Not thread-safe: owned by the broker's reactor.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

from engines.api import EngineError
from engines.durable import replace_file
from fabric.errors import LoomError
from fabric.metadata import ClusterMetadata

log = logging.getLogger(__name__)

FILE_NAME = "meta.properties"
FORMAT_VERSION = 1
VERSION_PERSIST_INTERVAL_MS = 1000
REFUSED_STATES_MAX = 16  # coordinator processes remembered as refused


class IdentityError(LoomError):
    """meta.properties exists but cannot be read: the broker must not guess its cluster."""


def write_properties(path: Path, values: dict[str, str]) -> None:
    """Replace ``path`` atomically and durably with ``key=value`` lines
    (``engines.durable.replace_file``). Raises StorageFull / EngineError."""
    replace_file(path, "".join(f"{k}={v}\n" for k, v in values.items()).encode())


def read_properties(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            out[key.strip()] = value.strip()
    return out


class MetadataGuard:
    """Decides whether metadata may be applied; keeps ``meta.properties`` up to date."""

    def __init__(self, directory: str | os.PathLike, broker_id: int) -> None:
        """Raises IdentityError if ``meta.properties`` is unreadable or names another broker id."""
        self.path = Path(directory) / FILE_NAME
        self.broker_id = broker_id
        self.cluster_id = ""  # "" until the first accepted metadata that carries one
        self.version_seen = -1
        self.directory_id = ""  # the data directory's own, named in registrations and heartbeats
        if self.path.exists():
            try:
                props = read_properties(self.path)
                self.cluster_id = props.get("cluster.id", "")
                self.version_seen = int(props.get("metadata.version", "-1"))
                self.directory_id = props.get("directory.id", "")
                stored_broker = int(props.get("broker.id", str(broker_id)))
            except (OSError, ValueError, UnicodeDecodeError) as e:
                raise IdentityError(f"cannot read {self.path}: {e}") from e
            if stored_broker != broker_id:
                raise IdentityError(f"{self.path} belongs to broker {stored_broker}, not {broker_id}: "
                                    "is data_dir shared between brokers?")
        self.state_id = ""  # the coordinator process whose metadata we take
        self.refused: dict[str, str] = {}  # state id -> reason (insertion-ordered, bounded)
        self.last_refusal = ""
        self._persisted = (self.cluster_id, self.version_seen)
        self._directory_stored = bool(self.directory_id)
        if not self.directory_id:  # a new directory, or one from before directory ids
            self.directory_id = uuid.uuid4().hex
            try:
                self._write()
            except EngineError as e:
                # a full disk: the broker starts all the same, and persist() tries again. Until
                # then a restart makes another id: it is taken once this process is judged dead
                # (its connection closed, or its session), as a broker on a new disk
                log.error("cannot write %s (%s): data directory id %s is not stored yet", self.path, e,
                          self.directory_id)

    def admit(self, md: ClusterMetadata) -> bool:
        """True if ``md`` may be applied (and it is then taken as accepted). False (logged once
        per coordinator process) if it is from another cluster or from an older state than what
        this broker has accepted."""
        if self.refuses(md.cluster_id, md.state_id, md.version):
            return False
        self.state_id = md.state_id
        if md.cluster_id and not self.cluster_id:
            self.cluster_id = md.cluster_id
            log.info("joined cluster %s", self.cluster_id)
            self.version_seen = max(self.version_seen, md.version)
            self.persist()
        self.version_seen = max(self.version_seen, md.version)
        self.last_refusal = ""
        return True

    def refuses(self, cluster_id: Any, state_id: Any, version: int) -> bool:
        """True if metadata of ``cluster_id`` and coordinator state ``state_id`` at ``version``
        must be refused (a snapshot, a delta or a version beacon: each carries these three).
        Records a refusal (logged once per coordinator process); accepts nothing."""
        cluster_id = cluster_id if isinstance(cluster_id, str) else ""
        state_id = state_id if isinstance(state_id, str) else ""
        if state_id and state_id in self.refused:
            return True
        if cluster_id and self.cluster_id and cluster_id != self.cluster_id:
            return self._refuse(state_id, f"refusing metadata from a coordinator of cluster {cluster_id}: this "
                                          f"broker belongs to cluster {self.cluster_id} ({self.path}); was the coordinator "
                                          "started without its state? Keeping the partitions this broker has.")
        if state_id != self.state_id and version < self.version_seen:
            return self._refuse(state_id, f"refusing metadata version {version} from a restarted coordinator: this "
                                          f"broker has accepted version {self.version_seen} ({self.path}); was the "
                                          "coordinator's state restored from an old copy? Keeping the partitions this broker has.")
        return False

    def registration_refused(self, reason: str, hint: str = "was the coordinator started without its state? "
                                                               "Keeping the partitions this broker has.") -> None:
        """The coordinator refused our registration (``reason``, and ``hint`` for the log;
        "" once it accepts one)."""
        if reason and f"the coordinator refused this broker: {reason}" != self.last_refusal:
            log.error("the coordinator refused this broker: %s (%s)", reason, hint)
        if reason or self.last_refusal.startswith("the coordinator refused"):
            self.last_refusal = f"the coordinator refused this broker: {reason}" if reason else ""

    def _refuse(self, state_id: str, reason: str) -> bool:
        """Log and remember a refusal of coordinator state ``state_id``; returns True."""
        log.error("%s", reason)
        self.last_refusal = reason
        if state_id:
            self.refused[state_id] = reason
            while len(self.refused) > REFUSED_STATES_MAX:
                self.refused.pop(next(iter(self.refused)))
        return True

    def persist(self) -> None:
        """Write the cluster id and the highest accepted version if they changed, the directory
        id if it is not stored yet, the whole file if it is gone (a timer calls this every
        VERSION_PERSIST_INTERVAL_MS, and close). Raises StorageFull / EngineError."""
        if self._directory_stored and self.path.exists() and \
                (not self.cluster_id or (self.cluster_id, self.version_seen) == self._persisted):
            return
        self._write()

    def _write(self) -> None:
        """Raises StorageFull / EngineError."""
        values = {"version": str(FORMAT_VERSION), "broker.id": str(self.broker_id), "directory.id": self.directory_id}
        if self.cluster_id:
            values.update({"cluster.id": self.cluster_id, "metadata.version": str(self.version_seen)})
        write_properties(self.path, values)
        self._persisted = (self.cluster_id, self.version_seen)
        self._directory_stored = True
