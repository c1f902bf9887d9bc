"""The process's ZeroMQ context, sized for the nodes that hold many sockets.

libzmq refuses a context's 1,024th socket (``ZMQ_MAX_SOCKETS``, default 1,023; EMFILE, "Too
many open files", whatever the process's descriptor limit). A gateway worker holds a client of
every producer and consumer service for each of its request threads (48 by default), each of a
few sockets, and a consumer service a client per instance: with eight consumer services a
gateway worker passed 1,023 under load, and every request that needed a socket then failed.
Such a node calls ``allow_sockets(SOCKETS_MAX)`` at its start (``nodes.run``), before any
socket; ``context()`` -- ``zmq.Context.instance()`` -- then sizes the process's context before
its first socket, where libzmq reads the limit (set later, it is kept but not used), once per
process (pyzmq makes another instance in a forked child, a gunicorn worker's: the wish made
before the fork holds there). What bounds those nodes' sockets then is their descriptor limit
(a socket holds at least one: its mailbox), which nodes raise (``nodes.run.raise_open_files_limit``).

Only those nodes: the larger context made a one-record produce's latency worse where it was
tried on every process (p99 +0.3-1 ms on brokers and clients, four alternating pairs,
bench/RESULTS.md), which need few sockets.

Thread-safety: as ``zmq.Context.instance()``; ``allow_sockets`` before the process's threads.
"""

from __future__ import annotations

import os

import zmq

SOCKETS_MAX = 65_536  # libzmq's slot table for it: ~0.8 MB per process

_wanted = 0  # 0: libzmq's default
_sized_in: int | None = None  # the pid whose instance was sized


def allow_sockets(count: int) -> None:
    """This process's context (and a forked child's) takes up to ``count`` sockets: call it
    before the process's first socket."""
    global _wanted, _sized_in
    _wanted, _sized_in = count, None


def context() -> zmq.Context:
    global _sized_in
    ctx = zmq.Context.instance()
    if _sized_in != os.getpid():
        if _wanted and ctx.get(zmq.MAX_SOCKETS) < _wanted:
            ctx.set(zmq.MAX_SOCKETS, _wanted)
        _sized_in = os.getpid()
    return ctx
