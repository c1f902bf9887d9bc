"""Who owns the bytes of a received frame, and for how long (the data plane's zero-copy rules).

A payload frame reaches a handler in one of two forms:

- ``bytes``: a copy, immutable, the handler may keep it as long as it likes (small frames, and
  every frame of a libzmq socket, which the reactor copies).
- ``OwnedFrame`` (a ``bytearray``): the ZMTP readers on the reactor assemble a large frame
  straight into a buffer of its own and hand that buffer on -- the request port
  (``fabric.zmtp``) each frame of at least ``fabric.protocol.OWNED_FRAME_BYTES_MIN`` bytes, the
  clients' dealer and the replication subscriber (``fabric.zmtp_client``, ``fabric.zmtp_sub``)
  each one still arriving of at least ``DIRECT_BYTES_MIN``; a smaller or whole-arrived frame
  is bytes. Nobody else holds an ``OwnedFrame``: the receiver may modify it in place (the
  leader stamps its epoch and base offset into a produced batch without copying it) and may
  keep it (a parked acks=all request keeps its payloads until it is answered).

A ``memoryview`` payload is one a caller made itself (a slice of a batch it holds); code that
keeps payload bytes past the call copies a view rather than pinning what it points into.

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
