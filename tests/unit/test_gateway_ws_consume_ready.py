"""/ws/consume tells its client when the stream's consumer is positioned: ``{"ready": true,
"assignment": [...]}`` once it has its assignment and a position in every partition of it (so
every record produced from then on is delivered), again after each rebalance, and
``{"ready": false}`` when a rebalance takes the positions away. The stream used to say nothing:
the dashboard's tail counted itself live from the socket's open, while a new group's member
still joined (~100 ms), and a tail "from the end" missed what was produced meanwhile.

``_consume`` runs for real, with an agent whose fetches answer what a scripted instance would."""

from __future__ import annotations

import time

from fabric.client.services import Fetched
from fabric.records import Record
from tests.unit.test_gateway_ws_consume_commits import DEADLINE_S, ClientSocket, InstanceAgent, run
from webui import ws_consume as consumemod

T0, T1 = ("t", 0), ("t", 1)


def _records(tp: tuple[str, int], first: int, n: int) -> list[Record]:
    return [Record(tp[0], tp[1], o, 0, None, b"v", None) for o in range(first, first + n)]


class ScriptedAgent(InstanceAgent):
    """Answers its fetches from ``script`` (``Fetched``s); then, once ``messages`` messages
    reached the client, the client goes away."""

    def __init__(self, ws: ClientSocket, script: list[Fetched], messages: int) -> None:
        super().__init__(ws, leave_at_fetch=0)
        self.script, self.messages = script, messages
        self.timeouts_ms: list[int] = []

    def fetch_with_positions(self, timeout_ms: int = 0, **_kw: object) -> Fetched:
        self.timeouts_ms.append(timeout_ms)
        if self.script:
            return self.script.pop(0)
        deadline = time.monotonic() + DEADLINE_S
        while len(self.ws.received) < self.messages and time.monotonic() < deadline:
            time.sleep(0.01)  # what was queued reached the client (the close drops the rest)
        self.ws.connected = False
        return Fetched([], None, -1)


def _messages(script: list[Fetched], messages: int) -> tuple[list, ScriptedAgent]:
    """What the client got, each records message as the (partition, offset) of its records."""
    ws = ClientSocket()
    agent = ScriptedAgent(ws, script, messages)
    run(agent, ws, {"topic": "t", "from": "end"})
    return [[(r["partition"], r["offset"]) for r in m["records"]] if "records" in m else m
            for m in ws.received], agent


def test_ready_comes_once_the_consumer_is_positioned_after_that_fetch_s_records() -> None:
    received, agent = _messages([
        Fetched([], None, -1),                              # joining
        Fetched([], None, 1),                               # joined, looking the log end up
        Fetched(_records(T0, 7, 2), {T0: 9, T1: 4}, 1),      # positioned
        Fetched(_records(T1, 4, 1), {T0: 9, T1: 5}, 1),      # nothing new to tell
    ], messages=3)
    assert received == [
        [(0, 7), (0, 8)],
        {"ready": True, "assignment": [{"topic": "t", "partition": 0, "offset": 9},
                                       {"topic": "t", "partition": 1, "offset": 4}]},
        [(1, 4)],
    ], received
    # until ready, the stream asks often: ready goes out soon after the consumer is positioned
    assert agent.timeouts_ms[:3] == [consumemod.UNPOSITIONED_FETCH_TIMEOUT_MS] * 3
    assert agent.timeouts_ms[3:] == [consumemod.FETCH_TIMEOUT_MS] * 2


def test_a_rebalance_is_told_not_ready_then_ready_with_the_new_assignment() -> None:
    received, _agent = _messages([
        Fetched([], {T0: 0, T1: 0}, 1),
        Fetched([], None, 1),               # a rebalance under way
        Fetched([], {T1: 3}, 2),            # generation 2: t-1 only
        Fetched([], {T0: 5}, 3),            # another rebalance, done between two fetches
    ], messages=4)
    assert received == [
        {"ready": True, "assignment": [{"topic": "t", "partition": 0, "offset": 0},
                                       {"topic": "t", "partition": 1, "offset": 0}]},
        {"ready": False},
        {"ready": True, "assignment": [{"topic": "t", "partition": 1, "offset": 3}]},
        {"ready": True, "assignment": [{"topic": "t", "partition": 0, "offset": 5}]},
    ], received
