"""A consumer service's hosted instance (``nodes.consumer.Instance``): stopping it never blocks
the reactor, even with its command queue full, and every queued command gets an answer."""

from __future__ import annotations

import threading
import time

from fabric import protocol as P
from fabric.errors import RemoteError
from nodes.consumer import COMMANDS_PER_INSTANCE_MAX, Instance, InstanceHost


def _host() -> InstanceHost:
    return InstanceHost("consumer-1", ["tcp://127.0.0.1:1"], 1000)


def test_stopping_an_instance_with_a_full_queue_does_not_block_and_answers_everything() -> None:
    inst = Instance(_host(), "g", "i", {}, 0)
    answers: list[int] = []
    lock = threading.Lock()

    def answer(header: dict | None, err: RemoteError | None) -> None:
        with lock:
            answers.append(err.code if err else 0)
    for _ in range(COMMANDS_PER_INSTANCE_MAX):
        inst.submit("subscription", {}, answer)
    started = time.monotonic()
    inst.stop()  # on the reactor: must return at once
    assert time.monotonic() - started < 1
    inst.start()
    inst.join(timeout=5)
    assert not inst.is_alive()
    assert answers == [P.UNKNOWN_CONSUMER_INSTANCE] * COMMANDS_PER_INSTANCE_MAX


def test_an_instance_takes_its_idle_timeout_from_its_config_or_the_host() -> None:
    host = _host()
    assert Instance(host, "g", "a", {}, 0).idle_timeout_ms == 1000
    config = {"idle_timeout_ms": 50, "auto_offset_reset": "earliest"}
    assert Instance(host, "g", "b", config, 0).idle_timeout_ms == 50 and config == {"auto_offset_reset": "earliest"}

