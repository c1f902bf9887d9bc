"""/ws/consume commits only what went out to the client. The stream's consumer instance used to
auto-commit its own positions, which are past every record it fetched: records fetched while
the client was going away (or queued, or dropped when the socket closed) were committed at the
close, and the group's next member started after them. An anonymous stream (no ``group=``)
committed too, leaving a group nobody can join again on the coordinator for good.

``_consume`` runs for real, with an agent that models the hosted instance. (And /ws/produce's
answer to a message that is not a JSON object.)"""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest
from simple_websocket import ConnectionClosed

from fabric.client.services import Fetched
from fabric.records import Record
from webui import ws as wsmod
from webui import ws_consume as consumemod
from webui.errors import ApiError, ClusterError

DEADLINE_S = 10.0


class ClientSocket:
    """The server side of a WebSocket whose client reads everything until it goes away."""

    def __init__(self, inbox: list[str] | None = None) -> None:
        self.connected = True
        self.received: list[dict] = []
        self.inbox = inbox or []
        self.lock = threading.Lock()

    def receive(self, timeout: float | None = None) -> str | None:
        return self.inbox.pop(0) if self.inbox else None

    def send(self, text: str) -> None:
        if not self.connected:
            raise ConnectionClosed(1001, "gone")
        with self.lock:
            self.received.append(json.loads(text))

    def close(self, code: int, reason: str) -> None:
        self.connected = False


class InstanceAgent:
    """One hosted instance: a fetch moves its position past the records it returns; deleting
    it commits the position when it auto-commits (as GroupConsumer.close does)."""

    def __init__(self, ws: ClientSocket, leave_at_fetch: int = 2) -> None:
        self.ws = ws
        self.position = 0
        self.commits: list[dict] = []
        self.fetches = 0
        self.auto_commit: bool | None = None
        self.groups: list[str] = []
        self.leave_at_fetch = leave_at_fetch

    def topic(self, name: str) -> None:
        return None

    def create_instance(self, group: str, name: str | None, config: dict, fmt: str) -> SimpleNamespace:
        self.auto_commit = config["enable_auto_commit"]
        self.groups.append(group)
        return SimpleNamespace(name="i-1")

    def subscribe(self, group: str, name: str, topics: list[str]) -> None:
        return None

    def call_instance(self, group: str, name: str, op):  # noqa: ANN001, ANN201
        return op(self)

    def fetch(self, **_kw: object) -> list[Record]:
        self.fetches += 1
        if self.fetches == self.leave_at_fetch:
            deadline = time.monotonic() + DEADLINE_S
            while not self.ws.received and time.monotonic() < deadline:  # the first message reached the client
                time.sleep(0.01)
            self.ws.connected = False  # then the client goes away during the long poll
        records = [Record("t", 0, o, 0, None, b"v%d" % o, None) for o in range(self.position, self.position + 10)]
        self.position += 10
        return records

    def fetch_with_positions(self, **kw: object) -> Fetched:
        return Fetched(self.fetch(**kw), None, -1)  # never positioned: no "ready" among the messages

    def commit(self, offsets: dict | None = None) -> None:
        self.commits.append({("t", 0): self.position} if offsets is None else dict(offsets))

    def assignment(self) -> list[tuple[str, int]]:
        return [("t", 0)]

    def owned(self) -> list[tuple[str, int]] | None:
        """The assignment, None while the member joins its group."""
        return self.assignment()

    def committed(self, partitions: list[tuple[str, int]] | None = None) -> dict[tuple[str, int], int]:
        """The group's committed offsets (-1: none): what this instance's commits made them."""
        held: dict[tuple[str, int], int] = {}
        for c in self.commits:
            held.update(c)
        return {tp: held.get(tp, -1) for tp in partitions or self.assignment()}

    def delete_instance(self, group: str, name: str) -> None:
        if self.auto_commit:
            self.commits.append({("t", 0): self.position})


def run(agent: InstanceAgent, ws: ClientSocket, query: dict) -> None:
    out = wsmod.Outbox(ws, queue_max=100, slow_timeout_s=1.0)
    try:
        consumemod.consume(ws, out, SimpleNamespace(agent=agent), query)
    except wsmod.Closed:
        pass
    out.close(1000, "done")
    assert out.done.wait(DEADLINE_S)


