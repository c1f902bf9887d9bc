"""``ZmtpDealer.send(frames, on_written)``: the message's own fate, for acks=0 produce -- True
once all its bytes are in the kernel, False when it is dropped before (a connection that fails
while it waits, a connection lost with its bytes in the outbox, a close). A message sent without
a hook still waits for the next connection, as a libzmq DEALER's."""

from __future__ import annotations

from tests.harness import free_ports
from tests.unit.zmtp_support import POLL_MS, MakeClient, RawServer


def test_a_message_is_told_written_once_the_connection_took_it(raw_server: RawServer, dealer_client: MakeClient) -> None:
    client = dealer_client(raw_server.port)
    fates: list[bool] = []
    assert client.dealer.send([b"", b"x"], fates.append)
    assert fates == []  # waits for the handshake
    raw_server.connect(client)
    client.run_until(lambda: fates)
    assert fates == [True]


def test_a_message_waiting_for_a_connection_that_fails_is_told_dropped(dealer_client: MakeClient) -> None:
    client = dealer_client(free_ports(1)[0])  # nothing listens: the connect is refused
    fates: list[bool] = []
    assert client.dealer.send([b"", b"with a hook"], fates.append)
    assert client.dealer.send([b"", b"without"])
    client.run_until(lambda: fates)
    assert fates == [False]
    assert len(client.dealer._waiting) == 1  # the other waits for the next connection


def test_a_message_whose_bytes_the_peer_never_read_is_told_dropped_with_the_connection(
        raw_server: RawServer, dealer_client: MakeClient) -> None:
    client = dealer_client(raw_server.port)
    raw_server.connect(client)
    fates: list[bool] = []
    big = b"y" * (64 << 20)  # more than the kernel buffers of a peer that does not read
    assert client.dealer.send([b"", big], fates.append)
    for _ in range(5):
        client.reactor.run_once(POLL_MS)
    assert fates == []
    assert raw_server.conn is not None
    raw_server.conn.close()
    raw_server.conn = None
    client.run_until(lambda: fates)
    assert fates == [False]


def test_close_tells_the_messages_it_drops(raw_server: RawServer, dealer_client: MakeClient) -> None:
    client = dealer_client(raw_server.port)
    fates: list[bool] = []
    client.dealer.send([b"", b"x"], fates.append)
    client.dealer.close()
    assert fates == [False]
