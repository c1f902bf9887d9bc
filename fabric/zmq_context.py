"""The process's ZeroMQ context, sized for a node's sockets.

libzmq refuses a context's 1,024th socket (``ZMQ_MAX_SOCKETS``, default 1,023; EMFILE, "Too
many open files", whatever the process's descriptor limit). A gateway worker holds a client of
every producer and consumer service for each of its request threads (48 by default), each of a
few sockets: with eight consumer services that passed 1,023 under load, and every request that
needed a socket then failed. ``context()`` is ``zmq.Context.instance()`` with the limit raised to
``SOCKETS_MAX`` -- before the context's first socket, where libzmq reads it (set later, it is
kept but not used) -- once per process (pyzmq makes another instance in a forked child, a
gunicorn worker's). What bounds a node's sockets then is its descriptor limit (a socket holds
at least one: its mailbox), which nodes raise (``nodes.run.raise_open_files_limit``).

Thread-safety: as ``zmq.Context.instance()``; two threads sizing the same new context set the
same value.
"""

from __future__ import annotations

import os

import zmq

SOCKETS_MAX = 65_536  # libzmq's slot table for it: ~0.8 MB per process

_sized_in: int | None = None  # the pid whose instance was sized


def context() -> zmq.Context:
    global _sized_in
    ctx = zmq.Context.instance()
    if _sized_in != os.getpid():
        if ctx.get(zmq.MAX_SOCKETS) < SOCKETS_MAX:
            ctx.set(zmq.MAX_SOCKETS, SOCKETS_MAX)
        _sized_in = os.getpid()
    return ctx
