"""Injected clocks. Node logic asks its clock, never ``time`` directly, so a simulator can
tick it. Monotonic milliseconds for deadlines; wall milliseconds only for record timestamps."""

from __future__ import annotations

import time


class Clock:
    """The real clock. Thread-safe."""

    def now_ms(self) -> int:
        """Monotonic milliseconds: for deadlines and intervals."""
        return time.monotonic_ns() // 1_000_000

    def wall_ms(self) -> int:
        """Unix-epoch milliseconds: for timestamps people read."""
        return time.time_ns() // 1_000_000


class ManualClock(Clock):
    """A clock a test or simulator advances by hand. Not thread-safe."""

    def __init__(self, start_ms: int = 0, wall_offset_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = start_ms
        self._wall_offset_ms = wall_offset_ms

    def now_ms(self) -> int:
        return self._now_ms

    def wall_ms(self) -> int:
        return self._now_ms + self._wall_offset_ms

    def advance(self, ms: int) -> None:
        self._now_ms += ms
