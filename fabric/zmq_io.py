"""Sending and receiving one multipart message at the cost of libzmq's calls, not pyzmq's wrappers.

pyzmq's ``send_multipart`` type-checks every part, computes ``zmq.SNDMORE | flags`` on enum
members (Python-level ``Flag.__or__``) and goes through the keyword-handling ``Socket.send``
of ``zmq.sugar`` for each part; ``recv_multipart`` reads RCVMORE through the Python-level
``getsockopt`` after each part. For the small messages of the request path (a produce of one
record is five frames) that was 12-14 µs a message on this machine against 3-7 µs for the same
libzmq calls made directly (the Cython methods with int flags) -- paid by every hop of every
request.

Semantics are pyzmq's: ``send_frames`` is ``send_multipart(frames, flags, copy=False)`` -- a
part smaller than the socket's ``copy_threshold`` (in bytes) is copied, a larger one goes
zero-copy -- and raises what it raises (zmq.Again on a full queue: libzmq refuses a message at
its first part only, never half of one). Every part is checked before the first goes out (a
buffer, C-contiguous, not released), so a bad part raises TypeError / BufferError / ValueError
and leaves nothing queued -- where pyzmq would have queued the parts before it, glued to the
next message.

Only a plain ``zmq.Socket`` takes the direct path: anything else with pyzmq's interface (a
subclass, a test's wrapper) is called through its own ``send_multipart`` / ``recv_multipart``.

Thread-safety: as the socket's (owned by one thread).
"""

from __future__ import annotations

from typing import Any, Sequence

import zmq

_send = zmq.backend.Socket.send  # the Cython methods: positional, int flags, no keyword handling
_recv = zmq.backend.Socket.recv  # (they do not check their first argument: plain sockets only)
_PLAIN_SOCKET = zmq.Socket
SNDMORE = int(zmq.SNDMORE)
NOBLOCK = int(zmq.NOBLOCK)
_BYTES = frozenset((bytes, bytearray, zmq.Frame))  # len() is their size in bytes


def _size(part: Any) -> int:
    """The bytes of a part to send; raises TypeError (not a buffer), BufferError (not
    C-contiguous) or ValueError (a released view) -- before anything is sent."""
    if type(part) in _BYTES:
        return len(part)
    view = part if type(part) is memoryview else memoryview(part)
    if not view.c_contiguous:
        raise BufferError("a message part must be C-contiguous")
    return view.nbytes


def send_frames(sock: zmq.Socket, frames: Sequence, flags: int = NOBLOCK, copy_bytes_min: int | None = None) -> None:
    """Send ``frames`` as one message (see the module docstring); a part of at least
    ``copy_bytes_min`` bytes (default: the socket's ``copy_threshold``) goes zero-copy. Raises
    zmq.Again when the socket would block under NOBLOCK, zmq.ZMQError otherwise, and TypeError,
    BufferError or ValueError for a bad part, before sending anything."""
    sizes = [_size(f) for f in frames]
    threshold = sock.copy_threshold if copy_bytes_min is None else copy_bytes_min
    if type(sock) is not _PLAIN_SOCKET:  # a subclass or a wrapper: its own send_multipart
        sock.send_multipart(frames, flags, copy=max(sizes) < threshold)
        return
    last = len(frames) - 1
    more = flags | SNDMORE
    for i in range(last):
        _send(sock, frames[i], more, sizes[i] < threshold, False)
    _send(sock, frames[last], flags, sizes[last] < threshold, False)


def receive_frames(sock: zmq.Socket) -> list[bytes]:
    """One whole waiting message, every part copied to bytes (``recv_multipart(NOBLOCK)``).
    Raises zmq.Again when none is waiting (the parts of a message arrive together, so only the
    first read can)."""
    if type(sock) is not _PLAIN_SOCKET:  # a subclass or a wrapper: its own recv_multipart
        return sock.recv_multipart(NOBLOCK)
    frame = _recv(sock, NOBLOCK, False, False)
    parts = [frame.bytes]
    while frame.more:  # set by the Cython recv from RCVMORE: no Python-level getsockopt
        frame = _recv(sock, NOBLOCK, False, False)
        parts.append(frame.bytes)
    return parts
