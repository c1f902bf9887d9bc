"""A closed group consumer commits and looks up nothing: ``commit`` (sync or async),
``committed`` and ``committed_offsets`` raise FabricError("consumer is closed"), as ``poll``
does, and no request reaches the coordinator (as Kafka's consumer raises
IllegalStateException). An assigned consumer's commit after ``close`` went out on a link
opened again for it, outside any generation: the group's committed offset moved back to what
a closed application still committed, and the link was never closed again; a member's was
refused as if it had not joined yet ("poll() joins it again")."""

from __future__ import annotations

import pytest

from fabric import protocol as P
from fabric.errors import FabricError
from tests.unit.builders_group_consumer import T0, HeldWorld


@pytest.mark.parametrize("subscribed", [False, True])
def test_a_closed_consumer_neither_commits_nor_looks_up(subscribed: bool) -> None:
    w = HeldWorld(P.DESCRIBE_GROUPS, enable_auto_commit=False)  # nothing is held
    c = w.consumer
    if subscribed:
        c.subscribe(["t"])
    else:
        c.assign([T0])
    got: list = []
    for _ in range(50):
        got += c.poll(100)
        if got:
            break
    assert got
    c.commit()
    committed = w.coordinator.committed[T0]
    assert committed == got[-1].offset + 1
    c.close()
    sent = len(w.client.calls)
    for late in (lambda: c.commit({T0: 3}), lambda: c.commit({T0: 3}, asynchronous=True), lambda: c.commit(),
                 lambda: c.committed(T0), lambda: c.committed_offsets([T0])):
        with pytest.raises(FabricError, match="consumer is closed"):
            late()
    w.reactor.run_once(0)  # whatever might have gone out is answered
    assert w.client.calls[sent:] == []
    assert w.coordinator.committed[T0] == committed
