"""The monitor's metrics history (nodes/monitor/history.py) is bounded in points and series."""

from __future__ import annotations

from nodes.monitor.history import History


def test_history_is_bounded_in_points_and_series() -> None:
    h = History(points_max=5, series_max=2)
    for i in range(8):
        h.append(1000 * i, {"a": i, "b": 2 * i, "c": 3 * i} if i != 6 else {"a": i})
    q = h.query()
    assert q["t"] == [3000, 4000, 5000, 6000, 7000]
    assert q["series"] == {"a": [3, 4, 5, 6, 7], "b": [6, 8, 10, None, 14]}
    assert h.series_dropped > 0
    assert h.query(["b"], since_wall_ms=5000) == {"t": [6000, 7000], "series": {"b": [None, 14]}}
