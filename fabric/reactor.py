"""One reactor per node: a ``zmq.Poller`` loop with timers (the zguide's pattern).

The poll timeout is the time to the next timer. After every wake-up the loop drains each
ready socket (at most ``DRAIN_MESSAGES_MAX`` messages, so one busy peer cannot starve the
rest), runs the per-pass hooks (group commit, parked-request checks), then due timers in
deadline order.

Thread-safety: a Reactor and the sockets it owns belong to the thread that runs it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from typing import Callable

import zmq

from fabric import protocol as P
from fabric.clock import Clock

log = logging.getLogger(__name__)

MessageHandler = Callable[[list[bytes]], None]


class Timer:
    __slots__ = ("deadline_ms", "fn", "interval_ms", "cancelled")

    def __init__(self, deadline_ms: int, fn: Callable[[], None], interval_ms: int | None) -> None:
        self.deadline_ms = deadline_ms
        self.fn = fn
        self.interval_ms = interval_ms
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Reactor:
    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.poller = zmq.Poller()
        self._handlers: dict[zmq.Socket, MessageHandler] = {}
        self._timers: list[tuple[int, int, Timer]] = []
        self._seq = itertools.count()
        self._after_pass: list[Callable[[], None]] = []
        self._stopped = False

    # -- registration ------------------------------------------------------------------
    def add_socket(self, sock: zmq.Socket, handler: MessageHandler) -> None:
        """Call ``handler(frames)`` for every message that arrives on ``sock``."""
        self._handlers[sock] = handler
        self.poller.register(sock, zmq.POLLIN)

    def remove_socket(self, sock: zmq.Socket) -> None:
        if sock in self._handlers:
            del self._handlers[sock]
            self.poller.unregister(sock)

    def after_pass(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once after every drain pass (before timers): e.g. group commit."""
        self._after_pass.append(fn)

    def call_later(self, delay_ms: int, fn: Callable[[], None]) -> Timer:
        return self._push(Timer(self.clock.now_ms() + max(0, delay_ms), fn, None))

    def call_every(self, interval_ms: int, fn: Callable[[], None]) -> Timer:
        assert interval_ms > 0
        return self._push(Timer(self.clock.now_ms() + interval_ms, fn, interval_ms))

    def _push(self, t: Timer) -> Timer:
        assert len(self._timers) < P.TIMERS_MAX, "timer table full"
        heapq.heappush(self._timers, (t.deadline_ms, next(self._seq), t))
        return t

    # -- the loop ------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopped = True

    def run(self) -> None:
        self._stopped = False
        while not self._stopped:
            self.run_once()

    def run_once(self, timeout_ms_max: int = 1000) -> None:
        timeout = self._timeout_ms(timeout_ms_max)
        events = self.poller.poll(timeout)
        for sock, _ in events:
            self._drain(sock)
        for fn in self._after_pass:
            try:
                fn()
            except Exception:  # like a timer: a bug in a hook must not take the node down
                log.exception("after-pass hook %r failed", fn)
        self._run_timers()

    def _timeout_ms(self, timeout_ms_max: int) -> int:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return timeout_ms_max
        return max(0, min(timeout_ms_max, self._timers[0][0] - self.clock.now_ms()))

    def _drain(self, sock: zmq.Socket) -> None:
        handler = self._handlers.get(sock)
        if handler is None:
            return
        for _ in range(P.DRAIN_MESSAGES_MAX):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            handler(frames)

    def _run_timers(self) -> None:
        now = self.clock.now_ms()
        while self._timers and self._timers[0][0] <= now:
            _, _, t = heapq.heappop(self._timers)
            if t.cancelled:
                continue
            try:
                t.fn()
            except Exception:  # a failing timer must not kill the node; it is a bug to log
                log.exception("timer %r failed", t.fn)
            if t.interval_ms is not None and not t.cancelled:
                t.deadline_ms = max(t.deadline_ms + t.interval_ms, now)
                self._push(t)
