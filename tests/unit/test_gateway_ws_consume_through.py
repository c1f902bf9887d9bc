"""/ws/consume: a client says what it has read. Every ``records`` message carries ``seq`` (1, 2,
... on the stream), and ``{"commit": "all", "through": N}`` commits the records of messages 1..N
only. ``{"commit": "all"}`` alone commits everything that went out to the socket -- including
messages still on their way, which a connection that then breaks (a gateway worker killed, the
client closing) never delivers: a fault soak saw the group skip them. A client that has named
``through`` is never committed past what it named, by the auto-commit either.

What went out is collected as the stream goes, bounded: a stream that never commits (an
anonymous one, or ``auto_commit=false`` and no commit) kept one mark per message it sent.
``_consume`` runs for real, with the agent of tests/unit/test_gateway_ws_consume_commits.py."""

from __future__ import annotations

import time
from types import SimpleNamespace

from fabric.records import Record
from tests.unit.test_gateway_ws_consume_commits import DEADLINE_S, ClientSocket, InstanceAgent
from webui import ws as wsmod
from webui import ws_consume as consumemod


def _run(agent: InstanceAgent, ws: ClientSocket, query: dict) -> wsmod.Outbox:
    out = wsmod.Outbox(ws, queue_max=100, slow_timeout_s=1.0)
    delivered: list[consumemod.Delivered] = []
    real = consumemod.Delivered

    def keep(*a, **k):  # noqa: ANN002, ANN003, ANN202
        delivered.append(real(*a, **k))
        return delivered[-1]
    consumemod.Delivered = keep  # type: ignore[misc]
    try:
        consumemod.consume(ws, out, SimpleNamespace(agent=agent), query)
    except wsmod.Closed:
        pass
    finally:
        consumemod.Delivered = real  # type: ignore[misc]
    out.close(1000, "done")
    assert out.done.wait(DEADLINE_S)
    out.delivered = delivered[0]  # type: ignore[attr-defined]
    return out


class ReadingClient(InstanceAgent):
    """Sends ``commands`` (JSON texts) once ``after`` records messages reached the client, then
    goes away at fetch ``leave_at_fetch`` (each fetch returns 10 records of t-0)."""

    def __init__(self, ws: ClientSocket, commands: list[str], after: int, leave_at_fetch: int) -> None:
        super().__init__(ws, leave_at_fetch=0)
        self.commands, self.after, self.leave = commands, after, leave_at_fetch

    def fetch(self, **_kw: object) -> list[Record]:
        self.fetches += 1
        if self.fetches == self.after + 1 and self.commands:
            self._wait_for(lambda: len([m for m in self.ws.received if "records" in m]) >= self.after)
            self.ws.inbox.extend(self.commands)
        if self.fetches == self.leave:
            # every records message reached the client, and the answer to its commands (or the
            # stream was closed for a bad one)
            self._wait_for(lambda: len([m for m in self.ws.received if "records" in m]) >= self.leave - 1
                           and (not self.commands or any("committed" in m for m in self.ws.received))
                           or not self.ws.connected)
            self.ws.connected = False
            return []
        records = [Record("t", 0, o, 0, None, b"v%d" % o, None) for o in range(self.position, self.position + 10)]
        self.position += 10
        return records

    def _wait_for(self, condition) -> None:  # noqa: ANN001
        deadline = time.monotonic() + DEADLINE_S
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)


def test_records_messages_are_numbered() -> None:
    ws = ClientSocket()
    agent = ReadingClient(ws, [], after=3, leave_at_fetch=4)
    _run(agent, ws, {"topic": "t", "group": "billing", "auto_commit": "false"})
    assert [m["seq"] for m in ws.received if "records" in m] == [1, 2, 3]


def test_commit_through_covers_the_messages_named_not_later_ones_that_went_out() -> None:
    ws = ClientSocket()
    # the client has read message 1 when it asks; messages 2 and 3 go out before the gateway reads it
    agent = ReadingClient(ws, ['{"commit": "all", "through": 1}'], after=3, leave_at_fetch=5)
    _run(agent, ws, {"topic": "t", "group": "billing", "auto_commit": "false"})
    assert agent.commits == [{("t", 0): 10}], f"committed {agent.commits}: only message 1 (offsets 0-9) was read"
    assert {"committed": True} in ws.received


