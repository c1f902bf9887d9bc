"""Clients whose every endpoint refuses the connection (the whole cluster down or restarting,
or a client started before the nodes listen) ask for metadata at their retry pace and wait
without using the CPU: a refused ask ends at once, so nothing else spaces the asks out.

Real sockets on 127.0.0.1: ports picked free at run time, nothing listening on them."""

from __future__ import annotations

import threading
import time

import pytest

from fabric.client.consumer import Consumer
from fabric.client.producer import Producer
from fabric.client.sender import METADATA_RETRY_MS
from fabric.clock import ManualClock
from fabric.errors import TopicNotInMetadataError
from fabric.reactor import Reactor
from nodes.local_cluster import free_ports, wait_until

WINDOW_S = 1.0
ASKS_MAX = int(WINDOW_S * 1000 / METADATA_RETRY_MS) + 3  # the retry pace, and the window's ends
CPU_SHARE_MAX = 0.3  # a spinning loop takes a whole core; waiting takes a few percent at most


@pytest.fixture
def refused_endpoints() -> list[str]:
    return [f"tcp://127.0.0.1:{port}" for port in free_ports(2)]


def test_a_producer_whose_every_endpoint_refuses_asks_at_its_retry_pace(refused_endpoints: list[str]) -> None:
    producer = Producer(refused_endpoints, linger_ms=1)
    sender = producer.sender
    try:
        # each failed ask moves the next to another endpoint: the count of failed asks
        wait_until(lambda: sender._md_endpoint_index >= 1, 5, what="a first refused metadata ask")
        before = sender._md_endpoint_index
        threading.Event().wait(WINDOW_S)  # the window the asks are counted over
        asks = sender._md_endpoint_index - before
    finally:
        producer.close(timeout=0)
    assert asks <= ASKS_MAX, f"{asks} metadata asks in {WINDOW_S} s, every one refused (at most {ASKS_MAX})"


def test_a_consumer_waiting_for_metadata_of_refused_endpoints_does_not_spin(refused_endpoints: list[str]) -> None:
    consumer = Consumer(refused_endpoints)
    try:
        cpu_s, wall_s = time.process_time(), time.monotonic()
        with pytest.raises(TopicNotInMetadataError):
            consumer.partitions_for("t", timeout_ms=int(WINDOW_S * 1000))
        cpu_s, wall_s = time.process_time() - cpu_s, time.monotonic() - wall_s
    finally:
        consumer.close()
    assert cpu_s < CPU_SHARE_MAX * wall_s, f"{cpu_s:.2f} s of CPU in {wall_s:.2f} s waiting for metadata"


def test_a_reactor_with_nothing_to_poll_waits_for_its_timeout() -> None:
    """pyzmq's poll of no sockets returns at once: the reactor of a client whose connections are
    all between two connect attempts looped without a pause until its next timer."""
    reactor = Reactor(ManualClock())
    start = time.monotonic()
    reactor.run_once(50)
    assert time.monotonic() - start >= 0.05 - 0.01
