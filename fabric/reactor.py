"""One reactor per node: a ``zmq.Poller`` loop with timers (the zguide's pattern).

The poll timeout is the time to the next timer. After every wake-up the loop drains each
ready socket (at most ``DRAIN_MESSAGES_MAX`` messages, or the socket's own lower bound given to
``add_socket``, so one busy peer cannot starve the rest), runs the per-pass hooks (group
commit, parked-request checks), then due timers in deadline order, then what was handed to
``at_pass_end`` (the publisher's write of the pass's messages).

Errors: an operating error (a ``LoomError``: a refused request, a peer's bad message, a full
disk) raised by a timer or a hook is logged and the loop goes on; so is one raised by a message
handler of a node's reactor (``contain_handler_errors``). Anything else is a programmer error
(an ``AssertionError``, a ``TypeError``…): it leaves ``run_once`` so that the node stops and is
restarted from disk rather than serving on with broken state.

Thread-safety: a Reactor and the sockets it owns belong to the thread that runs it.
"""

from __future__ import annotations

import heapq
import logging
import time
from typing import Callable

import zmq

from fabric import protocol as P
from fabric.clock import Clock
from fabric.errors import LoomError
from fabric.waker import Waker
from fabric.zmq_io import receive_frames

log = logging.getLogger(__name__)

_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)

MessageHandler = Callable[[list[bytes]], None]
# Called with the poll events (zmq.POLLIN | zmq.POLLOUT | zmq.POLLERR) of a plain descriptor.
DescriptorHandler = Callable[[int], None]


# Cancelled timers stay in the heap until they reach its top, and a periodic timer due sooner
# (a heartbeat) keeps them from ever getting there: every RPC request arms a timeout that its
# reply cancels, so they would fill the table. The heap is rebuilt without them once they are
# at least this many and make up half of it (amortised O(1) per cancel, like asyncio's loop).
CANCELLED_TIMERS_COMPACT_MIN = 256


def _wait(timeout_ms: int) -> list:
    """The poll of a reactor with nothing to poll (a client whose connections are all between
    two connect attempts): pyzmq's poll of no sockets returns at once, and the loop spun a core
    until its next timer."""
    if timeout_ms > 0:
        time.sleep(timeout_ms / 1000)
    return []


class Timer:
    __slots__ = ("deadline_ms", "fn", "interval_ms", "cancelled", "_reactor")

    def __init__(self, deadline_ms: int, fn: Callable[[], None], interval_ms: int | None) -> None:
        self.deadline_ms = deadline_ms
        self.fn = fn
        self.interval_ms = interval_ms
        self.cancelled = False
        self._reactor: Reactor | None = None  # set while the timer sits in that reactor's heap

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        # what the callback refers to (a client, a consumer and its buffers) is let go now, not
        # when the husk leaves the heap (when due, or at the next compaction)
        self.fn = _cancelled
        if self._reactor is not None:
            self._reactor._timer_cancelled()


def _cancelled() -> None:
    """A cancelled timer's callback: never called (the reactor skips cancelled timers)."""


