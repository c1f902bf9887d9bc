"""Noticing that this node itself stopped running (SIGSTOP, a frozen VM, a swapped-out process,
a handler that blocked).

A node's reactor passes are normally at most one poll timeout apart, so a much longer gap means
the node did not listen for that long. Silence it did not listen to is no evidence against
anyone: the owner moves every peer's last sign of life (or lag clock) forward by the stall,
capped at the resume (``forgiven_ms``, the one rule every node uses), so that only silence it
listened to counts -- also when it stalls again and again (restarting every session from the
resume let a dead peer escape forever then).
Deciding late is safe; deciding on silence nobody listened to is not.

Not thread-safe: owned by the node's reactor.
"""

from __future__ import annotations

import logging
from typing import Callable

from fabric.clock import Clock

log = logging.getLogger(__name__)

STALL_THRESHOLD_MS_MIN = 2000  # a pass gap under this is a busy machine, not a stall


def forgiven_ms(since_ms: int, now_ms: int, stalled_ms: int) -> int:
    """``since_ms`` (a peer's last sign of life, the start of its lag or of a run of failures)
    after this node stalled for ``stalled_ms`` until ``now_ms``: moved forward by the stall,
    never past ``now_ms`` -- the stall's silence does not count, what was heard before it does."""
    return min(now_ms, since_ms + stalled_ms)


def stall_threshold_ms(interval_ms: int) -> int:
    """The threshold of a loop that runs every ``interval_ms``: two of its passes missed, and at
    least STALL_THRESHOLD_MS_MIN."""
    return max(STALL_THRESHOLD_MS_MIN, 2 * interval_ms)


class StallWatch:
    def __init__(self, clock: Clock, threshold_ms: int, on_resume: Callable[[int, int], None]) -> None:
        """``on_resume(now_ms, stalled_ms)`` runs once after every pass gap over ``threshold_ms``.
        Call ``tick`` from a per-pass hook (``Reactor.after_pass``): those run before the timers
        that pass verdicts."""
        assert threshold_ms > 0
        self.clock = clock
        self.threshold_ms = threshold_ms
        self.on_resume = on_resume
        self.last_pass_ms = clock.now_ms()
        self.stalls = 0

    def tick(self) -> None:
        now = self.clock.now_ms()
        gap_ms = now - self.last_pass_ms
        self.last_pass_ms = now
        if gap_ms > self.threshold_ms:
            self.stalls += 1
            log.warning("this node did not run for %d ms: peers are judged by what they send from now on", gap_ms)
            self.on_resume(now, gap_ms)
