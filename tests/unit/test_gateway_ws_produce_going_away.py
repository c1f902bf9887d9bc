"""/ws/produce when the gateway stops (SIGTERM: ``OpenSockets.going_away``): a message the route
took is produced and its answer reaches the client before the close (1001) -- the client must
know whether each record it sent was written. The close dropped the queue at once: the answer
of a produce under way (its records written) was lost, and so were answers queued for a slow
client, which then sends those records again (written twice) or cannot tell. The route and
its Outbox run for real; the socket and the agent are fakes."""

from __future__ import annotations

import json
import queue
import threading
from types import SimpleNamespace
from typing import Any

from webui.ws import _produce
from webui.ws_outbox import GOING_AWAY, OpenSockets, Outbox


class ClientSocket:
    """The client's side: messages it sent (``incoming``), what it was sent, its close code."""

    def __init__(self) -> None:
        self.incoming: queue.Queue[str] = queue.Queue()
        self.connected = True
        self.sent: list[dict] = []
        self.closed_with: tuple[int, str] | None = None
        self.sock = self

    def receive(self, timeout: float | None = None) -> str | None:
        try:
            return self.incoming.get(timeout=timeout)
        except queue.Empty:
            return None

    def send(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)
        self.connected = False

    def shutdown(self, how: int) -> None:
        self.connected = False


class SlowAgent:
    """Writes each request once ``release`` is set (the produce under way at the signal)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.written: list[list] = []

    def produce(self, topic: str, records: list, acks: Any) -> list:
        self.started.set()
        assert self.release.wait(10)
        self.written.append(records)
        return [(0, 7, None, False)] * len(records)


def test_a_produce_under_way_at_going_away_is_answered_before_the_close() -> None:
    ws, agent, sockets = ClientSocket(), SlowAgent(), OpenSockets()
    out = Outbox(ws, queue_max=16, slow_timeout_s=2)
    sockets.add(out)
    gw = SimpleNamespace(agent=agent)
    route = threading.Thread(target=_produce, args=(ws, out, gw, {"topic": "t"}), daemon=True)
    ws.incoming.put(json.dumps({"id": 1, "value": "v"}))
    route.start()
    assert agent.started.wait(5)
    sockets.going_away("the gateway is stopping: reconnect")
    agent.release.set()  # the records are written
    route.join(10)
    assert not route.is_alive(), "the route ends at going away"
    assert out.done.wait(10)
    assert len(agent.written) == 1
    assert ws.sent == [{"id": 1, "offsets": [{"partition": 0, "offset": 7, "error_code": None, "error": None}]}], \
        "the written records' answer reached the client"
    assert ws.closed_with is not None and ws.closed_with[0] == GOING_AWAY
