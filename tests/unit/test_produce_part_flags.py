"""A PRODUCE part's flags (``P.PART_POSSIBLY_WRITTEN``, ``P.PART_FOLLOWS``): a part as an
older client sends it (2 or 3 elements, or flags 0/1) is judged as it was before the
``follows`` flag; a batch that follows one its client has no answer for is refused out of
order by a partition that does not know its producer, never taken at any sequence."""

from __future__ import annotations

import pytest

from fabric import protocol as P
from fabric.errors import RemoteError
from nodes.broker.messages import ProduceInput
from nodes.broker.producers import ProducerStateTable


@pytest.mark.parametrize("part,possibly_written,follows", [
    (["t", 0], False, False), (["t", 0, 3], False, False), (["t", 0, 3, 0], False, False),
    (["t", 0, 3, 1], True, False), (["t", 0, 3, 2], False, True), (["t", 0, 3, 3], True, True),
    (("t", 0, 3, 1), True, False)])
def test_parts_decode_their_flags(part: list, possibly_written: bool, follows: bool) -> None:
    inp = ProduceInput.decode(part, b"x")
    assert inp is not None
    assert (inp.possibly_written, inp.follows) == (possibly_written, follows)
    assert inp.flags == (P.PART_POSSIBLY_WRITTEN if possibly_written else 0) | (P.PART_FOLLOWS if follows else 0)


@pytest.mark.parametrize("part", [["t", 0, 3, 4], ["t", 0, 3, -1], ["t", 0, 3, True], ["t", 0, 3, 1.0],
                                  ["t", 0, 3, 1, 0], ["t"]])
def test_other_flags_are_malformed(part: list) -> None:
    assert ProduceInput.decode(part, b"x") is None


def test_an_unknown_producer_is_taken_at_any_sequence_unless_the_batch_follows() -> None:
    table = ProducerStateTable()
    assert table.check(7, 0, 40, 2, possibly_written=False) is None
    assert table.check(7, 0, 40, 2, possibly_written=True) is None  # nothing forgotten
    with pytest.raises(RemoteError) as e:
        table.check(7, 0, 40, 2, possibly_written=False, follows=True)
    assert e.value.code == P.OUT_OF_ORDER_SEQUENCE
    table.update(7, 0, 40, 2, 100)
    assert table.check(7, 0, 42, 1, follows=True) is None  # known: judged by its sequence
    assert table.check(7, 0, 40, 2, follows=True) == 100


def test_a_table_that_forgot_producers_refuses_an_older_clients_possibly_written_retry() -> None:
    table = ProducerStateTable()
    table.truncate(forgot_below=100)  # (a rebuild that began reading the log at 100)
    with pytest.raises(RemoteError) as e:
        table.check(7, 0, 40, 2, possibly_written=True)
    assert e.value.code == P.UNKNOWN_PRODUCER_ID
    assert table.check(7, 0, 40, 2, possibly_written=False) is None
