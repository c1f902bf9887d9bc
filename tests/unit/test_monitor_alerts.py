"""The monitor's alert state machine (nodes/monitor/alerts.py): pending, firing, resolved, and
its persistence across a restart."""

from __future__ import annotations

from pathlib import Path

from nodes.monitor.alerts import FIRING, PENDING, RESOLVED, AlertBook


def test_alerts_pend_fire_resolve_and_survive_a_restart(tmp_path: Path) -> None:
    changes: list[tuple[str, str]] = []
    book = AlertBook(tmp_path, lambda rule: 1000, lambda a: changes.append((a.rule, a.state)))
    key = ("node_down", "broker-1")
    book.evaluate({key: ("down", None)}, {"node_down"}, 10_000)
    assert book.active[key].state == PENDING and not changes
    book.evaluate({key: ("down", None)}, {"node_down"}, 11_000)
    assert book.active[key].state == FIRING and changes == [("node_down", FIRING)]
    book.save([])
    again = AlertBook(tmp_path, lambda rule: 1000, lambda a: changes.append((a.rule, a.state)))
    assert again.active[key].state == FIRING and again.active[key].fired_ms == 11_000
    again.evaluate({}, set(), 12_000)  # the rule was not judged: nothing resolves
    assert again.active[key].state == FIRING
    again.evaluate({}, {"node_down"}, 13_000)
    assert key not in again.active and changes[-1] == ("node_down", RESOLVED)
    assert [a["state"] for a in again.listing(True)] == [RESOLVED]
    # a pending alert whose condition goes away never fires
    again.evaluate({("offline_partitions", "cluster"): ("x", 1)}, set(), 20_000)
    again.evaluate({}, {"offline_partitions"}, 20_500)
    assert changes[-1] == ("node_down", RESOLVED) and not again.active
