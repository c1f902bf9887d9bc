"""The follower's path for the replication stream's common message -- one partition, one whole
batch whose CRC matches (``ReplicationSubscriber._apply``, ``append_batch_as_follower``:
the header parsed once, the log end read once) -- takes every decision the general path takes
(``_apply`` batch by batch, ``append_as_follower``). Each scenario runs twice on a fresh leader
and follower: once as the broker runs it, once with the one-batch path turned off; the follower
must end in the same state (log bytes, log end, high watermark, epochs, producers), having sent
the same acknowledgements and fetches and counted the same, and each scenario's outcome is also
checked on its own (so that both paths being wrong the same way fails too)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import pytest

from engines import batch as B
from fabric import protocol as P
from fabric import wire
from fabric.clock import ManualClock
from nodes.broker import replication
from nodes.broker.partition import Partition
from nodes.broker.replication import ReplicationSubscriber
from tests.unit.fakes import FakeReactor, broker_core, loom_handlers, make_batch, replica_fetcher, serve_fetch

F_ID, L_ID = 1, 2
EPOCH = 2
SYNCED_LEO = 4  # the leader's log (epoch 2) that the follower fetched before each scenario
EXCHANGES_MAX = 10
PID = 7


def _stamped(n: int, base: int, epoch: int = EPOCH, pid: int = -1, seq: int = -1) -> bytes:
    data = bytearray(make_batch(n, pid=pid, epoch=0 if pid >= 0 else -1, seq=seq))
    B.set_base_offset(data, base)
    B.set_leader_epoch(data, epoch)
    return bytes(data)


def _message(payloads: list[bytes], *, epoch: int = EPOCH, hw: int = SYNCED_LEO, leo: int | None = None) -> list:
    end = leo if leo is not None else SYNCED_LEO + 2
    return wire.encode_replica(wire.ReplicaPosition("broker-2", "t", 0, epoch, hw, end, ""), payloads)


def _crc_broken(data: bytes) -> bytes:
    out = bytearray(data)
    out[-1] ^= 0xFF
    return bytes(out)


def _truncated_to(offset: int) -> Callable[[Partition], None]:
    """A step between two messages: the follower cuts its log (a fetch found a divergence)."""
    return lambda part: part.truncate_to(offset)


# each scenario: the messages the follower receives (it holds offsets 0..3 of epoch 2 first),
# and steps between them
SCENARIOS: dict[str, list] = {
    "the next batch": [_message([_stamped(2, 4)])],
    "the next idempotent batches": [_message([_stamped(2, 4, pid=PID, seq=0)]),
                                    _message([_stamped(3, 6, pid=PID, seq=2)], leo=9)],
    "idempotent batches across the sequence wrap": [_message([_stamped(3, 4, pid=PID, seq=2**31 - 2)]),
                                                    _message([_stamped(1, 7, pid=PID, seq=1)], leo=8)],
    "a duplicate": [_message([_stamped(2, 2)])],
    "the same batch twice": [_message([_stamped(2, 4)]), _message([_stamped(2, 4)])],
    "an overlap": [_message([_stamped(2, 3)])],
    "a gap": [_message([_stamped(2, 6)], leo=8)],
    "a crc mismatch": [_message([_crc_broken(_stamped(2, 4))])],
    "a crc mismatch past a gap": [_message([_crc_broken(_stamped(2, 7))], leo=9)],
    "a stale batch epoch": [_message([_stamped(2, 4, epoch=EPOCH - 1)])],
    "a newer batch epoch": [_message([_stamped(2, 4, epoch=EPOCH + 1)])],
    "a stale message epoch": [_message([_stamped(2, 4)], epoch=EPOCH - 1)],
    "two batches in one payload": [_message([_stamped(2, 4) + _stamped(1, 6)], leo=7)],
    "two payloads": [_message([_stamped(2, 4), _stamped(1, 6)], leo=7)],
    "a batch and a partial tail": [_message([_stamped(2, 4) + _stamped(1, 6)[:30]])],
    "a truncated batch": [_message([_stamped(2, 4)[:-3]])],
    "a short payload": [_message([b"\x00" * 5])],
    "a payload of trailing bytes": [_message([_stamped(2, 4) + b"\x00" * 3])],
    "the leader's high watermark ahead of the follower": [_message([_stamped(2, 4)], hw=6, leo=6)],
    "the leader's log end past the batch": [_message([_stamped(2, 4)], leo=20)],
    "a truncation between two messages": [_message([_stamped(2, 4)]), _truncated_to(4),
                                          _message([_stamped(3, 4, epoch=EPOCH)], leo=7)],
    "a truncation below the next batch": [_message([_stamped(2, 4)]), _truncated_to(4),
                                          _message([_stamped(2, 6)], leo=8), _message([_stamped(1, 4)], leo=8)],
    # 40 batches of ~300 bytes each cross the 4 KiB segments of the test cores: rolls mid-stream
    "batches across segment rolls": [_message([_stamped(10, SYNCED_LEO + 10 * i)], hw=SYNCED_LEO + 10 * i,
                                              leo=SYNCED_LEO + 10 * (i + 1)) for i in range(40)],
}


def _run(tmp_path: Path, engine: str, messages: list[list], one_batch_path: bool,
         monkeypatch: pytest.MonkeyPatch) -> tuple[dict, Partition, int]:
    """The follower's state after ``messages``; and how many went the one-batch way."""
    reactor = FakeReactor(ManualClock(1_000))
    leader_core = broker_core(tmp_path / "l", L_ID, engine=engine, clock=reactor.clock)
    leader = leader_core.open_partition("t", 0, {})
    leader.become_leader(EPOCH, [F_ID, L_ID], [F_ID, L_ID], now_ms=0)
    leader.append_as_leader([make_batch(SYNCED_LEO)], 1 << 20)
    handlers, _ = loom_handlers(leader_core)
    core = broker_core(tmp_path / "f", F_ID, engine=engine, clock=reactor.clock)
    f = core.open_partition("t", 0, {})
    f.become_follower(L_ID, EPOCH, [F_ID, L_ID], [F_ID, L_ID])
    fetcher, client = replica_fetcher(reactor, L_ID, F_ID, core.follower_appended)
    fetcher.set_partitions([f])
    for _ in range(EXCHANGES_MAX):
        if fetcher.stream_ready(("t", 0)):
            break
        assert serve_fetch(client, handlers)
        reactor.advance(0)
    for _ in range(EXCHANGES_MAX):  # the fetch in flight answered: a trigger now sends one
        if not serve_fetch(client, handlers):
            break
        reactor.advance(0)
    assert fetcher.stream_ready(("t", 0)) and f.log_end_offset == SYNCED_LEO and not client.unanswered
    fetches_before = len(client.sent)
    sub = ReplicationSubscriber(None, core.partitions, {L_ID: fetcher}.get, is_other_topic_id=core.is_other_topic_id,
                                blocked=lambda node: False, on_appended=core.follower_appended)
    taken = []
    original: Callable = Partition.append_batch_as_follower
    monkeypatch.setattr(Partition, "append_batch_as_follower",
                        lambda self, *a: taken.append(1) or original(self, *a))
    if not one_batch_path:
        monkeypatch.setattr(replication.B, "whole_batch_fields", lambda data: None)
    for step in messages:
        if callable(step):
            step(f)
        else:
            sub.on_message(step)
    monkeypatch.undo()
    state = {
        "log": bytes(f.read(0, 1 << 24, f.log_end_offset)) if f.log_end_offset else b"",
        "log_end_offset": f.log_end_offset, "high_watermark": f.high_watermark,
        "epochs": list(f.epochs.entries),
        "producer": f.producers.check(PID, 0, 2, 3, possibly_written=True) if f.producers._producers else None,
        "producers": {pid: (e.epoch, list(e.batches)) for pid, e in f.producers._producers.items()},
        "acks": [(c, h["parts"]) for c, h, _ in client.oneway],
        "fetches": [c for c, _, _, _ in client.sent[fetches_before:]],
        "counters": dict(sub.counters),
    }
    return state, f, len(taken)


