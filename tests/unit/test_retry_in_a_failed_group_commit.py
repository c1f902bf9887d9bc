"""A producer's send and its retry reach the leader in one reactor pass -- the first send's
request timed out at the client while the leader was stalled (a slow disk), or the client
rerouted it when leadership moved away and back -- and share one group commit, whose write then
fails (the disk is full). Producer state is recorded before the write (several batches of one
producer in one request must see each other), so the retry was judged a duplicate of the first
copy and answered as written at an offset the log did not hold: under ``acks=1`` at once, under
``acks=all`` once another producer's records filled that offset. A duplicate of a copy in the
same write is now only as good as that write.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.api import StorageFull
from fabric import protocol as P
from fabric.replies import decode_produce_results
from tests.unit.fakes import broker_core, loom_handlers, make_batch, request

PID = 7


def _leader(tmp_path: Path):  # noqa: ANN202
    core = broker_core(tmp_path, 1)
    part = core.open_partition("t", 0, {})
    part.become_leader(1, [1], [1], now_ms=0)
    handlers, server = loom_handlers(core)
    return part, handlers, server


def _send_and_retry_in_one_failed_write(part, handlers, monkeypatch: pytest.MonkeyPatch, acks: int):  # noqa: ANN001, ANN202
    ours = make_batch(3, pid=PID, epoch=0, seq=0, tag="ours")

    def full(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise StorageFull("No space left on device")
    monkeypatch.setattr(part.engine, "append_many", full)
    first = request(P.PRODUCE, [ours], acks=acks, timeout_ms=1000, parts=[["t", 0, 1, 0]])
    retry = request(P.PRODUCE, [ours], acks=acks, timeout_ms=1000, parts=[["t", 0, 1, 1]])  # possibly written
    handlers.on_produce(first)
    handlers.on_produce(retry)
    handlers.after_pass()  # one group commit for both
    monkeypatch.undo()     # space is freed
    return first, retry


def test_a_retry_sharing_a_failed_write_with_its_first_copy_fails_with_it(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    part, handlers, server = _leader(tmp_path)
    first, retry = _send_and_retry_in_one_failed_write(part, handlers, monkeypatch, acks=1)
    [r_first] = decode_produce_results(server.answer(first))
    [r_retry] = decode_produce_results(server.answer(retry))
    assert r_first.error == P.STORAGE_ERROR
    assert part.log_end_offset == 0, "nothing was written"
    # the client reads only the retry's answer (it gave the first request up)
    assert r_retry.error == P.STORAGE_ERROR, f"the retry was answered {r_retry} though the log is empty"


def test_an_acks_all_retry_sharing_a_failed_write_is_not_acknowledged_at_another_producers_offset(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    part, handlers, server = _leader(tmp_path)
    first, retry = _send_and_retry_in_one_failed_write(part, handlers, monkeypatch, acks=-1)
    other = request(P.PRODUCE, [make_batch(3, pid=8, epoch=0, seq=0, tag="other")], acks=-1, timeout_ms=1000,
                    parts=[["t", 0, 1, 0]])
    handlers.on_produce(other)
    handlers.after_pass()
    handlers.after_pass()  # parked answers
    assert part.high_watermark == 3, "the other producer's records were written"
    [r_retry] = decode_produce_results(server.answer(retry))
    assert r_retry.error == P.STORAGE_ERROR, f"the retry was acknowledged: {r_retry}"


def test_the_producer_sends_again_after_the_failed_write_and_is_written_once(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """What the client does next (it keeps the batch, possibly written): the same batch again
    is written, once, and the producer's next batch follows it."""
    part, handlers, server = _leader(tmp_path)
    _send_and_retry_in_one_failed_write(part, handlers, monkeypatch, acks=1)
    again = request(P.PRODUCE, [make_batch(3, pid=PID, epoch=0, seq=0, tag="ours")], acks=1, timeout_ms=1000,
                    parts=[["t", 0, 1, 1]])
    handlers.on_produce(again)
    handlers.after_pass()
    [r_again] = decode_produce_results(server.answer(again))
    assert (r_again.error, r_again.base_offset) == (0, 0), r_again
    nxt = request(P.PRODUCE, [make_batch(2, pid=PID, epoch=0, seq=3, tag="next")], acks=1, timeout_ms=1000,
                  parts=[["t", 0, 1, 0]])
    handlers.on_produce(nxt)
    handlers.after_pass()
    [r_next] = decode_produce_results(server.answer(nxt))
    assert (r_next.error, r_next.base_offset, part.log_end_offset) == (0, 3, 5), r_next


def test_a_failed_write_of_a_new_producer_epoch_keeps_what_the_old_epoch_wrote(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of a new producer epoch replaced the producer's entry before the write; when the
    write failed only its batch was taken back, and the emptied entry was dropped -- with the
    earlier epoch's batches, so that a retry of one of them was written a second time."""
    part, _, _ = _leader(tmp_path)
    first = make_batch(3, pid=PID, epoch=0, seq=0, tag="first")
    [(offset, code, _)], _ = part.append_as_leader([first], 1 << 20)
    assert (offset, code, part.log_end_offset) == (0, 0, 3)

    def full(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise StorageFull("No space left on device")
    monkeypatch.setattr(part.engine, "append_many", full)
    [(_, code, _)], _ = part.append_as_leader([make_batch(1, pid=PID, epoch=1, seq=0, tag="bumped")], 1 << 20)
    assert code == P.STORAGE_ERROR and part.log_end_offset == 3
    monkeypatch.undo()
    [(offset, code, message)], _ = part.append_as_leader([first], 1 << 20, [True])  # its answer was lost
    assert (offset, code, message, part.log_end_offset) == (0, 0, "duplicate", 3), "written a second time"


def test_a_failed_write_undoes_the_evictions_and_the_window_it_caused(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A new producer evicted the least recently used one (and the table then 'forgot
    producers'); a producer's 33rd batch pushed its first out of the window: neither may stay
    when the write that caused them failed."""
    from nodes.broker import producers as producers_mod
    monkeypatch.setattr(producers_mod, "PRODUCERS_MAX", 2)
    part, _, _ = _leader(tmp_path)
    part.append_as_leader([make_batch(1, pid=1, epoch=0, seq=0), make_batch(1, pid=2, epoch=0, seq=0)], 1 << 20)
    window = [make_batch(1, pid=2, epoch=0, seq=s) for s in range(1, producers_mod.BATCHES_REMEMBERED)]
    part.append_as_leader(window, 1 << 20)  # producer 2's window is full: seqs 0..31

    def full(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise StorageFull("No space left on device")
    monkeypatch.setattr(part.engine, "append_many", full)
    results, _ = part.append_as_leader([make_batch(1, pid=3, epoch=0, seq=0),   # evicts producer 1
                                        make_batch(1, pid=2, epoch=0, seq=32)], 1 << 20)  # pushes seq 0 out
    assert all(code == P.STORAGE_ERROR for _, code, _ in results)
    monkeypatch.undo()
    assert not part.producers.forgot_producers, "the failed write's eviction stayed"
    [(offset, code, message)], _ = part.append_as_leader([make_batch(1, pid=1, epoch=0, seq=0)], 1 << 20, [True])
    assert (offset, code, message) == (0, 0, "duplicate"), "producer 1 was forgotten by a write that failed"
    [(offset, code, message)], _ = part.append_as_leader([make_batch(1, pid=2, epoch=0, seq=0)], 1 << 20, [True])
    assert (offset, code, message) == (1, 0, "duplicate"), "producer 2's first batch left its window"
