"""/ws/consume: what the stream sent before a rebalance must not be committed below what the group
committed meanwhile. A stream that sent records of a partition, lost it to another member (which
read on and committed further) and got it back holds marks of that partition below the group's
committed offset; the coordinator refuses a member's commit that moves an offset backward, and
refuses it whole -- so every commit of the stream, of every partition, was refused for as long as
that partition brought no new record (an idle one: forever), and what the stream's client read
was delivered again to the group's next member.

``_consume`` runs for real; the agent models one hosted instance and the coordinator's checks
(generation, ownership, never backward)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from fabric.client.services import Fetched
from fabric.records import Record
from tests.unit.test_gateway_ws_consume_commits import DEADLINE_S, ClientSocket
from webui import ws as wsmod
from webui import ws_consume as consumemod
from webui.errors import ClusterError

P0, P1 = ("t", 0), ("t", 1)


class RebalancedInstance:
    """Fetch 1 (generation 1, owns p0 and p1): p0 0-9 and p1 0-9; the client then commits all,
    refused by the rebalance under way. Generation 2: p0 went to another member, which commits 50.
    Generation 3: p0 is back (idle at 50), p1 goes on; the client commits all again."""

    def __init__(self, ws: ClientSocket) -> None:
        self.ws = ws
        self.fetches = 0
        self.generation = 1
        self.held = [P0, P1]
        self.group_committed: dict[tuple[str, int], int] = {}
        self.commits: list[dict] = []
        self.refuse_as_rebalance = False

    # -- the agent ---------------------------------------------------------------------------
    def topic(self, name: str) -> None:
        return None

    def create_instance(self, group: str, name: str | None, config: dict, fmt: str) -> SimpleNamespace:
        return SimpleNamespace(name="i-1")

    def subscribe(self, group: str, name: str, topics: list[str]) -> None:
        return None

    def call_instance(self, group: str, name: str, op):  # noqa: ANN001, ANN201
        return op(self)

    def delete_instance(self, group: str, name: str) -> None:
        return None

    # -- the instance ------------------------------------------------------------------------
    def fetch_with_positions(self, **_kw: object) -> Fetched:
        self.fetches += 1
        records: list[Record] = []
        if self.fetches == 1:
            records = [Record("t", p, o, 0, None, b"v", None) for p in (0, 1) for o in range(10)]
        elif self.fetches == 2:
            self._wait_for(lambda: self._records_messages() >= 1)
            self.refuse_as_rebalance = True
            self.ws.inbox.append('{"commit": "all"}')
        elif self.fetches == 3:
            self._wait_for(lambda: self._answers() >= 1)
            self.refuse_as_rebalance = False
            self.generation, self.held = 2, [P1]
            self.group_committed[P0] = 50  # the member that took p0 read on and committed
            records = [Record("t", 1, o, 0, None, b"v", None) for o in range(10, 20)]
        elif self.fetches == 4:
            self.generation, self.held = 3, [P0, P1]  # p0 is back, at 50, and nothing new comes to it
            records = [Record("t", 1, o, 0, None, b"v", None) for o in range(20, 30)]
        elif self.fetches == 5:
            self._wait_for(lambda: self._records_messages() >= 3)
            self.ws.inbox.append('{"commit": "all"}')
        elif self.fetches == 6:
            self._wait_for(lambda: self._answers() >= 2)
            self.ws.connected = False
        positions = {tp: 0 for tp in self.held}
        return Fetched(records, positions, self.generation)

    def assignment(self) -> list[tuple[str, int]]:
        return list(self.held)

    def owned(self) -> list[tuple[str, int]]:
        return self.assignment()  # never joining here

    def committed(self, partitions: list[tuple[str, int]] | None = None) -> dict[tuple[str, int], int]:
        return {tp: self.group_committed.get(tp, -1) for tp in (partitions or self.held)}

    def commit(self, offsets: dict | None = None) -> None:
        assert offsets is not None
        if self.refuse_as_rebalance:
            raise ClusterError("rebalance", "rebalance_in_progress: fetch records again, then commit")
        for tp, o in offsets.items():
            if tp not in self.held:
                raise ClusterError("invalid_offset", f"partition_not_assigned: {tp}")
            if o < self.group_committed.get(tp, -1):
                raise ClusterError("cluster", f"invalid_commit_offset: offset {o} for {tp} is below the committed "
                                              f"{self.group_committed[tp]}")
        self.group_committed.update(offsets)
        self.commits.append(dict(offsets))

    # -- helpers -----------------------------------------------------------------------------
    def _records_messages(self) -> int:
        return len([m for m in self.ws.received if "records" in m])

    def _answers(self) -> int:
        return len([m for m in self.ws.received if "committed" in m])

    def _wait_for(self, condition) -> None:  # noqa: ANN001
        deadline = time.monotonic() + DEADLINE_S
        while not condition() and self.ws.connected and time.monotonic() < deadline:
            time.sleep(0.01)


def _commit_answers(agent: RebalancedInstance, ws: ClientSocket) -> list[dict]:
    """Run the stream of group billing with ``agent`` to its end; the answers to its commits."""
    out = wsmod.Outbox(ws, queue_max=100, slow_timeout_s=1.0)
    try:
        consumemod.consume(ws, out, SimpleNamespace(agent=agent), {"topic": "t", "group": "billing", "auto_commit": "false"})
    except wsmod.Closed:
        pass
    out.close(1000, "done")
    assert out.done.wait(DEADLINE_S)
    return [m for m in ws.received if "committed" in m]


def test_marks_sent_before_a_rebalance_do_not_make_every_later_commit_go_backward() -> None:
    ws = ClientSocket()
    agent = RebalancedInstance(ws)
    answers = _commit_answers(agent, ws)
    assert len(answers) == 2, answers
    assert answers[0]["committed"] is False, "the first commit came during the rebalance"
    assert answers[1] == {"committed": True}, \
        f"the commit after the rebalance was refused ({answers[1]}): a mark of p0 from before it is below the 50 " \
        "the group committed meanwhile, and the coordinator refuses the whole commit"
    assert agent.group_committed.get(P1) == 30, agent.group_committed
    assert agent.group_committed.get(P0) == 50, "p0 went backward"

class LaggingClient(RebalancedInstance):
    """Generation 1: message 1 has p1 0-9, message 2 p0 0-9. Generation 3 (p0 was another
    member's in 2, which committed 50): p0 is back, idle at 50, message 3 has p1 10-19. The
    client, reading behind, confirms message 1 (p1 only: the first commit of generation 3), then
    2 (p0 below 50), then 3."""

    def fetch_with_positions(self, **_kw: object) -> Fetched:
        self.fetches += 1
        records: list[Record] = []
        if self.fetches in (1, 2):
            records = [Record("t", 2 - self.fetches, o, 0, None, b"v", None) for o in range(10)]
        elif self.fetches == 3:
            self._wait_for(lambda: self._records_messages() >= 2)
            self.generation = 3
            self.group_committed[P0] = 50  # the member that held p0 in generation 2 read on and committed
            records = [Record("t", 1, o, 0, None, b"v", None) for o in range(10, 20)]
        elif self.fetches in (4, 5, 6):
            self._wait_for(lambda: self._records_messages() >= 3 and self._answers() >= self.fetches - 4)
            self.ws.inbox.append('{"commit": "all", "through": %d}' % (self.fetches - 3))
        elif self.fetches == 7:
            self._wait_for(lambda: self._answers() >= 3)
            self.ws.connected = False
        return Fetched(records, {tp: 0 for tp in self.held}, self.generation)


def test_a_mark_confirmed_after_the_first_commit_of_a_generation_is_not_committed_backward() -> None:
    """The group's committed offsets were looked up once per generation, for the partitions of
    its first commit only: a mark of another partition from before the rebalance, confirmed
    later, went out below what the group held -- refused, and with it every later commit for as
    long as that partition brought nothing new."""
    ws = ClientSocket()
    agent = LaggingClient(ws)
    answers = _commit_answers(agent, ws)
    assert answers == [{"committed": True}] * 3, answers
    assert agent.group_committed == {P0: 50, P1: 20}, agent.group_committed
