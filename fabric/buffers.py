"""Who owns the bytes of a received frame, and for how long (the data plane's zero-copy rules).

A payload frame reaches a handler in one of three forms:

- ``bytes``: a copy, immutable, the handler may keep it as long as it likes (small frames, and
  every frame of a socket that copies).
- ``OwnedFrame`` (a ``bytearray``): the request port (``fabric.zmtp``) assembles each frame of
  at least ``fabric.protocol.OWNED_FRAME_BYTES_MIN`` bytes straight into a buffer of its own
  and hands that buffer on. Nobody else holds it: the receiver may modify it in place (the
  leader stamps its epoch and base offset into a produced batch without copying it) and may
  keep it (a parked acks=all request keeps its payloads until it is answered).
- ``memoryview``: a socket read with ``zero_copy_receive(n)`` (``fabric.reactor``) hands each
  frame of at least that many bytes as ``frame.buffer`` of a pyzmq ``Frame``, a view onto the
  libzmq message, without a copy. The view keeps its ``Frame`` (and so libzmq's memory) alive
  while it is referenced; libzmq reuses none of it meanwhile. Such a view is libzmq's message:
  not to be written (pyzmq makes it writable), and holding one pins a message buffer, so code
  that keeps payload bytes past the handler (the memory engine, an index, a cache) copies
  them rather than holding the view. The request port reads its 8 KiB stream chunks as views
  too and copies each once, into the frame being assembled (``fabric.zmtp``).

Pure; thread-safe.
"""

from __future__ import annotations

Payload = bytes | bytearray | memoryview


class OwnedFrame(bytearray):
    """A received frame's own buffer: the receiver may modify and keep it (see above)."""

    __slots__ = ()


def stampable(data: Payload) -> bytearray:
    """A buffer of ``data`` the caller may modify: an ``OwnedFrame`` itself (its receiver
    owns it), anything else copied."""
    return data if type(data) is OwnedFrame else bytearray(data)