def test_records_fetched_as_the_client_went_away_are_not_committed() -> None:
    ws = ClientSocket()
    agent = InstanceAgent(ws)
    run(agent, ws, {"topic": "t", "group": "billing"})
    delivered = [r["offset"] for m in ws.received for r in m.get("records", [])]
    assert delivered == list(range(10))
    assert agent.commits and agent.commits[-1] == {("t", 0): 10}, \
        f"committed {agent.commits}: records 10..19 were never sent, and the group's next member starts after them"


def test_commit_all_commits_what_went_out_not_what_is_queued() -> None:
    ws = ClientSocket(inbox=[])
    agent = InstanceAgent(ws, leave_at_fetch=3)
    fetch = agent.fetch

    def fetch_then_ask(**kw: object) -> list[Record]:
        records = fetch(**kw)
        if agent.fetches == 2:  # the client asks for a commit after its first message
            deadline = time.monotonic() + DEADLINE_S
            while len(ws.received) < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            ws.inbox.append('{"commit": "all"}')
        return records
    agent.fetch = fetch_then_ask  # type: ignore[method-assign]
    run(agent, ws, {"topic": "t", "group": "billing", "auto_commit": "false"})
    got = [r["offset"] for m in ws.received for r in m.get("records", [])]
    assert agent.commits, "the client's commit was not made"
    first = agent.commits[0][("t", 0)]
    assert first <= max(got) + 1 and first in (10, 20), agent.commits  # records it had been sent
    assert agent.commits == [agent.commits[0]], "auto_commit=false committed at the close"


def test_an_anonymous_stream_commits_nothing() -> None:
    ws = ClientSocket()
    agent = InstanceAgent(ws)
    run(agent, ws, {"topic": "t"})
    assert agent.groups[0].startswith("ws-") and ws.received
    assert agent.commits == [], f"the anonymous stream's group {agent.groups[0]} was left with committed offsets"


def test_an_anonymous_stream_refuses_every_commit_command_and_stays_open() -> None:
    """{"commit": [...]} on a stream without group= was answered committed: true and left the
    generated ws-... group on the coordinator (kept 7 days, up to the 10,000-group limit);
    {"commit": "all"} was answered committed: true although nothing was committed."""
    commands = ['{"commit": [{"topic": "t", "partition": 0, "offset": 3}]}', '{"commit": "all"}',
                '{"commit": "all", "through": 1}']
    ws = ClientSocket(inbox=list(commands))
    agent = InstanceAgent(ws, leave_at_fetch=3)
    run(agent, ws, {"topic": "t"})
    answers = [m for m in ws.received if "committed" in m]
    assert len(answers) == 3 and all(m["committed"] is False and m["error"] == "no_group" and "group=" in m["message"]
                                     for m in answers), answers
    assert agent.commits == [], f"the anonymous stream's group {agent.groups[0]} was left with committed offsets"
    assert any("records" in m for m in ws.received[ws.received.index(answers[-1]):]), "the stream went on"


class RebalancedAgent(InstanceAgent):
    """t-0 and t-1 first; a rebalance then gives t-0 to another member. A commit naming a
    partition the member does not own is refused whole, as the coordinator does."""

    def __init__(self, ws: ClientSocket) -> None:
        super().__init__(ws, leave_at_fetch=0)
        self.held = {("t", 0), ("t", 1)}
        self.pos = {("t", 0): 0, ("t", 1): 0}
        self.refused: list[str] = []

    def fetch(self, **_kw: object) -> list[Record]:
        self.fetches += 1
        tp = ("t", 0) if self.fetches == 1 else ("t", 1)
        if self.fetches == 2:
            self.held = {("t", 1)}  # the rebalance
        if self.fetches > 1:
            deadline = time.monotonic() + DEADLINE_S
            while len(self.ws.received) < self.fetches - 1 and time.monotonic() < deadline:
                time.sleep(0.01)  # the earlier messages reached the client
        if self.fetches == 3:
            self.ws.inbox.append('{"commit": "all"}')
        if self.fetches == 4:
            self.ws.connected = False
            return []
        o = self.pos[tp]
        self.pos[tp] += 5
        return [Record(tp[0], tp[1], x, 0, None, b"v", None) for x in range(o, o + 5)]

    def assignment(self) -> list[tuple[str, int]]:
        return sorted(self.held)

    def commit(self, offsets: dict | None = None) -> None:
        for tp in offsets or {}:
            if tp not in self.held:
                self.refused.append(f"{tp} not assigned")
                raise ClusterError("invalid", f"{tp[0]}-{tp[1]} is not assigned to this member")
        self.commits.append(dict(offsets or {}))


