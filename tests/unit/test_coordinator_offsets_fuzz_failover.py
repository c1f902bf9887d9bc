"""The randomized model of tests/unit/test_coordinator_offsets_fuzz.py, with a leader that can
lose an unreplicated tail (a new leader truncates it), a high watermark below the log end, reads
of the partition answered late or with errors, and OFFSET_FETCH checked at every step: an
answer (no commit in flight, no read again) must be what the replicated log says. It found a
read again that never ended when the leader's log shrank below the end it first saw (seeds
234 and 306)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engines import batch as B
from fabric import protocol as P
from fabric.errors import RemoteError, RequestTimeout
from fabric.rpc import DEFER
from nodes.coordinator.offsets import OFFSETS_TOPIC, RETRY_MS
from nodes.coordinator.offsets_client import OffsetsTopicClient
from nodes.coordinator import snapshots as S
from nodes.coordinator.groups import GroupCoordinator
from nodes.coordinator.store import StateStore
from tests.unit.fakes import (FakeGroupContext, RecordingClient, offsets_log_table, offsets_records, request,
                              two_partition_state)

GROUPS = ["g0", "g1", "g2", "g3", "g4"]
STEPS = 400


def _run(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    context = FakeGroupContext(two_partition_state(), store=StateStore(tmp_path))
    client = RecordingClient()
    endpoint_of: dict[int, str] = {}

    class Tagged:  # one per endpoint: remembers where each request went
        def __init__(self, ep: str) -> None:
            self.ep = ep

        def request(self, *a, **k):  # noqa: ANN002, ANN003, ANN202
            rid = client.request(*a, **k)
            endpoint_of[rid - 1] = self.ep
            return rid

        def close(self) -> None:
            pass
    gc = GroupCoordinator(context, OffsetsTopicClient(context, Tagged))
    store = gc.offsets
    gc.offsets.ensure_topic()
    logs: dict[int, list[list]] = {0: [], 1: [], 2: []}   # q -> [base, batch, replicated]

    def end(q: int) -> int:
        return logs[q][-1][0] + len(offsets_records(logs[q][-1][1])) if logs[q] else 0

    def hw(q: int) -> int:
        done = [b for b in logs[q] if b[2]]
        return done[-1][0] + len(offsets_records(done[-1][1])) if done else 0

    def write(q: int, payload: bytes, replicated: bool) -> int:
        base = end(q)
        data = bytearray(payload)
        B.set_base_offset(data, base)
        logs[q].append([base, bytes(data), False])
        if replicated:
            for b in logs[q]:
                b[2] = True
        return base

    def leader_ep(q: int) -> str:
        return client_of.leader_endpoint(OFFSETS_TOPIC, q)

    client_of = store.client

    def answer(i: int, healthy: bool) -> None:
        cmd, header, payloads, cb = client.sent[i]
        client.unanswered.remove(i)
        if cmd == P.FETCH:
            (_, q, offset, _max) = header["parts"][0]
            if endpoint_of[i] != leader_ep(q):
                cb({"parts": [[OFFSETS_TOPIC, q, P.NOT_LEADER, -1, -1, -1, None]]}, [], None)
                return
            if not healthy and rng.random() < 0.2:
                cb(None, [], RequestTimeout("no reply"))
                return
            if offset > end(q):
                cb({"parts": [[OFFSETS_TOPIC, q, P.OFFSET_OUT_OF_RANGE, hw(q), end(q), 0, None]]}, [], None)
                return
            data = b"".join(b for base, b, _ in logs[q] if base + len(offsets_records(b)) > offset)
            cb({"parts": [[OFFSETS_TOPIC, q, 0, hw(q), end(q), 0, None]]}, [data], None)
            return
        if cmd != P.PRODUCE:
            cb({"parts": [[t, p, 0, 1 << 40] for t, p, _ in header["parts"]]}, [], None)
            return
        q = header["parts"][0][1]
        if endpoint_of[i] != leader_ep(q):
            cb({"results": [[-1, P.NOT_LEADER, "not leader"]]}, [], None)
            return
        roll = 0 if healthy else rng.random()
        if roll < 0.55:
            cb({"results": [[write(q, payloads[0], True), 0, "", 0]]}, [], None)
        elif roll < 0.65:
            cb({"results": [[-1, P.NOT_ENOUGH_REPLICAS, "isr [1]"]]}, [], None)
        elif roll < 0.75:
            cb(None, [], RequestTimeout("no reply"))
        elif roll < 0.85:
            write(q, payloads[0], False)
            cb(None, [], RequestTimeout("no reply"))
        elif roll < 0.93:
            cb({"results": [[write(q, payloads[0], False), P.NOT_ENOUGH_REPLICAS_AFTER_APPEND, "isr [1]"]]}, [], None)
        else:
            cb({"results": [[write(q, payloads[0], False), P.STORAGE_ERROR, "disk"]]}, [], None)

    def projection() -> dict[str, dict[tuple[str, int], int]]:
        return offsets_log_table(b for q in sorted(logs) for _, b, rep in logs[q] if rep)

    store.start_loading()
    for _ in range(20):
        for i in list(client.unanswered):
            answer(i, healthy=True)
        context.reactor.advance(RETRY_MS)
    assert store.loaded

    for step in range(STEPS):
        op = rng.random()
        group = rng.choice(GROUPS)
        if op < 0.35:
            parts = rng.sample([0, 1], rng.choice([1, 2]))
            entries = [["t", p, rng.randrange(0, 1000), ""] for p in parts]
            try:
                assert gc._on_offset_commit(request(P.OFFSET_COMMIT, group=group, generation=-1, offsets=entries)) is DEFER
            except RemoteError:
                pass
        elif op < 0.4:
            try:
                gc._on_delete_group(request(P.DELETE_GROUP, group=group))
            except RemoteError:
                pass
        elif op < 0.43:
            store.snapshot(rng.randrange(3))
        elif op < 0.46:  # a new leader: the unreplicated tail is gone
            q = rng.randrange(3)
            logs[q] = [b for b in logs[q] if b[2]]
            ps = context.state.topics[OFFSETS_TOPIC].partitions[q]
            ps.leader = ps.replicas[(ps.replicas.index(ps.leader) + 1) % len(ps.replicas)]
        elif op < 0.5:  # the followers catch up
            for b in logs[rng.randrange(3)]:
                b[2] = True
        elif op < 0.75 and client.unanswered:
            answer(rng.choice(client.unanswered), healthy=False)
        elif op < 0.85:
            context.reactor.advance(rng.choice([1, RETRY_MS, 1000, 5000]))
        else:
            gc.tick()
        # OFFSET_FETCH answers only what the replicated log holds
        for g in GROUPS:
            try:
                got = gc._on_offset_fetch(request(P.OFFSET_FETCH, group=g, partitions=None))
            except RemoteError as e:
                assert e.code == P.UNSTABLE_OFFSET_COMMIT
                continue
            have = {(t, p): o for t, p, o, _m in got["offsets"]}
            want = projection().get(g, {})
            assert have == want, f"seed {seed} step {step}: OFFSET_FETCH of {g} answered {have}, the log says {want}"
    for q in logs:
        for b in logs[q]:
            b[2] = True
    for _ in range(10_000):
        for q in logs:
            for b in logs[q]:
                b[2] = True
        if client.unanswered:
            answer(client.unanswered[0], healthy=True)
        elif store.pending_count or any(qq.items for qq in store._queues.values()) or store._resyncing:
            context.reactor.advance(RETRY_MS)
            gc.tick()
        else:
            break
    assert not store._resyncing, f"seed {seed}: a read again never ended"
    assert store.pending_count == 0 and store._pending_bytes == 0 and not store.groups_in_flight()
    replies: dict[int, int] = {}
    for req, _h, _p in context.server.replies:
        replies[id(req)] = replies.get(id(req), 0) + 1
    assert all(n == 1 for n in replies.values()), "a request answered more than once"
    have_t = {g: {tp: c.offset for tp, c in t.items()} for g, t in store.table.items() if t}
    assert have_t == projection(), f"seed {seed}: the table is not what the log says"


@pytest.mark.parametrize("seed", [*range(120), 234, 306])  # 234, 306: a leader's log that shrank
def test_the_offsets_queue_with_truncation_and_late_reads(tmp_path: Path, seed: int) -> None:
    _run(tmp_path, seed)
