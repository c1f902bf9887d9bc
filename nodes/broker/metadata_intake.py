"""Which metadata a broker takes: the coordinator's pushes (PUB/SUB: a version, a delta, a
full snapshot) judged against the metadata it holds and against ``MetadataGuard`` (its own
cluster's coordinator, no older coordinator state), and the full snapshot it asks for when a
push shows a gap -- one request at a time, a refused one asked again with a backoff. What it
takes goes to ``Broker._install_metadata``; registration, which brings the first metadata, is
the broker's own (nodes/broker/node.py).

``MetadataIntakeMixin`` is that part of ``Broker``: its state is the broker's own (set by
``Broker.__init__``). Not thread-safe: everything runs on the reactor's thread.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Callable

from fabric import protocol as P
from fabric import wire
from fabric.errors import MalformedFrame, RemoteError, RequestTimeout
from fabric.metadata import UNREADABLE_METADATA, ClusterMetadata, PartitionInfo

if TYPE_CHECKING:
    from fabric.config import LoomConfig
    from fabric.faults import FaultRules
    from fabric.reactor import Reactor, Timer
    from fabric.rpc import RpcClient
    from nodes.broker.identity import MetadataGuard

log = logging.getLogger(__name__)

METADATA_REQUEST_TIMEOUT_MS = 2000
METADATA_RETRY_MS = 200  # a refused snapshot request is made again after this, doubling
METADATA_RETRY_MAX_MS = 2000
METADATA_PUSH_KINDS = (P.PUB_METADATA, P.PUB_METADATA_DELTA, P.PUB_METADATA_VERSION)


class MetadataIntakeMixin:
    """``Broker``'s intake of the coordinator's metadata. Part of Broker (its state is the
    broker's own; kept here so that what is taken, and when a snapshot is asked for, reads
    together)."""

    # the broker's state this part uses (set by Broker.__init__ and nodes.base.Node)
    broker_id: int
    config: LoomConfig
    reactor: Reactor
    counters: Counter[str]
    faults: FaultRules
    coordinator: RpcClient
    guard: MetadataGuard
    _registered: bool
    _dropped_push: dict | None
    _refresh_in_flight: bool
    _refresh_again: bool
    _refresh_retry: Timer | None
    _refresh_backoff_ms: int
    # and what it hands the metadata it takes to (Broker's)
    metadata: ClusterMetadata
    _install_metadata: Callable[[ClusterMetadata, list[PartitionInfo]], None]

    def _refresh_metadata(self) -> None:
        """Ask the coordinator for a full snapshot (after a gap in the deltas, or a STALE_ISR
        refusal); one request at a time. Partition states in it are applied by partition epoch,
        so a snapshot at our own version is applied too (it cannot move anything back). Asked
        for while one is in flight, one more follows it (the answer on its way may predate
        what made us ask). One refused (a full send queue, an error answer) is asked for again
        after METADATA_RETRY_MS, doubling up to METADATA_RETRY_MAX_MS; one that timed out only
        while we have no metadata at all -- otherwise the coordinator's version pushes bring
        the next one (every REPUBLISH_INTERVAL_MS, and at once when our subscription comes
        back after a restart or a cut), and requests made while it is unreachable would only
        queue up on the connection, each answered with a whole snapshot when it returns."""
        if self._refresh_in_flight:
            self._refresh_again = True
            return
        self._refresh_in_flight = True
        self._refresh_again = False
        if self._refresh_retry is not None:  # this request does what the retry would
            self._refresh_retry.cancel()
            self._refresh_retry = None

        def done(header: dict | None, payloads: list, err: RemoteError | None) -> None:
            self._refresh_in_flight = False
            readable, update = (False, None) if header is None else self._read_answer(header, "metadata")
            if not readable:  # an error answer, or one we cannot read: as refused
                self._refresh_again = False
                if not isinstance(err, RequestTimeout) or self.metadata.version < 0:
                    self._refresh_retry = self.reactor.call_later(self._refresh_backoff_ms, self._refresh_retried)
                    self._refresh_backoff_ms = min(2 * self._refresh_backoff_ms, METADATA_RETRY_MAX_MS)
                return
            self._refresh_backoff_ms = METADATA_RETRY_MS
            if update is not None:
                self._install_metadata(*update)
            if self._refresh_again:
                self._refresh_metadata()
        self.coordinator.request(P.METADATA, {"broker_id": self.broker_id}, callback=done,
                                 timeout_ms=METADATA_REQUEST_TIMEOUT_MS)

    def _refresh_retried(self) -> None:
        self._refresh_retry = None
        self._refresh_metadata()

    def _on_sub(self, frames: list[bytes]) -> None:
        try:
            msg = wire.decode_pub(frames, METADATA_PUSH_KINDS)
        except MalformedFrame:
            self.counters["sub_malformed"] += 1
            return
        if self.faults.blocks(self.config.coordinator_name):
            return
        if not self._registered:
            self._dropped_push = msg.header  # our registration's answer may be older
            return
        try:
            raw = msg.header
            version = raw["version"]
            if not isinstance(version, int):
                raise TypeError("version must be an integer")
            if self.guard.refuses(raw.get("cluster_id"), raw.get("state_id"), version):
                return  # another cluster's coordinator, or an older state's: keep what we have
            if msg.kind == P.PUB_METADATA_VERSION:
                if self._shows_gap(raw):
                    self._refresh_metadata()  # we missed a delta, or the coordinator restarted
                return
            update = self._delta_update(raw) if msg.kind == P.PUB_METADATA_DELTA else self._snapshot_update(raw)
        except UNREADABLE_METADATA as e:  # only reading the push: a bug while applying it stops the node
            self.counters["sub_malformed"] += 1
            log.warning("unreadable metadata push (%s): %s", msg.kind, e)
            return
        if update is not None:
            self._install_metadata(*update)

    def _shows_gap(self, raw: dict) -> bool:
        """A push's version is past ours, or it is another coordinator process's (or its version
        is unreadable): ours is out of date."""
        version = raw.get("version")
        return not isinstance(version, int) or version > self.metadata.version or \
            raw.get("state_id", self.metadata.state_id) != self.metadata.state_id

    def _delta_update(self, raw: dict) -> tuple[ClusterMetadata, list[PartitionInfo]] | None:
        """The metadata a delta push makes of ours, with the partitions it changed; None when
        it is not newer, or does not apply (then a snapshot is asked for)."""
        if raw["version"] <= self.metadata.version and raw.get("state_id", "") == self.metadata.state_id:
            return None
        try:
            md, changed = self.metadata.apply_delta(raw)
        except ValueError:
            self._refresh_metadata()  # a gap, or another coordinator state: the delta does not apply to ours
            return None
        if not self.guard.admit(md):  # as a snapshot would be judged
            return None
        return md, changed

    def _snapshot_update(self, raw: dict, *, same_version: bool = False) -> tuple[ClusterMetadata, list[PartitionInfo]] | None:
        """A full snapshot newer than ours (or as new, with ``same_version``; or of a coordinator
        state other than ours) with all its partitions; None otherwise. Metadata of another
        cluster, or of an older coordinator state than this broker has accepted, is refused
        (nodes/broker/identity.py)."""
        md = ClusterMetadata.from_wire(raw)
        if not self.guard.admit(md):  # another cluster's, or an older state's: keep what we have
            return None
        if md.state_id == self.metadata.state_id and \
                (md.version < self.metadata.version or (md.version == self.metadata.version and not same_version)):
            return None
        return md, list(md.partitions())

    def _read_answer(self, header: dict, what: str) -> tuple[bool, tuple[ClusterMetadata, list[PartitionInfo]] | None]:
        """The snapshot in a ``what`` answer (``_snapshot_update``, at our version too): (True,
        update), or (False, None) when it cannot be read -- counted, as an unreadable push is."""
        try:
            return True, self._snapshot_update(header["metadata"], same_version=True)
        except UNREADABLE_METADATA as e:  # only reading it: a bug while applying it stops the node
            self.counters["metadata_malformed"] += 1
            log.warning("unreadable metadata in a %s answer: %s", what, e)
            return False, None

    def apply_metadata(self, raw: dict, *, same_version: bool = False) -> None:
        """Apply a full snapshot (``_snapshot_update``)."""
        update = self._snapshot_update(raw, same_version=same_version)
        if update is not None:
            self._install_metadata(*update)
