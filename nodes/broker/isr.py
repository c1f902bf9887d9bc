"""A leader's ISR proposals: every check collects the ISR changes due on all partitions this
broker leads into one ALTER_ISR request (Kafka's AlterPartition; at most
``ALTER_ISR_PARTITIONS_MAX`` parts, one request in flight), and applies the answer per part.

What each answer does:
- applied: the committed ISR is installed if its partition epoch is newer than the one the
  partition holds (a push may already have brought something newer: state never goes back).
  The partition epoch itself comes only with the metadata of that commit: an answer "already
  in place" may carry the epoch a follower's restart made, and a leader at that epoch while
  its metadata still named the follower's old process took that process's late reports
  (Partition._new_partition_epoch, Kafka's KIP-903);
- no answer (timeout) or an error that does not say nothing was applied (an internal error:
  the coordinator may have taken the change and failed to store it): the coordinator may have
  applied it, so the proposal stays pending (the HW keeps counting the maximal ISR) and is sent
  again with the next check;
- ``STALE_ISR``: our view of the partition is out of date; the proposal is dropped and the
  metadata refreshed. Nothing else happens: this is a routine race;
- ``FENCED_LEADER_EPOCH`` naming a newer leader epoch than the proposal's: leadership moved
  (auto-rebalance, a failover) and the push has not reached us yet; the proposal is dropped and
  the metadata refreshed, as for ``STALE_ISR`` (re-registering here made every routine
  leadership move look like a restart of the proposer: out of every ISR, all its partitions
  re-elected);
- ``FENCED_LEADER_EPOCH`` at our own epoch or an older one (another broker leads an epoch we
  think ours): the proposal is dropped and the broker re-registers (``on_fenced``);
- anything else: the proposal is dropped.

Not thread-safe: owned by the broker's reactor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from fabric import protocol as P
from fabric.errors import RemoteError
from nodes.broker.partition import Partition

log = logging.getLogger(__name__)

ALTER_ISR_TIMEOUT_MS = 3000
# whole-request errors that say the coordinator applied nothing; any other (a timeout, an
# internal error after it took the change but failed to store it) leaves the outcome unknown
# (STALE_BROKER_EPOCH: we are not the process the coordinator takes for this broker -- a
# duplicate refused, registering again; the metadata or our registration says what to do)
REFUSED_UNAPPLIED = frozenset({P.MALFORMED_REQUEST, P.REQUEST_TOO_LARGE, P.UNKNOWN_COMMAND, P.BUFFER_FULL,
                               P.STALE_BROKER_EPOCH})

# (header, callback(header | None, payloads, error | None)) -> None: sends one ALTER_ISR
SendAlterIsr = Callable[[dict, Callable], None]


@dataclass(slots=True)
class _Proposal:
    part: Partition
    leader_epoch: int
    isr: set[int]
    # the coordinator's partition state it was made on: sent again after a timeout it still
    # names it, so a state newer than it (a follower restarted meanwhile) refuses it as stale
    partition_epoch: int

    def current(self) -> bool:
        """Still the partition's pending proposal in the epoch it was made in."""
        return self.part.is_leader and self.part.leader_epoch == self.leader_epoch and self.part.pending_isr == self.isr


