"""How a client reads OFFSET_FETCH's answer (``fabric.client.group_link.read_offset_fetch``): the
one reader of the join's lookup, the assigned consumer's lookup and ``committed_starts``."""

from __future__ import annotations

import pytest

from fabric import protocol as P
from fabric.client.group_link import OffsetFetchAnswer, read_offset_fetch
from fabric.errors import CodedError


def test_an_answer_is_read_into_offsets_topic_ids_and_the_partitions_newer_than_the_reading() -> None:
    answer = {"group": "g", "offsets": [["t", 0, 5, "", 3], ["t", 1, -1, "", -1], ["u", 0, -1, "", -1]],
              "topic_ids": {"t": "id-t"}, "newer_than_reading": {"t": [1], "u": [0]}}
    assert read_offset_fetch(answer) == OffsetFetchAnswer(
        [["t", 0, 5, "", 3], ["t", 1, -1, "", -1], ["u", 0, -1, "", -1]], {"t": "id-t"}, {("t", 1), ("u", 0)})


def test_an_older_coordinators_answer_names_no_ids_and_nothing_newer() -> None:
    """Without ``topic_ids``, ``newer_than_reading`` and the committed leader epoch (older
    coordinators): none, and the consumer behaves as before."""
    read = read_offset_fetch({"group": "g", "offsets": [["t", 0, -1, ""], ["t", 1, 5, ""]]})
    assert read == OffsetFetchAnswer([["t", 0, -1, "", -1], ["t", 1, 5, "", -1]], {}, set())
    assert read_offset_fetch({"offsets": [], "topic_ids": None, "newer_than_reading": None}) == \
        OffsetFetchAnswer([], {}, set())


@pytest.mark.parametrize("newer", [[["t", 1]], "t", {"t": 1}, {"t": [True, "1", None]}, {1: [0]}, {"t": [1, "x"]}])
def test_a_malformed_newer_than_reading_names_every_partition_with_nothing_committed_newer(newer: object) -> None:
    """A ``newer_than_reading`` sent but not of its shape (a coordinator's bug) says nothing of
    the group's reading: each partition of the answer with nothing committed starts at its log
    start. Read as "nothing is newer", a partition made after the group began reading started by
    ``auto_offset_reset`` -- with ``latest`` its records so far were never read; from its log start
    they are read, perhaps again (delivery is at least once). Absent (older coordinators) it
    still names nothing: they judged no partition so."""
    answer = {"offsets": [["t", 0, 5, ""], ["t", 1, -1, ""], ["u", 0, -1, ""]], "newer_than_reading": newer}
    assert read_offset_fetch(answer).newer == {("t", 1), ("u", 0)}


@pytest.mark.parametrize("offsets", [None, "x", [["t", 0]], [["t", "0", 5, ""]], [[1, 0, 5, ""]], [["t", 0, "5", ""]],
                                     [5], [None]])
def test_an_answer_without_readable_offsets_is_a_malformed_answer_not_a_crash(offsets: object) -> None:
    """Raised as a CodedError (the caller's error path: the join's retry, the lookup's), not a
    KeyError / ValueError that stopped the consumer's reactor thread inside the reply's callback."""
    answer = {"newer_than_reading": {}} if offsets is None else {"offsets": offsets}
    with pytest.raises(CodedError) as e:
        read_offset_fetch(answer)
    assert e.value.code == P.MALFORMED_REQUEST


def test_more_fields_of_an_offset_are_left_out() -> None:
    """A newer coordinator's fields after the leader epoch are no reason to refuse the answer."""
    assert read_offset_fetch({"offsets": [["t", 0, 5, "m", 2, "x"]]}).offsets == [["t", 0, 5, "m", 2]]


@pytest.mark.parametrize("epoch", ["x", None, True, 1.0, -2, [1]])
def test_a_leader_epoch_that_is_not_one_is_not_known(epoch: object) -> None:
    """Read as "not known" (-1): the consumer starts there as before the field (the leader cannot
    say where its log parts from the one read), rather than refuse the group's offsets."""
    assert read_offset_fetch({"offsets": [["t", 0, 5, "m", epoch]]}).offsets == [["t", 0, 5, "m", -1]]


@pytest.mark.parametrize("ids", [["t", "id"], "id", {"t": 1}, {2: "id"}])
def test_malformed_topic_ids_name_no_topic(ids: object) -> None:
    """An id that is not a topic name's string is no id: the offsets count as of the topic by name."""
    assert read_offset_fetch({"offsets": [], "topic_ids": ids}).topic_ids == {}
