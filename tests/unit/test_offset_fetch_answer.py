"""How a client reads OFFSET_FETCH's answer (``fabric.client.group_link.read_offset_fetch``): the
one reader of the join's lookup, the assigned consumer's lookup and ``committed_starts``."""

from __future__ import annotations

import pytest

from fabric.client.group_link import OffsetFetchAnswer, read_offset_fetch


def test_an_answer_is_read_into_offsets_topic_ids_and_the_partitions_newer_than_the_reading() -> None:
    answer = {"group": "g", "offsets": [["t", 0, 5, ""], ["t", 1, -1, ""], ["u", 0, -1, ""]],
              "topic_ids": {"t": "id-t"}, "newer_than_reading": {"t": [1], "u": [0]}}
    assert read_offset_fetch(answer) == OffsetFetchAnswer(
        [["t", 0, 5, ""], ["t", 1, -1, ""], ["u", 0, -1, ""]], {"t": "id-t"}, {("t", 1), ("u", 0)})


def test_an_older_coordinators_answer_names_no_ids_and_nothing_newer() -> None:
    """Without ``topic_ids`` and ``newer_than_reading`` (older coordinators): none, and the
    consumer behaves as before."""
    read = read_offset_fetch({"group": "g", "offsets": [["t", 0, -1, ""]]})
    assert read == OffsetFetchAnswer([["t", 0, -1, ""]], {}, set())
    assert read_offset_fetch({"offsets": [], "topic_ids": None, "newer_than_reading": None}) == \
        OffsetFetchAnswer([], {}, set())


@pytest.mark.parametrize("newer", [[["t", 1]], "t", {"t": 1}, {"t": [True, "1", None]}, {1: [0]}])
def test_a_malformed_newer_than_reading_names_nothing_newer(newer: object) -> None:
    """Entries of another shape are left out: a partition is never started at its log start on
    the word of an answer that cannot be read (it follows ``auto_offset_reset``, as before)."""
    assert read_offset_fetch({"offsets": [], "newer_than_reading": newer}).newer == set()


def test_well_formed_entries_beside_malformed_ones_are_kept() -> None:
    assert read_offset_fetch({"offsets": [], "newer_than_reading": {"t": [1, "x", 2], "u": "0"}}).newer == \
        {("t", 1), ("t", 2)}


@pytest.mark.parametrize("ids", [["t", "id"], "id", {"t": 1}, {2: "id"}])
def test_malformed_topic_ids_name_no_topic(ids: object) -> None:
    """An id that is not a topic name's string is no id: the offsets count as of the topic by name."""
    assert read_offset_fetch({"offsets": [], "topic_ids": ids}).topic_ids == {}
