"""The monitor's in-memory history: one point per series per tick in fixed rings of
``HISTORY_POINTS_MAX`` (at one tick a second, 16.7 minutes), at most ``HISTORY_SERIES_MAX``
series (new ones past that are dropped and counted). Memory is bounded by
points x series x 8 bytes (16 MB at the limits).

A series missing at a tick gets NaN (sent as null). Lost when the monitor restarts.
Not thread-safe: owned by the monitor's reactor.
"""

from __future__ import annotations

import math
from array import array

from fabric import protocol as P


class History:
    def __init__(self, points_max: int = P.HISTORY_POINTS_MAX, series_max: int = P.HISTORY_SERIES_MAX) -> None:
        self.points_max = points_max
        self.series_max = series_max
        self.times = array("q", [0] * points_max)  # wall ms of each tick
        self.series: dict[str, array] = {}
        self.head = 0       # next slot to write
        self.count = 0      # points written, up to points_max
        self.series_dropped = 0
        self.ticks = 0
        self.last_tick: dict[str, int] = {}  # series -> the tick of its newest value

    def append(self, wall_ms: int, values: dict[str, float]) -> None:
        slot = self.head
        self.times[slot] = wall_ms
        for key, ring in self.series.items():
            ring[slot] = values.get(key, math.nan)
        self.ticks += 1
        for key in values:
            self.last_tick[key] = self.ticks
        for key in values:  # new series, in the caller's order (the first ones win the slots)
            if key in self.series:
                continue
            if len(self.series) >= self.series_max:
                aged = next((k for k, n in self.last_tick.items() if k in self.series
                             and self.ticks - n >= self.points_max), None)
                if aged is None:
                    self.series_dropped += 1
                    self.last_tick.pop(key, None)
                    continue
                del self.series[aged], self.last_tick[aged]  # no point of it left in the rings
            ring = self.series[key] = array("d", [math.nan]) * self.points_max
            ring[slot] = values[key]
        self.head = (slot + 1) % self.points_max
        self.count = min(self.count + 1, self.points_max)

    def query(self, prefixes: list[str] | None = None, since_wall_ms: int = 0) -> dict:
        """{t: [wall ms...], series: {key: [value|None...]}} oldest first, for keys starting
        with one of ``prefixes`` (all when None), points after ``since_wall_ms``."""
        start = (self.head - self.count) % self.points_max
        slots = [(start + i) % self.points_max for i in range(self.count)]
        slots = [s for s in slots if self.times[s] > since_wall_ms]
        keys = [k for k in self.series if prefixes is None or any(k.startswith(p) for p in prefixes)]
        return {"t": [self.times[s] for s in slots],
                "series": {k: [_num(self.series[k][s]) for s in slots] for k in sorted(keys)}}


def _num(v: float) -> float | None:
    return None if math.isnan(v) else v