def test_the_auto_commit_never_passes_what_the_client_named() -> None:
    ws = ClientSocket()
    agent = ReadingClient(ws, ['{"commit": "all", "through": 2}'], after=3, leave_at_fetch=6)
    _run(agent, ws, {"topic": "t", "group": "billing"})  # auto_commit on: it commits at the close
    assert agent.commits, "the client's commit was not made"
    assert max(c[("t", 0)] for c in agent.commits) == 20, \
        f"committed {agent.commits}: the client said it had read messages 1-2 (offsets 0-19)"


def test_commit_all_without_through_still_commits_what_went_out() -> None:
    ws = ClientSocket()
    agent = ReadingClient(ws, ['{"commit": "all"}'], after=2, leave_at_fetch=4)
    _run(agent, ws, {"topic": "t", "group": "billing", "auto_commit": "false"})
    assert agent.commits and agent.commits[0][("t", 0)] in (20, 30), agent.commits


def test_a_bad_through_closes_the_stream_with_what_is_wanted() -> None:
    for bad in ('"3"', "0", "-1", "true", "1.5"):
        ws = ClientSocket()
        agent = ReadingClient(ws, ['{"commit": "all", "through": %s}' % bad], after=1, leave_at_fetch=4)
        out = _run(agent, ws, {"topic": "t", "group": "billing", "auto_commit": "false"})
        assert agent.commits == [], (bad, agent.commits)
        assert out._closing is not None and out._closing[0] == wsmod.POLICY and "through" in out._closing[1], \
            (bad, out._closing)


def test_a_stream_that_never_commits_keeps_no_mark_per_message() -> None:
    for query in ({"topic": "t"}, {"topic": "t", "group": "billing", "auto_commit": "false"}):
        ws = ClientSocket()
        messages = consumemod.PENDING_MARKS_MAX * 3
        agent = ReadingClient(ws, [], after=messages, leave_at_fetch=messages + 1)
        out = _run(agent, ws, query)
        assert len([m for m in ws.received if "records" in m]) == messages
        held = len(out._sent_marks) + len(out.delivered.pending)
        assert held <= consumemod.PENDING_MARKS_MAX, f"{held} marks held for {messages} messages ({query})"


def test_an_explicit_commit_refused_by_a_rebalance_is_answered_and_the_stream_goes_on() -> None:
    from webui.errors import ClusterError
    ws = ClientSocket()
    agent = ReadingClient(ws, ['{"commit": [{"topic": "t", "partition": 0, "offset": 4}]}'], after=1, leave_at_fetch=4)

    def refused(offsets: dict | None = None) -> None:
        raise ClusterError("rebalance", "unknown_member: fetch records again, then commit")
    agent.commit = refused  # type: ignore[method-assign]
    out = _run(agent, ws, {"topic": "t", "group": "billing", "auto_commit": "false"})
    assert {"committed": False, "error": "rebalance", "message": "unknown_member: fetch records again, then commit"} \
        in ws.received
    assert out._closing == (1000, "done"), out._closing
    assert len([m for m in ws.received if "records" in m]) == 3, "the stream did not go on"


def test_an_explicit_commit_of_a_partition_a_rebalance_took_is_answered_and_the_stream_goes_on() -> None:
    """The coordinator refuses a commit naming a partition the member no longer owns (a
    rebalance gave it to another member after the client read it): the stream was closed with
    1008 as if the client had broken the protocol."""
    from fabric import protocol as P
    from fabric.errors import RemoteError
    from nodes.gateway.translate import translated
    ws = ClientSocket()
    agent = ReadingClient(ws, ['{"commit": [{"topic": "t", "partition": 0, "offset": 4}]}'], after=1, leave_at_fetch=4)

    def taken(offsets: dict | None = None) -> None:
        with translated("the consumer service"):
            raise RemoteError(P.PARTITION_NOT_ASSIGNED, "t-0 is not assigned to i-1 in generation 2")
    agent.commit = taken  # type: ignore[method-assign]
    out = _run(agent, ws, {"topic": "t", "group": "billing", "auto_commit": "false"})
    answers = [m for m in ws.received if "committed" in m]
    assert [(m["committed"], m["error"]) for m in answers] == [(False, "rebalance")], answers
    assert "t-0 is not assigned" in answers[0]["message"], answers
    assert out._closing == (1000, "done"), out._closing
    assert len([m for m in ws.received if "records" in m]) == 3, "the stream did not go on"
