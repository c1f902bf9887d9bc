"""Sending and receiving one multipart message at the cost of libzmq's calls, not pyzmq's wrappers.

pyzmq's ``send_multipart`` type-checks every part, computes ``zmq.SNDMORE | flags`` on enum
members (Python-level ``Flag.__or__``) and goes through the keyword-handling ``Socket.send``
of ``zmq.sugar`` for each part; ``recv_multipart`` asks libzmq for RCVMORE with a getsockopt
after each part. For the small messages of the request path (a produce of one record is five
frames) that was 12-14 µs a message on this machine against 3-7 µs for the same libzmq calls
made directly (the Cython methods with int flags) -- paid by every hop of every request.

Semantics are pyzmq's: ``send_frames`` is ``send_multipart(frames, flags, copy=False)`` -- a
part smaller than the socket's ``copy_threshold`` is copied, a larger one goes zero-copy -- and
raises what it raises (zmq.Again on a full queue: libzmq refuses a
message at its first part only, never half of one). Every part is checked to be a buffer before
the first goes out, so a bad part never leaves half a message queued on the socket.

Thread-safety: as the socket's (owned by one thread).
"""

from __future__ import annotations

from typing import Sequence

import zmq

_send = zmq.backend.Socket.send  # the Cython methods: positional, int flags, no keyword handling
_recv = zmq.backend.Socket.recv
_Socket = zmq.backend.Socket
SNDMORE = int(zmq.SNDMORE)
NOBLOCK = int(zmq.NOBLOCK)
_BUFFERS = frozenset((bytes, bytearray, memoryview, zmq.Frame))


def send_frames(sock: zmq.Socket, frames: Sequence, flags: int = NOBLOCK, copy_bytes_min: int | None = None) -> None:
    """Send ``frames`` as one message (see the module docstring); a part of at least
    ``copy_bytes_min`` bytes (default: the socket's ``copy_threshold``) goes zero-copy. Raises
    zmq.Again when the socket would block under NOBLOCK, zmq.ZMQError otherwise, TypeError
    (before sending anything) for a part that is not a buffer."""
    for f in frames:
        if type(f) not in _BUFFERS:
            memoryview(f)  # raises TypeError for a non-buffer (subclasses of bytearray pass)
    threshold = sock.copy_threshold if copy_bytes_min is None else copy_bytes_min
    if not isinstance(sock, _Socket):  # a wrapper with pyzmq's interface (a test's spy)
        sock.send_multipart(frames, flags, copy=len(frames[-1]) < threshold)
        return
    last = len(frames) - 1
    more = flags | SNDMORE
    for i in range(last):
        f = frames[i]
        _send(sock, f, more, len(f) < threshold, False)
    f = frames[last]
    _send(sock, f, flags, len(f) < threshold, False)


def receive_frames(sock: zmq.Socket) -> list[bytes]:
    """One whole waiting message, every part copied to bytes (``recv_multipart(NOBLOCK)``).
    Raises zmq.Again when none is waiting (the parts of a message arrive together, so only the
    first read can). ``Frame.more`` replaces pyzmq's getsockopt(RCVMORE) after each part."""
    frame = _recv(sock, NOBLOCK, False, False)
    parts = [frame.bytes]
    while frame.more:
        frame = _recv(sock, NOBLOCK, False, False)
        parts.append(frame.bytes)
    return parts
