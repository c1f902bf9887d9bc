"""The request limit bounds one connection, and a peer can open many: the partly received
requests of all connections together stay within ``fabric.zmtp_parser.BUFFERED_REQUEST_BYTES_MAX``.
Hostile raw ZMTP peers each hold one unfinished request open; requests that would go over the
shared budget are discarded as they arrive and answered ``buffer_full`` (retriable), small
requests are still served meanwhile, and the budget is free again once the peers are done."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import pytest
import zmq

from fabric import protocol as P
from fabric import wire
from fabric import zmtp_parser
from fabric.reactor import Reactor
from fabric.rpc import RpcServer
from tests.harness import free_ports
from tests.zmtp_peer import RawDealer, rss_bytes

BUDGET_BYTES = 32 * 1024 * 1024          # the shared budget, lowered for the test
HOSTILE_PEERS = 8
FRAME_BYTES = 1024 * 1024
FRAMES_PER_PEER = 16                     # 8 x 16 MiB = 128 MiB held open: 4x the budget
RSS_MARGIN_BYTES = 48 * 1024 * 1024      # interpreter, libzmq and socket buffers, allocator slack
DEADLINE_PASSES = 20_000
POLL_MS = 5


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Reactor, RpcServer, int]]:
    monkeypatch.setattr(zmtp_parser, "BUFFERED_REQUEST_BYTES_MAX", BUDGET_BYTES)
    reactor = Reactor()
    port = free_ports(1)[0]
    server = RpcServer(zmq.Context.instance(), reactor, f"tcp://127.0.0.1:{port}")
    server.route(P.PING, lambda req: {"bytes": sum(len(p) for p in req.payloads)})
    yield reactor, server, port
    server.close()


def _while_serving(reactor: Reactor, jobs: list[Callable[[], None]], on_pass: Callable[[], None] = lambda: None) -> None:
    """Run each job in a thread (raw sockets block) while this thread runs the reactor."""
    errors: list[BaseException] = []

    def run(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)
    threads = [threading.Thread(target=run, args=(job,), daemon=True) for job in jobs]
    for t in threads:
        t.start()
    for _ in range(DEADLINE_PASSES):
        if not any(t.is_alive() for t in threads):
            break
        reactor.run_once(POLL_MS)
        on_pass()
    assert not any(t.is_alive() for t in threads), "peers still blocked: the server stopped reading"
    assert not errors, errors


def _dealer_call(reactor: Reactor, port: int, payload: bytes, request_id: int) -> dict:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    try:
        sock.send_multipart(wire.encode_request(P.PING, {"id": request_id}, [payload]))
        for _ in range(DEADLINE_PASSES):
            reactor.run_once(POLL_MS)
            if sock.poll(0):
                return wire.decode_reply(sock.recv_multipart())[0]
        raise AssertionError("no reply")
    finally:
        sock.close()


def test_unfinished_requests_of_many_connections_share_one_bound(served) -> None:  # noqa: ANN001
    reactor, server, port = served
    peers: list[RawDealer] = []
    frame = b"\xab" * FRAME_BYTES
    before = rss_bytes(os.getpid())
    peak = [before]

    def flood(i: int) -> None:
        peer = RawDealer("127.0.0.1", port, identity=b"hostile-%d" % i)
        peers.append(peer)
        peer.start_request(P.PING, request_id=100 + i)
        for _ in range(FRAMES_PER_PEER):
            peer.send_frames([frame], last_has_more=True)

    def sample() -> None:
        peak[0] = max(peak[0], rss_bytes(os.getpid()))
    try:
        _while_serving(reactor, [lambda i=i: flood(i) for i in range(HOSTILE_PEERS)], sample)
        for _ in range(50):  # what the kernel still holds reaches the server
            reactor.run_once(POLL_MS)
        sample()
        grown = peak[0] - before
        assert grown <= BUDGET_BYTES + RSS_MARGIN_BYTES, \
            f"grew by {grown / 2**20:.0f} MiB for {HOSTILE_PEERS} unfinished requests of {FRAMES_PER_PEER} MiB"
        assert FRAMES_PER_PEER * FRAME_BYTES <= server.port.buffered_bytes <= BUDGET_BYTES  # one peer's worth at least
        # while the budget is taken: a small request is served, a large one is told to retry
        assert _dealer_call(reactor, port, b"s" * 1000, 1)["bytes"] == 1000
        big = _dealer_call(reactor, port, b"b" * (BUDGET_BYTES - FRAMES_PER_PEER * FRAME_BYTES + 1), 2)
        assert big["error"] == P.BUFFER_FULL and big["id"] == 2, big
        # every hostile request ends: admitted ones are served, the others get buffer_full
        replies: dict[int, dict] = {}

        def finish(peer: RawDealer) -> None:
            peer.send_frames([b"end"], last_has_more=False)
            reply = peer.read_reply()
            replies[reply["id"]] = reply
        _while_serving(reactor, [lambda p=p: finish(p) for p in peers])
        assert sorted(replies) == [100 + i for i in range(HOSTILE_PEERS)]
        served_ok = [r for r in replies.values() if not r.get("error")]
        refused = [r for r in replies.values() if r.get("error")]
        assert served_ok and refused and all(r["error"] == P.BUFFER_FULL for r in refused), replies
        assert all(r["bytes"] == FRAMES_PER_PEER * FRAME_BYTES + 3 for r in served_ok)
    finally:
        for peer in peers:
            peer.close()
    for _ in range(50):
        reactor.run_once(POLL_MS)
    assert server.port.buffered_bytes == 0
    assert _dealer_call(reactor, port, b"b" * (8 * FRAME_BYTES), 3)["bytes"] == 8 * FRAME_BYTES