class IsrProposer:
    def __init__(self, broker_id: int, send: SendAlterIsr, *, refresh_metadata: Callable[[], None],
                 on_fenced: Callable[[], None], mark_dirty: Callable[[], None]) -> None:
        self.broker_id = broker_id
        self._send = send
        self._refresh_metadata = refresh_metadata
        self._on_fenced = on_fenced
        self._mark_dirty = mark_dirty
        self._in_flight = False
        self._unanswered: dict[tuple[str, int], _Proposal] = {}  # sent, no answer: send again

    def check(self, partitions: Iterable[Partition], now_ms: int, lag_time_max_ms: int) -> int:
        """Propose the ISR changes due now in one request. Returns the number of parts sent."""
        if self._in_flight:
            return 0
        if self._unanswered:
            # forget proposals of partitions we no longer lead (deleted, moved away): bounded by
            # the partitions we lead, and no closed partition kept alive
            partitions = list(partitions)
            led = set(partitions)
            self._unanswered = {k: p for k, p in self._unanswered.items() if p.part in led and p.current()}
        batch: list[_Proposal] = []
        for part in partitions:
            if len(batch) >= P.ALTER_ISR_PARTITIONS_MAX:
                break  # the rest go with the next check
            if self._unanswered:
                again = self._unanswered.pop((part.topic, part.partition), None)
                if again is not None and again.current():
                    batch.append(again)
                    continue
            new = part.isr_changes(now_ms, lag_time_max_ms)
            if new is not None:
                log.info("%s-%d: proposing isr %s (was %s)", part.topic, part.partition, sorted(new), sorted(part.isr))
                part.propose_isr(new)
                batch.append(_Proposal(part, part.leader_epoch, new, part.partition_epoch))
        if batch:
            self._in_flight = True
            header = {"broker_id": self.broker_id, "parts": [
                {"topic": p.part.topic, "partition": p.part.partition, "leader_epoch": p.leader_epoch,
                 "partition_epoch": p.partition_epoch, "isr": sorted(p.isr)} for p in batch]}
            self._send(header, lambda h, payloads, err: self._on_reply(batch, h, err))
        return len(batch)

    def _on_reply(self, batch: list[_Proposal], header: dict | None, err: RemoteError | None) -> None:
        self._in_flight = False
        if header is None:
            for p in batch:
                if not p.current():
                    continue
                if err is None or err.code not in REFUSED_UNAPPLIED:
                    self._unanswered[(p.part.topic, p.part.partition)] = p
                else:
                    p.part.drop_proposed_isr()
            return
        parts = header.get("parts")
        if not isinstance(parts, list) or len(parts) != len(batch):
            log.error("ALTER_ISR answer with %s parts for %d asked: dropped", type(parts).__name__, len(batch))
            for p in batch:
                if p.current():
                    p.part.drop_proposed_isr()
            return
        stale = fenced = False
        for p, res in zip(batch, parts):
            code = res.get("error") if isinstance(res, dict) else P.MALFORMED_REQUEST
            if code == 0:
                self._install(p, res)
                continue
            if p.current():
                p.part.drop_proposed_isr()
            log.info("%s-%d: isr proposal %s refused: %s %s", p.part.topic, p.part.partition, sorted(p.isr),
                     P.error_name(code) if isinstance(code, int) else code, res.get("message", "") if isinstance(res, dict) else "")
            if code == P.FENCED_LEADER_EPOCH and _deposed_after(p, res):
                stale = True  # leadership moved on after we proposed: news we have not read yet
            else:
                stale |= code == P.STALE_ISR
                fenced |= code == P.FENCED_LEADER_EPOCH
        if fenced:
            self._on_fenced()
        elif stale:
            self._refresh_metadata()

    def _install(self, p: _Proposal, res: dict) -> None:
        part = p.part
        epoch, pepoch, isr = res.get("leader_epoch"), res.get("partition_epoch"), res.get("isr")
        if not (isinstance(epoch, int) and isinstance(pepoch, int) and isinstance(isr, list)):
            log.error("%s-%d: malformed ALTER_ISR answer %r", part.topic, part.partition, res)
            if p.current():
                part.drop_proposed_isr()
            return
        if part.is_leader and epoch == part.leader_epoch and pepoch > part.partition_epoch:
            part.update_isr(isr)  # the epoch with the metadata naming who it was decided on
            self._mark_dirty()
        elif p.current():
            part.drop_proposed_isr()  # something newer (a push) has already been applied


def _deposed_after(p: _Proposal, res: Any) -> bool:
    """A FENCED_LEADER_EPOCH answer naming a leader epoch newer than the one the proposal was
    made in: the coordinator moved leadership (auto-rebalance, a failover) and its push has not
    reached us yet. Only a refusal that contradicts our epoch means we missed our own fencing."""
    epoch = res.get("leader_epoch") if isinstance(res, dict) else None
    return isinstance(epoch, int) and not isinstance(epoch, bool) and epoch > p.leader_epoch
