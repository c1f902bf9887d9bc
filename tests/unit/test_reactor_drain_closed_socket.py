"""A drain stops at its bound without touching the socket again: a handler that closed its
socket on the pass's last allowed message (without removing it) does not make the reactor read
a closed socket's ZMQ_EVENTS."""

from __future__ import annotations

import zmq

from fabric.reactor import Reactor
from tests.harness import wait_until


def test_a_handler_closing_its_socket_on_the_last_message_of_a_pass_does_not_raise() -> None:
    ctx = zmq.Context.instance()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    pull.bind("inproc://drain-closed-socket")
    push.connect("inproc://drain-closed-socket")
    reactor = Reactor()
    got: list = []

    def handler(frames: list) -> None:
        got.append(frames)
        pull.close(0)  # closed, not removed
    reactor.add_socket(pull, handler, messages_max=1)
    try:
        push.send(b"one")
        wait_until(lambda: pull.poll(0), 5, 0.01, what="the message to arrive")
        reactor.drain(pull, 1)
    finally:
        push.close(0)
    assert got == [[b"one"]]
