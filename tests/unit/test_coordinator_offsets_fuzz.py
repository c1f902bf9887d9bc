"""The committed-offsets queue under random interleavings, against a model of its log: commits
of several groups (small and large, forward and, as an administrator, backward), group
deletions, snapshots, ticks, and appends answered in any order with success, a refusal
before the write, a timeout (the request lost: nothing written) or not yet, while time moves
past deadlines. After each run, with every append finally answered: every commit and deletion
was answered exactly once; nothing is left counted as waiting; and the table is exactly what a
restart would rebuild by reading the appends the brokers acknowledged, in order. A snapshot
queued behind a commit once stopped the coordinator (the append's byte bound read a size the
snapshot job lacks) -- no test queued one there. The real GroupCoordinator and OffsetStore on
a FakeGroupContext with a RecordingClient; seeded, so a failure repeats."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fabric import protocol as P
from fabric.errors import RequestTimeout
from fabric.rpc import DEFER
from nodes.coordinator.offsets import OFFSETS_TOPIC, RETRY_MS
from nodes.coordinator.offsets_loader import decode_record
from tests.unit.fakes import loaded_group_coordinator, offsets_records, request

GROUPS = ["g0", "g1", "g2", "g3", "g4"]
STEPS = 400


def _run(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    gc, context, client = loaded_group_coordinator(tmp_path)
    store = gc.offsets
    answers: dict[int, list] = {}  # request id -> every answer its done callback got
    log: dict[int, list[tuple[bytes | None, bytes]]] = {}  # offsets partition -> acknowledged records
    next_offset: dict[int, int] = {}
    ids = iter(range(1_000_000))

    def done_for(i: int):  # noqa: ANN202
        answers[i] = []
        return lambda err: answers[i].append(err)

    def answer_one(ok_only: bool) -> None:
        i = client.unanswered[0] if ok_only else rng.choice(client.unanswered)
        cmd, header, payloads, cb = client.sent[i]
        client.unanswered.remove(i)
        if cmd != P.PRODUCE:
            cb({"parts": [[t, p, 0, 1 << 40] for t, p, _ in header["parts"]]}, [], None)  # log-end lookups
            return
        q = header["parts"][0][1]
        assert header["parts"][0][0] == OFFSETS_TOPIC
        roll = 0 if ok_only else rng.random()
        if roll < 0.7:
            base = next_offset.get(q, 0)
            records = offsets_records(payloads[0], base)
            log.setdefault(q, []).extend((r.key, r.value) for r in records)
            next_offset[q] = base + len(records)
            cb({"results": [[base, 0, "", 0]]}, [], None)
        elif roll < 0.85:
            cb({"results": [[-1, P.NOT_ENOUGH_REPLICAS, "isr [1]"]]}, [], None)  # refused before the write
        else:
            cb(None, [], RequestTimeout("no reply"))  # modelled as lost before the broker read it

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
            answers[id(req)] = []
        elif op < 0.45:
            req = request(P.DELETE_GROUP, group=group)
            try:
                gc._on_delete_group(req)
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
        elif store.pending_count or any(q.items for q in store._queues.values()):
            context.reactor.advance(RETRY_MS)
        else:
            break
    assert store.pending_count == 0 and store._pending_bytes == 0 and not store.groups_in_flight()
    replies: dict[int, int] = {}
    for req, _h, _p in context.server.replies:
        replies[id(req)] = replies.get(id(req), 0) + 1
    assert all(n == 1 for n in replies.values()), "a request answered more than once"
    # what a restart rebuilds from the acknowledged appends, in log order
    rebuilt: dict[str, dict[tuple[str, int], int]] = {}
    for q in sorted(log):
        for key, value in log[q]:
            for group, topic, p, offset, *_ in decode_record(key, value):
                table = rebuilt.setdefault(group, {})
                if offset is None:
                    table.pop((topic, p), None)
                else:
                    table[(topic, p)] = offset
    rebuilt = {g: t for g, t in rebuilt.items() if t}
    have = {g: {tp: c.offset for tp, c in t.items()} for g, t in store.table.items() if t}
    assert have == rebuilt, f"seed {seed}: the table is not what the log says"


@pytest.mark.parametrize("seed", range(30))
def test_the_offsets_queue_under_random_interleavings(tmp_path: Path, seed: int) -> None:
    _run(tmp_path, seed)