class Reactor:
    def __init__(self, clock: Clock | None = None, *, contain_handler_errors: bool = False) -> None:
        """``contain_handler_errors``: a node's reactor logs an operating error (``LoomError``)
        raised by a message handler (a reply callback, a subscriber) and goes on serving; a
        client's reactor lets it reach the caller (e.g. ``offset_out_of_range`` out of
        ``Consumer.poll``). Programmer errors reach the caller of ``run_once`` either way."""
        self.contain_handler_errors = contain_handler_errors
        self.clock = clock or Clock()
        self.poller = zmq.Poller()
        self._handlers: dict[zmq.Socket, MessageHandler] = {}
        self._drain_max: dict[zmq.Socket, int] = {}
        self._wakers: dict[int, tuple[Waker, Callable[[], None]]] = {}  # by descriptor
        self._descriptors: dict[int, DescriptorHandler] = {}  # plain descriptors (TCP sockets)
        self._timers: list[tuple[int, int, Timer]] = []
        self._pushed = 0  # timers ever pushed: each one's place among equal deadlines
        self._cancelled_in_heap = 0
        self._after_pass: list[Callable[[], None]] = []
        self._pass_end: list[Callable[[], None]] = []  # at_pass_end: run once, after the timers
        self._stopped = False
        self._pass_soon = False  # the next poll does not wait (pass_soon)
        self.passes = 0  # run_once calls so far: a handler's per-pass budgets start again when it moves

    # -- registration ------------------------------------------------------------------
    def add_socket(self, sock: zmq.Socket, handler: MessageHandler, *,
                   messages_max: int = P.DRAIN_MESSAGES_MAX) -> None:
        """Call ``handler(frames)`` (every frame copied to bytes) for every message that
        arrives on ``sock``, at most ``messages_max`` of them per pass (a socket whose messages
        are dear to handle gets a lower bound, so the other sockets and the per-pass hooks are
        served between them)."""
        assert 0 < messages_max <= P.DRAIN_MESSAGES_MAX
        self._handlers[sock] = handler
        self._drain_max[sock] = messages_max
        self.poller.register(sock, zmq.POLLIN)

    def add_waker(self, waker: Waker, handler: Callable[[], None]) -> None:
        """Call ``handler()`` on the pass after ``waker.wake()`` (from any thread); wakes
        that come while it runs bring one more call."""
        self._wakers[waker.fd] = (waker, handler)
        self.poller.register(waker.fd, zmq.POLLIN)

    def remove_waker(self, waker: Waker) -> None:
        """Before ``waker.close()``: a closed descriptor must not be polled."""
        if self._wakers.pop(waker.fd, None) is not None:
            self.poller.unregister(waker.fd)

    def add_descriptor(self, fd: int, handler: DescriptorHandler, events: int = zmq.POLLIN) -> None:
        """Call ``handler(events)`` when the plain descriptor ``fd`` (a socket of the operating
        system, not of libzmq) is ready for ``events``; level-triggered, as every poll here:
        what a handler leaves unread makes the next pass call it again."""
        self._descriptors[fd] = handler
        self.poller.register(fd, events)

    def modify_descriptor(self, fd: int, events: int) -> None:
        """Poll ``fd`` for these events from now on (e.g. POLLOUT while output waits; 0: not
        polled until modified again)."""
        if fd in self._descriptors:
            self.poller.register(fd, events)  # zmq.Poller: registering again modifies, 0 unregisters

    def remove_descriptor(self, fd: int) -> None:
        """Before the descriptor is closed: a closed (and maybe reused) one must not be polled."""
        if self._descriptors.pop(fd, None) is not None:
            self.poller.register(fd, 0)  # unregisters; nothing when it was modified to 0

    def remove_socket(self, sock: zmq.Socket) -> None:
        if sock in self._handlers:
            del self._handlers[sock]
            del self._drain_max[sock]
            self.poller.unregister(sock)

    def after_pass(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once after every drain pass (before timers): e.g. group commit."""
        self._after_pass.append(fn)

    def at_pass_end(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once, after this pass's timers (the next pass's, called outside a pass,
        which then does not wait in its poll): e.g. write out what the pass's handlers, hooks
        and timers published. What a ``call_later(0)`` timer did, without a timer: its caller
        keeps at most one waiting (bounded like the timers, ``P.TIMERS_MAX``)."""
        assert len(self._pass_end) < P.TIMERS_MAX, "pass-end table full"
        self._pass_end.append(fn)

    def pass_soon(self) -> None:
        """Make the next pass's poll not wait: a timer handed on work (a paused connection's
        buffered requests) that this pass's after-pass hooks, run before the timers, did not
        see -- the next pass runs them at once, not when the poll next wakes for something
        else."""
        self._pass_soon = True

    def call_later(self, delay_ms: int, fn: Callable[[], None]) -> Timer:
        return self._push(Timer(self.clock.now_ms() + max(0, delay_ms), fn, None))

    def call_every(self, interval_ms: int, fn: Callable[[], None]) -> Timer:
        assert interval_ms > 0
        return self._push(Timer(self.clock.now_ms() + interval_ms, fn, interval_ms))

    @property
    def timers_live(self) -> int:
        """Timers that will still fire (cancelled ones waiting in the heap not counted)."""
        return len(self._timers) - self._cancelled_in_heap

    def _push(self, t: Timer) -> Timer:
        assert self.timers_live < P.TIMERS_MAX, "timer table full"
        t._reactor = self
        self._pushed += 1
        heapq.heappush(self._timers, (t.deadline_ms, self._pushed, t))
        return t

    def _pop(self) -> Timer:
        t = heapq.heappop(self._timers)[2]
        t._reactor = None
        if t.cancelled:
            self._cancelled_in_heap -= 1
        return t

    def _timer_cancelled(self) -> None:
        self._cancelled_in_heap += 1
        if self._cancelled_in_heap >= CANCELLED_TIMERS_COMPACT_MIN and 2 * self._cancelled_in_heap >= len(self._timers):
            for entry in self._timers:
                if entry[2].cancelled:
                    entry[2]._reactor = None
            self._timers[:] = [e for e in self._timers if not e[2].cancelled]
            heapq.heapify(self._timers)
            self._cancelled_in_heap = 0

    # -- the loop ------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopped = True

    def run(self) -> None:
        self._stopped = False
        while not self._stopped:
            self.run_once()

    def run_once(self, timeout_ms_max: int = 1000) -> None:
        self.passes += 1
        timeout = 0 if self._pass_soon or self._pass_end else self._timeout_ms(timeout_ms_max)
        self._pass_soon = False
        events = self.poller.poll(timeout) if self.poller.sockets else _wait(timeout)
        for sock, ready in events:
            if sock.__class__ is int:  # a plain descriptor: a TCP socket or a waker
                handler = self._descriptors.get(sock)
                if handler is not None:
                    self._call_handler(handler, ready)
                else:
                    self._woken(sock)
            else:
                self._drain(sock, self._drain_max.get(sock, P.DRAIN_MESSAGES_MAX))
        for fn in self._after_pass:
            try:
                fn()
            except LoomError:  # an operating error; a bug (anything else) stops the loop
                log.exception("after-pass hook %r failed", fn)
        self._run_timers()
        if self._pass_end:
            self._run_pass_end()

    def _run_pass_end(self) -> None:
        """The ``at_pass_end`` functions given so far, each once; one given while they run waits
        for the next pass (whose poll then does not wait)."""
        due, self._pass_end = self._pass_end, []
        for fn in due:
            try:
                fn()
            except LoomError:  # an operating error; a bug (anything else) stops the loop
                log.exception("pass-end function %r failed", fn)

    def _timeout_ms(self, timeout_ms_max: int) -> int:
        while self._timers and self._timers[0][2].cancelled:
            self._pop()
        if not self._timers:
            return timeout_ms_max
        return max(0, min(timeout_ms_max, self._timers[0][0] - self.clock.now_ms()))

    def drain(self, sock: zmq.Socket, messages_max: int) -> None:
        """Handle up to ``messages_max`` messages already waiting on ``sock`` now, outside the
        normal pass (e.g. read every heartbeat before judging liveness)."""
        self._drain(sock, messages_max)

    def _drain(self, sock: zmq.Socket, messages_max: int = P.DRAIN_MESSAGES_MAX) -> None:
        """Up to ``messages_max`` messages of ``sock``. After each one the socket's ZMQ_EVENTS
        says whether another is waiting: the drain ends without a failing read, whose
        ``zmq.Again`` (an exception object, a strerror call, an unwind) cost more than the
        check on every pass that found one message -- the common one at low rates."""
        handler = self._handlers.get(sock)
        if handler is None:
            return
        contain = self.contain_handler_errors
        handlers = self._handlers
        for left in range(messages_max - 1, -1, -1):
            try:
                frames = receive_frames(sock)
            except zmq.Again:
                return
            if not contain:
                handler(frames)
            else:
                try:
                    handler(frames)
                except LoomError:  # an operating error; a bug (anything else) stops the node
                    log.exception("handler %r failed", handler)
            if not left or handlers.get(sock) is not handler or not sock.get(_EVENTS) & _POLLIN:
                return  # the pass's bound, removed by its handler, or nothing more waiting

    def _woken(self, fd: int) -> None:
        entry = self._wakers.get(fd)
        if entry is None:
            return
        waker, handler = entry
        waker.drain()  # first: a wake during the handler is kept for the next pass
        self._call_handler(handler)

    def _call_handler(self, handler: Callable[..., None], *args: object) -> None:
        """A descriptor's or a waker's handler, under ``contain_handler_errors``."""
        if not self.contain_handler_errors:
            handler(*args)
            return
        try:
            handler(*args)
        except LoomError:  # an operating error; a bug (anything else) stops the node
            log.exception("handler %r failed", handler)

    def _run_timers(self) -> None:
        """The timers due, each once: one set (or re-armed) while they run waits for the next
        pass, so that a handler which hands the rest of its work to ``call_later(0)`` lets the
        sockets be polled in between."""
        now = self.clock.now_ms()
        pushed_before = self._pushed
        while self._timers and self._timers[0][0] <= now and self._timers[0][1] <= pushed_before:
            t = self._pop()
            if t.cancelled:
                continue
            try:
                t.fn()
            except LoomError:  # an operating error; a bug (anything else) stops the loop
                log.exception("timer %r failed", t.fn)
            if t.interval_ms is not None and not t.cancelled:
                t.deadline_ms = max(t.deadline_ms + t.interval_ms, now)
                self._push(t)
