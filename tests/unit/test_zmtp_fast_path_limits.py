"""The request port's fast path applies the byte limit as the general parser does: a request of
short frames over ``P.REQUEST_BYTES_MAX`` is refused and answered whether it arrived whole in
one chunk (the fast path) or cut (the general parser) -- the limit never depends on how libzmq
cut the stream."""

from __future__ import annotations

import pytest

from fabric import protocol as P
from fabric.zmtp import ZmtpServer
from tests.unit.test_zmtp_frame_reassembly import HANDSHAKE, _close, _message, _request, _run, server

__all__ = ["server"]  # the module-scoped fixture, shared


@pytest.mark.parametrize("cut", [None, 7])
def test_a_request_of_short_frames_over_the_byte_limit_is_refused_however_it_is_cut(
        server: ZmtpServer, monkeypatch: pytest.MonkeyPatch, cut: int | None) -> None:
    monkeypatch.setattr(P, "REQUEST_BYTES_MAX", 1500)
    body = _message(_request(1, [b"p" * 255] * 6))  # 1,530 payload bytes, every frame short
    chunks = [HANDSHAKE, body] if cut is None else [HANDSHAKE, body[:cut], body[cut:]]
    before = server.counters["requests_over_limit"]
    delivered = _run(server, chunks)
    refused = server.counters["requests_over_limit"] - before
    _close(server)
    assert (len(delivered), refused) == (0, 1)