def test_after_a_rebalance_commits_cover_the_partitions_still_owned() -> None:
    ws = ClientSocket()
    agent = RebalancedAgent(ws)
    run(agent, ws, {"topic": "t", "group": "billing", "auto_commit": "false"})
    assert agent.refused == [], agent.refused
    # t-0 is another member's now; t-1 up to what went out (the third message may have, or not)
    assert len(agent.commits) == 1 and agent.commits[0] in ({("t", 1): 5}, {("t", 1): 10}), agent.commits
    assert {"committed": True} in ws.received


def test_a_produce_message_that_is_not_an_object_is_answered_with_what_is_wanted() -> None:
    ws = ClientSocket(inbox=["[1, 2]"])

    def receive(timeout: float | None = None) -> str | None:
        if ws.inbox:
            return ws.inbox.pop(0)
        deadline = time.monotonic() + DEADLINE_S
        while not ws.received and time.monotonic() < deadline:  # the answer reached the client,
            time.sleep(0.01)
        ws.connected = False  # which then goes
        return None
    ws.receive = receive  # type: ignore[method-assign]
    out = wsmod.Outbox(ws, queue_max=100, slow_timeout_s=1.0)
    wsmod._produce(ws, out, SimpleNamespace(agent=None), {"topic": "t"})
    out.close(1000, "done")
    assert out.done.wait(DEADLINE_S)
    [answer] = ws.received
    assert answer["error_code"] == 42204 and "a JSON object is wanted, not list" in answer["message"], answer


class JoiningAgent(InstanceAgent):
    """t-0 throughout, but when the client's first ``through`` comes its member is in a
    rebalance -- joining, no partition yet -- which is over (t-0 back) by its second."""

    def __init__(self, ws: ClientSocket) -> None:
        super().__init__(ws, leave_at_fetch=0)
        self.joining = False

    def fetch(self, **_kw: object) -> list[Record]:
        self.fetches += 1
        if self.fetches == 3:  # messages 1 and 2 reached the client, which confirms them
            self._wait_for(lambda: len([m for m in self.ws.received if "records" in m]) == 2)
            self.joining = True
            self.ws.inbox.append('{"commit": "all", "through": 2}')
        if self.fetches == 4:  # answered; the join is over and the client asks again
            self._wait_for(lambda: len([m for m in self.ws.received if "committed" in m]) == 1)
            self.joining = False
            self.ws.inbox.append('{"commit": "all", "through": 2}')
        if self.fetches == 5:
            self._wait_for(lambda: len([m for m in self.ws.received if "committed" in m]) == 2)
            self.ws.connected = False
        if self.fetches > 2:
            return []
        self.position += 10
        return [Record("t", 0, o, 0, None, b"v", None) for o in range(self.position - 10, self.position)]

    def _wait_for(self, condition) -> None:  # noqa: ANN001
        deadline = time.monotonic() + DEADLINE_S
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)

    def owned(self) -> list[tuple[str, int]] | None:
        return None if self.joining else self.assignment()


def test_a_commit_while_the_member_joins_is_refused_and_what_it_covered_is_committed_later() -> None:
    """A member in a rebalance holds no partition until its join completes: a ``through`` then
    was answered committed: true, committed nothing, and forgot the messages it covered -- a
    client that went away on that answer had the group deliver them again."""
    ws = ClientSocket()
    agent = JoiningAgent(ws)
    run(agent, ws, {"topic": "t", "group": "billing", "auto_commit": "false"})
    answers = [m for m in ws.received if "committed" in m]
    assert [(m["committed"], m.get("error")) for m in answers] == [(False, "rebalance"), (True, None)], answers
    assert agent.commits == [{("t", 0): 20}], agent.commits


@pytest.mark.parametrize("value", ["0", "no", "False", "maybe", ""])
def test_an_auto_commit_that_is_neither_true_nor_false_is_refused_before_anything_is_made(value: str) -> None:
    """``auto_commit=`` is ``true`` or ``false``, as REST's ``auto.commit.enable`` (422 for
    anything else) and the stream's ``format=`` and ``from=`` (1008). Anything but the exact text
    ``false`` turned auto-commit on: a client that asked for ``auto_commit=0`` or ``=no``, to
    commit only what it processed, had every record that went out committed."""
    ws = ClientSocket()
    agent = InstanceAgent(ws)
    with pytest.raises(ApiError) as refused:
        run(agent, ws, {"topic": "t", "group": "billing", "auto_commit": value})
    assert refused.value.error_code == 42206 and "auto_commit" in refused.value.message
    assert agent.groups == [] and agent.commits == [], "a stream was made for a refused query"