@pytest.mark.parametrize("engine", ["segment", "memory"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_one_batch_path_decides_as_the_general_path(tmp_path: Path, engine: str, name: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    messages = SCENARIOS[name]
    fast, _, taken = _run(tmp_path / "fast", engine, messages, True, monkeypatch)
    general, _, taken_general = _run(tmp_path / "general", engine, messages, False, monkeypatch)
    assert taken_general == 0
    assert fast == general
    expected_appends = {"the next batch": 1, "the next idempotent batches": 2, "a duplicate": 0,
                        "the same batch twice": 1, "an overlap": 0, "a gap": 0, "a crc mismatch": 0,
                        "a crc mismatch past a gap": 0, "a stale batch epoch": 0, "a newer batch epoch": 1,
                        "a stale message epoch": 0, "two batches in one payload": 2, "two payloads": 2,
                        "a batch and a partial tail": 1, "a truncated batch": 0, "a short payload": 0,
                        "a payload of trailing bytes": 1,
                        "the leader's high watermark ahead of the follower": 1,
                        "the leader's log end past the batch": 1, "batches across segment rolls": 40,
                        "a truncation between two messages": 2, "a truncation below the next batch": 2,
                        "idempotent batches across the sequence wrap": 2}[name]
    assert fast["counters"].get("repl_batches", 0) == expected_appends
    assert len(fast["acks"]) == (expected_appends if name not in ("two payloads", "two batches in one payload")
                                 else 1)
    one_batch_messages = {"the next batch": 1, "the next idempotent batches": 2, "a duplicate": 1,
                          "the same batch twice": 2, "an overlap": 1, "a stale batch epoch": 1,
                          "a newer batch epoch": 1, "the leader's high watermark ahead of the follower": 1,
                          "the leader's log end past the batch": 1, "batches across segment rolls": 40,
                          "a truncation between two messages": 2, "a truncation below the next batch": 2,
                          "idempotent batches across the sequence wrap": 2}
    assert taken == one_batch_messages.get(name, 0)  # the gap is decided before the append
    if name in ("a gap", "a crc mismatch", "a crc mismatch past a gap", "a stale batch epoch",
                "the leader's log end past the batch", "a truncation below the next batch"):
        assert fast["fetches"] == [P.FETCH]  # repaired over the fetch path
    if name == "the next idempotent batches":
        assert fast["producer"] == 6  # the second batch's offset: its sequence is known
    if name == "idempotent batches across the sequence wrap":
        assert fast["producers"][PID][1][-1] == (1, 1, 7)  # (base sequence, last, offset) after the wrap
    if name == "a truncation between two messages":
        assert fast["log_end_offset"] == 7  # the batch after the cut appended at the new log end
    if name == "a truncation below the next batch":
        assert fast["log_end_offset"] == 5  # the batch past the cut's end waited for the fetch
    if name == "batches across segment rolls":
        assert fast["log_end_offset"] == SYNCED_LEO + 400 and fast["high_watermark"] == SYNCED_LEO + 390


def test_the_raw_field_places_are_those_of_the_batch_header() -> None:
    names = [f.name for f in dataclasses.fields(B.BatchHeader)]
    assert [getattr(B, f"F_{n.upper()}") for n in names] == list(range(len(names)))
    data = _stamped(3, 11, pid=PID, seq=5)
    assert tuple(getattr(B.verify(data), n) for n in names) == B.whole_batch_fields(data)
