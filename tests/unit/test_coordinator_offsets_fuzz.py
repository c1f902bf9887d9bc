"""The committed-offsets queue under random interleavings, against a model of its log: commits
of several groups (small and large, forward and, as an administrator, backward), group
deletions, snapshots, ticks, and appends answered in any order -- written and acknowledged;
refused before the write; lost before the broker read them; written with the answer lost;
written and then not replicated in time (retried); written and then refused for good -- while
time moves past deadlines. After each run, with the cluster healed and every request answered:
nothing is left counted as waiting, no request was answered twice, and the table is exactly
what a restart would rebuild by reading the log in order (a commit that may have landed but
ended unacknowledged has its offsets partition read again). A snapshot queued behind a commit
once stopped the coordinator (the append's byte bound read a size the snapshot job lacks) --
no test queued one there. The real GroupCoordinator and OffsetStore on a FakeGroupContext with
a RecordingClient; seeded, so a failure repeats."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engines import batch as B
from fabric import protocol as P
from fabric.errors import RequestTimeout
from fabric.rpc import DEFER
from nodes.coordinator.offsets import OFFSETS_TOPIC, RETRY_MS
from tests.unit.fakes import loaded_group_coordinator, offsets_log_table, offsets_records, request

GROUPS = ["g0", "g1", "g2", "g3", "g4"]
STEPS = 400


def _run(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    gc, context, client = loaded_group_coordinator(tmp_path)
    store = gc.offsets
    parked: list = []  # requests answered later: each must be answered exactly once
    batches: dict[int, list[tuple[int, bytes]]] = {}  # offsets partition -> (base offset, batch) in the log
    next_offset: dict[int, int] = {}

    def write(q: int, payload: bytes) -> int:
        """The append lands in the partition's log (acknowledged or not): its base offset."""
        base = next_offset.get(q, 0)
        data = bytearray(payload)
        B.set_base_offset(data, base)
        batches.setdefault(q, []).append((base, bytes(data)))
        next_offset[q] = base + len(offsets_records(payload))
        return base

    def answer_one(ok_only: bool) -> None:
        i = client.unanswered[0] if ok_only else rng.choice(client.unanswered)
        cmd, header, payloads, cb = client.sent[i]
        client.unanswered.remove(i)
        if cmd == P.FETCH:  # the offsets partition read again: everything in its log, all replicated
            (_, q, offset, _max) = header["parts"][0]
            end = next_offset.get(q, 0)
            data = b"".join(b for base, b in batches.get(q, []) if base + len(offsets_records(b)) > offset)
            cb({"parts": [[OFFSETS_TOPIC, q, 0, end, end, 0, None]]}, [data], None)
            return
        if cmd != P.PRODUCE:
            cb({"parts": [[t, p, 0, 1 << 40] for t, p, _ in header["parts"]]}, [], None)  # log-end lookups
            return
        q = header["parts"][0][1]
        assert header["parts"][0][0] == OFFSETS_TOPIC
        roll = 0 if ok_only else rng.random()
        if roll < 0.55:
            cb({"results": [[write(q, payloads[0]), 0, "", 0]]}, [], None)
        elif roll < 0.65:
            cb({"results": [[-1, P.NOT_ENOUGH_REPLICAS, "isr [1]"]]}, [], None)  # refused before the write
        elif roll < 0.75:
            cb(None, [], RequestTimeout("no reply"))  # lost before the broker read it
        elif roll < 0.85:
            write(q, payloads[0])
            cb(None, [], RequestTimeout("no reply"))  # written, the answer lost
        elif roll < 0.93:  # written, then not replicated in time: retriable, sent again
            cb({"results": [[write(q, payloads[0]), P.NOT_ENOUGH_REPLICAS_AFTER_APPEND, "isr [1]"]]}, [], None)
        else:  # written, then a refusal for good (its retry's, or this one's)
            cb({"results": [[write(q, payloads[0]), P.STORAGE_ERROR, "disk"]]}, [], None)

    for _ in range(STEPS):
        op = rng.random()
        group = rng.choice(GROUPS)
        if op < 0.4:
            parts = rng.sample([0, 1], rng.choice([1, 2]))
            meta = "m" * rng.choice([0, 10, 3000])
            entries = [["t", p, rng.randrange(0, 1000), meta] for p in parts]
            req = request(P.OFFSET_COMMIT, group=group, generation=-1, offsets=entries)
            try:
                result = gc._on_offset_commit(req)
            except Exception as e:  # noqa: BLE001 - a refusal is an answer (buffer_full, invalid_commit_offset)
                assert getattr(e, "retriable", None) is not None, e
                continue
            assert result is DEFER
            parked.append(req)
        elif op < 0.45:
            req = request(P.DELETE_GROUP, group=group)
            try:
                assert gc._on_delete_group(req) is DEFER
                parked.append(req)
            except Exception as e:  # noqa: BLE001 - unknown_group
                assert getattr(e, "retriable", None) is not None, e
        elif op < 0.5:
            store.snapshot(rng.randrange(len(context.state.topics[OFFSETS_TOPIC].partitions)))
        elif op < 0.8 and client.unanswered:
            answer_one(ok_only=False)
        elif op < 0.9:
            context.reactor.advance(rng.choice([1, RETRY_MS, 1000, 5000]))
        else:
            gc.tick()
    # the cluster heals: every append succeeds, time goes on until nothing is left
    for _ in range(10_000):
        if client.unanswered:
            answer_one(ok_only=True)
        elif store.pending_count or any(q.items for q in store._queues.values()) or store._resyncing:
            context.reactor.advance(RETRY_MS)
        else:
            break
    assert not store._resyncing, f"seed {seed}: a read again never ended"
    assert store.pending_count == 0 and store._pending_bytes == 0 and not store.groups_in_flight()
    replies: dict[int, int] = {}
    for req, _h, _p in context.server.replies:
        replies[id(req)] = replies.get(id(req), 0) + 1
    assert all(replies.get(id(req)) == 1 for req in parked), "a commit or deletion not answered exactly once"
    assert all(n == 1 for n in replies.values()), "a request answered more than once"
    # what a restart rebuilds from the acknowledged appends, in log order
    rebuilt = offsets_log_table(b for q in sorted(batches) for _, b in batches[q])
    have = {g: {tp: c.offset for tp, c in t.items()} for g, t in store.table.items() if t}
    assert have == rebuilt, f"seed {seed}: the table is not what the log says"


@pytest.mark.parametrize("seed", range(100))
def test_the_offsets_queue_under_random_interleavings(tmp_path: Path, seed: int) -> None:
    _run(tmp_path, seed)
