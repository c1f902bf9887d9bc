"""/ws/consume: an explicit commit ``{"commit": [{topic, partition, offset}]}`` whose entries
cannot be offsets is a bad message (the stream closes with 1008), checked before anything goes
to the consumer instance: integers only, as REST's commit takes them. An offset of 1e999 (JSON's way to an infinite float) raised
OverflowError out of the route, and a topic that is not a string or an offset past 64 bits
failed in the consumer-service client (sorting mixed keys, packing the header): an exception
that is no ApiError or ClusterError is taken for a programmer error, which stops the gateway's
worker -- every socket and request on it -- at any consume-role client's will.

``_consume`` runs for real, with the agent of tests/unit/test_gateway_ws_consume_commits.py."""

from __future__ import annotations

import pytest

from tests.unit.test_gateway_ws_consume_through import ReadingClient, _run
from tests.unit.test_gateway_ws_consume_commits import ClientSocket
from webui import ws as wsmod

BAD_ENTRIES = [
    '[{"topic": "t", "partition": 0, "offset": 1e999}]',
    '[{"topic": "t", "partition": -1e999, "offset": 3}]',
    '[{"topic": "t", "partition": 0, "offset": 18446744073709551616}]',
    '[{"topic": "t", "partition": 99999999999999999999999, "offset": 3}]',
    '[{"topic": "t", "partition": 0, "offset": 3}, {"topic": 5, "partition": 0, "offset": 3}]',
    '[{"topic": null, "partition": 0, "offset": 3}]',
    # no integers: int() took them (5.9 committed 6, true partition 1, "3" offset 3)
    '[{"topic": "t", "partition": 0, "offset": 5.9}]',
    '[{"topic": "t", "partition": true, "offset": 3}]',
    '[{"topic": "t", "partition": 0, "offset": "3"}]',
    '[{"topic": "t", "partition": "0", "offset": 3}]',
    '{"topic": "t", "partition": 0, "offset": 3}',
]


@pytest.mark.parametrize("entries", BAD_ENTRIES)
def test_commit_entries_that_cannot_be_offsets_close_the_stream_and_reach_no_instance(entries: str) -> None:
    ws = ClientSocket()
    agent = ReadingClient(ws, ['{"commit": %s}' % entries], after=1, leave_at_fetch=4)
    out = _run(agent, ws, {"topic": "t", "group": "billing", "auto_commit": "false"})
    assert agent.commits == [], agent.commits
    assert out._closing is not None and out._closing[0] == wsmod.POLICY, out._closing


def test_a_good_explicit_commit_still_goes_through() -> None:
    ws = ClientSocket()
    agent = ReadingClient(ws, ['{"commit": [{"topic": "t", "partition": 0, "offset": 4}]}'], after=1, leave_at_fetch=4)
    _run(agent, ws, {"topic": "t", "group": "billing", "auto_commit": "false"})
    assert agent.commits == [{("t", 0): 5}], agent.commits
    assert {"committed": True} in ws.received


def test_integers_written_as_floats_are_those_integers_as_in_rests_commit() -> None:
    """REST's commit reads an integer written 4.0 as 4 (JSON Schema's integers); so does the stream's."""
    ws = ClientSocket()
    agent = ReadingClient(ws, ['{"commit": [{"topic": "t", "partition": 0.0, "offset": 4e0}]}'], after=1,
                          leave_at_fetch=4)
    _run(agent, ws, {"topic": "t", "group": "billing", "auto_commit": "false"})
    assert agent.commits == [{("t", 0): 5}], agent.commits
    assert [type(x) for c in agent.commits for tp, o in c.items() for x in (tp[1], o)] == [int, int]
