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
from engines.api import StorageFull
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
    def __init__(self, tmp_path: Path, leaders: dict[int, _Leader] | None = None, settle: bool = True) -> None:
        """A coordinator on the state in ``tmp_path`` (a restart if there is one) and ``leaders``."""
        store = StateStore(tmp_path)
        self.context = FakeGroupContext(store.load() if store.path.exists() else two_partition_state(), store=store)
        self.gc, self.client = group_coordinator(self.context)
        self.leaders = leaders or {q: _Leader() for q in range(3)}
        self.lost: list[int] = []  # PRODUCEs that the coordinator saw time out, not yet landed
        self.gc.offsets.ensure_topic()
        self.gc.offsets.start_loading()
        if settle:
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


def test_a_late_append_of_the_previous_run_that_lands_after_the_load_is_read(tmp_path: Path) -> None:
    """The coordinator restarted while an append of its previous run was on its way; it lands
    after the new run read the partition, before the new run's fence."""
    before = _Cluster(tmp_path)
    q = before.gc.offsets.partition_for_group("g")
    before.commit("g", 7)
    before.serve()  # the log-end lookup: the append goes out ...
    assert before.serve(lose=lambda p: p == q) and before.lost  # ... and is held (the coordinator stops)
    after = _Cluster(tmp_path, before.leaders, settle=False)
    after.serve()  # the load reads the partitions (the fences go out)
    assert after.gc.offsets.loaded
    before.land_lost()  # the previous run's append lands now
    after.settle()
    assert after.table() == after.fresh_load() == {"g": {("t", 0): 7}}, "the table lacks what the log holds"


def test_a_new_epoch_is_used_only_once_it_is_stored(tmp_path: Path) -> None:
    """An epoch used before it is durable could be used again after a restart, and a fence of
    that epoch would not fence the appends sent under it."""
    store = StateStore(tmp_path)
    context = FakeGroupContext(two_partition_state(), store=store)
    gc, client = group_coordinator(context)
    gc.offsets.ensure_topic()
    fail = [True]
    save = context.save_state

    def failing_save() -> None:
        if fail[0]:
            raise StorageFull("disk full")
        save()
    context.save_state = failing_save  # type: ignore[method-assign]
    gc.offsets.start_loading()
    for i in list(client.unanswered):  # empty partitions
        client.unanswered.remove(i)
        client.sent[i][3]({"parts": [[OFFSETS_TOPIC, client.sent[i][1]["parts"][0][1], 0, 0, 0, 0, None]]}, [b""], None)
    assert gc.offsets.loaded
    context.reactor.advance(RETRY_MS)
    assert not client.of(P.PRODUCE), "a fence under an epoch that is not stored"
    fail[0] = False
    context.reactor.advance(RETRY_MS)
    fences = client.of(P.PRODUCE)
    assert len(fences) == 3
    stored = store.load().offsets_producer
    for _c, header, payloads, _cb in fences:
        h = B.parse_header(payloads[0])
        assert stored[header["parts"][0][1]] == [h.producer_id, h.producer_epoch]


def test_an_outcome_of_an_append_no_longer_outstanding_is_not_applied(tmp_path: Path) -> None:
    c = _Cluster(tmp_path)
    c.commit("g", 7)
    c.serve()  # the lookup
    q = c.gc.offsets.partition_for_group("g")
    (i,) = [i for i in c.client.unanswered if c.client.sent[i][0] == P.PRODUCE]
    c.client.unanswered.remove(i)
    cb = c.client.sent[i][3]
    base, code, message = c.leaders[q].land(c.client.sent[i][1], c.client.sent[i][2][0])
    cb({"results": [[base, code, message, 0]]}, [], None)
    c.commit("g", 9)
    c.serve()
    cb({"results": [[base, P.STORAGE_ERROR, "a second answer", 0]]}, [], None)  # answered again, late
    assert c.context.counters["offsets_stale_append_outcomes"] == 1
    c.settle()
    assert c.table() == c.fresh_load() == {"g": {("t", 0): 9}}
    assert [h.get("error") for _r, h, _p in c.context.server.replies] == [None, None]


def test_commits_waiting_for_a_fence_that_is_not_written_are_answered_at_their_deadline(tmp_path: Path) -> None:
    """The fence of a start is refused again and again (the partition is not writable): the
    commits behind it wait, and are answered request_timed_out at their deadline, not never."""
    c = _Cluster(tmp_path, settle=False)
    c.serve()  # the load; the fences go out
    c.commit("g", 7)
    for _ in range((COMMIT_TIMEOUT_MS + 5000) // 1000):
        for i in [i for i in c.client.unanswered if c.client.sent[i][0] == P.PRODUCE]:
            c.client.unanswered.remove(i)
            c.client.sent[i][3](None, [], RequestTimeout("no reply"))  # not even answered
        c.serve()
        c.context.reactor.advance(1000)
        c.gc.tick()
    assert [h.get("error") for _r, h, _p in c.context.server.replies] == [P.REQUEST_TIMED_OUT]


def test_a_state_file_put_back_from_a_copy_does_not_wedge_the_offsets_partitions(tmp_path: Path) -> None:
    """A copy of the state file holds older producer epochs than the brokers know: the fences
    of the epochs used again are refused (or taken for duplicates of the old fences); the
    partitions still end fenced, and commits go on and stay what the log says."""
    first = _Cluster(tmp_path)
    first.commit("g", 5)
    first.settle()
    copy = StateStore(tmp_path).path.read_bytes()
    second = _Cluster(tmp_path, first.leaders)  # a restart: new epochs
    second.commit("g", 6)
    second.settle()
    StateStore(tmp_path).path.write_bytes(copy)  # the older copy is put back
    third = _Cluster(tmp_path, first.leaders)
    third.commit("g", 7)
    third.settle()
    assert [h.get("committed") for _r, h, _p in third.context.server.replies] == [1]
    assert third.table() == third.fresh_load() == {"g": {("t", 0): 7}}
    assert all(qq.fenced for qq in third.gc.offsets._queues.values())
