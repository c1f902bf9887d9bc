"""An append to an offsets partition that reaches the leader after the coordinator gave up on
it (its reply later than APPEND_REPLY_GRACE_MS: the broker paused, the request held in a
queue). It once landed after the log end the read again had seen, so the table lacked it until
the next restart; and a late first send of a commit that a retry had already written landed
after the group's next commit, so a restart moved the committed offset back. The table must
follow the log: the coordinator appends as an idempotent producer and fences what it gave up
on. The real GroupCoordinator and OffsetStore on a FakeGroupContext, against leaders that judge
each append by the broker's idempotent-producer state (nodes/broker/producers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from engines import batch as B
from fabric import protocol as P
from fabric.errors import RemoteError, RequestTimeout
from fabric.rpc import DEFER
from nodes.broker.producers import ProducerStateTable
from nodes.coordinator.offsets import COMMIT_TIMEOUT_MS, OFFSETS_TOPIC, RETRY_MS
from nodes.coordinator.store import StateStore
from tests.unit.fakes import (FakeGroupContext, group_coordinator, offsets_log_table, offsets_records, request,
                              two_partition_state)


class _Leader:
    """One offsets partition's leader: its log and its idempotent-producer state."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, bytes]] = []
        self.producers = ProducerStateTable()

    @property
    def end(self) -> int:
        return self.batches[-1][0] + len(offsets_records(self.batches[-1][1])) if self.batches else 0

    def land(self, header: dict, payload: bytes) -> tuple[int, int, str]:
        part = header["parts"][0]
        h = B.parse_header(payload)
        try:
            dup = self.producers.check(h.producer_id, h.producer_epoch, h.base_sequence, h.record_count,
                                       possibly_written=len(part) == 4 and part[3] == 1)
        except RemoteError as e:
            return -1, e.code, e.message
        if dup is not None:
            return dup, 0, "duplicate"
        base = self.end
        data = bytearray(payload)
        B.set_base_offset(data, base)
        self.batches.append((base, bytes(data)))
        self.producers.update(h.producer_id, h.producer_epoch, h.base_sequence, h.record_count, base)
        return base, 0, ""


class _Cluster:
    def __init__(self, tmp_path: Path) -> None:
        self.context = FakeGroupContext(two_partition_state(), store=StateStore(tmp_path))
        self.gc, self.client = group_coordinator(self.context)
        self.leaders = {q: _Leader() for q in range(3)}
        self.lost: list[int] = []  # PRODUCEs that the coordinator saw time out, not yet landed
        self.gc.offsets.ensure_topic()
        self.gc.offsets.start_loading()
        self.settle()

    def serve(self, lose: Callable[[int], bool] = lambda q: False) -> bool:
        """Answer every request sent; a PRODUCE to a partition ``lose`` names is held (the
        coordinator sees it time out). False if there was none."""
        pending = list(self.client.unanswered)
        for i in pending:
            self.client.unanswered.remove(i)
            cmd, header, payloads, cb = self.client.sent[i]
            if cmd == P.FETCH:
                (_, q, offset, _) = header["parts"][0]
                leader = self.leaders[q]
                data = b"".join(b for base, b in leader.batches if base + len(offsets_records(b)) > offset)
                cb({"parts": [[OFFSETS_TOPIC, q, 0, leader.end, leader.end, 0, None]]}, [data], None)
            elif cmd == P.PRODUCE:
                q = header["parts"][0][1]
                if lose(q):
                    self.lost.append(i)
                    cb(None, [], RequestTimeout("no reply"))
                else:
                    base, code, message = self.leaders[q].land(header, payloads[0])
                    cb({"results": [[base, code, message, 0]]}, [], None)
            else:
                cb({"parts": [[t, p, 0, 1 << 40] for t, p, _ in header["parts"]]}, [], None)
        return bool(pending)

    def settle(self, lose: Callable[[int], bool] = lambda q: False, ms: int = 60_000) -> None:
        for _ in range(ms // RETRY_MS):
            self.serve(lose)
            self.context.reactor.advance(RETRY_MS)
            self.gc.tick()

    def land_lost(self) -> None:
        for i in self.lost:
            _cmd, header, payloads, _cb = self.client.sent[i]
            self.leaders[header["parts"][0][1]].land(header, payloads[0])
        self.lost.clear()

    def commit(self, group: str, offset: int) -> None:
        req = request(P.OFFSET_COMMIT, group=group, generation=-1, offsets=[["t", 0, offset, ""]])
        assert self.gc._on_offset_commit(req) is DEFER

    def table(self) -> dict:
        return {g: {tp: c.offset for tp, c in t.items()} for g, t in self.gc.offsets.table.items() if t}

    def fresh_load(self) -> dict:
        return offsets_log_table(b for q in sorted(self.leaders) for _, b in self.leaders[q].batches)


def test_an_append_given_up_on_that_lands_after_the_read_again_is_not_missing_from_the_table(
        tmp_path: Path) -> None:
    c = _Cluster(tmp_path)
    q = c.gc.offsets.partition_for_group("g")
    c.commit("g", 7)
    c.settle(lose=lambda p: p == q, ms=COMMIT_TIMEOUT_MS + 5000)  # every send times out: it is given up
    assert [h.get("error") for _r, h, _p in c.context.server.replies] == [P.REQUEST_TIMED_OUT]
    c.settle()  # the partition is read again (the sends that went out are not in its log yet)
    assert not c.gc.offsets.resyncing("g") and "g" not in c.table()
    c.land_lost()  # ... and now they reach the leader
    c.settle()
    assert c.table() == c.fresh_load(), "the table lacks what the log holds (a restart would show it)"


def test_a_late_first_send_of_a_commit_a_retry_wrote_does_not_land_after_the_next_commit(tmp_path: Path) -> None:
    c = _Cluster(tmp_path)
    q = c.gc.offsets.partition_for_group("g")
    c.commit("g", 7)
    c.serve()  # the log-end lookup: the append goes out
    assert c.serve(lose=lambda p: p == q) and c.lost  # the first send times out (it is still on its way)
    c.settle()  # the retry is written and acknowledged
    c.commit("g", 9)
    c.settle()
    assert c.table() == {"g": {("t", 0): 9}}
    c.land_lost()  # the first send reaches the leader
    c.settle()
    assert c.fresh_load() == {"g": {("t", 0): 9}}, "a restart would move the committed offset back to 7"
