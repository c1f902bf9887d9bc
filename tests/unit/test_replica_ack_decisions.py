"""What a leader makes of a REPLICA_ACK (``RequestHandlers.on_replica_ack`` ->
``BrokerCore.follower_position`` -> ``Partition.record_follower_fetch``), which reads its own
log end once per ack: an ack of another leader epoch, one past our log end, one that arrives
after the follower left the ISR or after we stopped leading, one that goes back (a follower
that truncated), and a malformed one among good ones -- each changes what it should and
nothing else. The high watermark never goes down, and never counts a follower outside the
ISR."""

from __future__ import annotations

from pathlib import Path

from fabric import protocol as P
from tests.unit.fakes import broker_core, loom_handlers, make_batch, request

L_ID, F1, F2 = 1, 2, 3
EPOCH = 5


def _leader(tmp_path: Path):  # noqa: ANN202
    core = broker_core(tmp_path, L_ID)
    part = core.open_partition("t", 0, {})
    part.become_leader(EPOCH, [L_ID, F1, F2], [L_ID, F1, F2], now_ms=0)
    part.append_as_leader([make_batch(4), make_batch(4)], 1 << 20)  # log end 8
    handlers, server = loom_handlers(core)
    return core, part, handlers, server


def _ack(handlers, follower: int, leo: int, epoch: int = EPOCH, parts: list | None = None) -> None:  # noqa: ANN001
    handlers.on_replica_ack(request(P.REPLICA_ACK, broker_id=follower,
                                    parts=parts if parts is not None else [["t", 0, leo, epoch]]))


def test_acks_of_the_isr_move_the_high_watermark_to_the_smallest(tmp_path: Path) -> None:
    _, part, handlers, server = _leader(tmp_path)
    _ack(handlers, F1, 8)
    assert part.high_watermark == 0  # F2 has not acknowledged anything
    _ack(handlers, F2, 4)
    assert part.high_watermark == 4
    _ack(handlers, F2, 8)
    assert part.high_watermark == 8 and server.replies == []  # one-way: never answered


def test_an_ack_of_another_leader_epoch_changes_nothing(tmp_path: Path) -> None:
    _, part, handlers, _ = _leader(tmp_path)
    for epoch in (EPOCH - 1, EPOCH + 1):
        _ack(handlers, F1, 8, epoch)
        _ack(handlers, F2, 8, epoch)
    assert part.high_watermark == 0
    assert part.followers[F1].log_end_offset == part.followers[F2].log_end_offset == -1


def test_an_ack_past_our_log_end_changes_nothing(tmp_path: Path) -> None:
    _, part, handlers, _ = _leader(tmp_path)
    _ack(handlers, F1, 9)
    _ack(handlers, F2, 8)
    assert part.high_watermark == 0 and part.followers[F1].log_end_offset == -1


def test_an_ack_after_the_follower_left_the_isr_is_noted_but_does_not_hold_the_high_watermark(tmp_path: Path) -> None:
    _, part, handlers, _ = _leader(tmp_path)
    part.update_isr([L_ID, F1])  # F2 left
    _ack(handlers, F1, 8)
    assert part.high_watermark == 8  # F2 (out of the ISR) is not waited for
    _ack(handlers, F2, 2)
    assert part.high_watermark == 8  # nor does its late ack pull the HW back
    assert part.followers[F2].log_end_offset == 2  # its position is known: it can catch up and join


def test_an_ack_after_we_stopped_leading_changes_nothing(tmp_path: Path) -> None:
    _, part, handlers, _ = _leader(tmp_path)
    part.become_follower(F1, EPOCH, [L_ID, F1, F2], [L_ID, F1, F2])  # the same epoch, another leader
    hw = part.high_watermark
    _ack(handlers, F1, 8)
    _ack(handlers, F2, 8)
    assert part.high_watermark == hw and part.followers == {}


def test_an_ack_that_goes_back_never_lowers_the_high_watermark(tmp_path: Path) -> None:
    _, part, handlers, _ = _leader(tmp_path)
    _ack(handlers, F1, 8)
    _ack(handlers, F2, 8)
    assert part.high_watermark == 8
    _ack(handlers, F2, 4)  # a follower that truncated reports less
    assert part.high_watermark == 8 and part.followers[F2].log_end_offset == 4
    part.append_as_leader([make_batch(2)], 1 << 20)
    _ack(handlers, F1, 10)
    assert part.high_watermark == 8  # F2 holds 4: the new records are not committed


def test_malformed_parts_are_skipped_and_the_good_ones_count(tmp_path: Path) -> None:
    _, part, handlers, _ = _leader(tmp_path)
    _ack(handlers, F1, 0, parts=[["t", 0, "8", EPOCH], ["t"], None, ["t", 0, 8, EPOCH]])
    _ack(handlers, True, 8)  # a bool is no broker id  # type: ignore[arg-type]
    assert part.followers[F1].log_end_offset == 8 and part.followers[F2].log_end_offset == -1
    _ack(handlers, F2, 0, parts=[["u", 0, 8, EPOCH], ["t", 1, 8, EPOCH], ["t", 0, 6, EPOCH]])
    assert part.high_watermark == 6
