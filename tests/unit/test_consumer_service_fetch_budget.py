"""What a consumer service's hosted instances fetch ahead is bounded all together
(``services.consumer_buffer_bytes_max``): each instance's GroupConsumer gets an equal share of
it (``nodes.consumer.fetch_limits``). Before, every instance fetched ahead as a lone consumer
does -- up to 200,000 records and 8 MiB per FETCH per broker -- and a service at its default 256
instances on topics with a backlog could hold several GB."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any, Callable

import pytest
from pydantic import ValidationError

from fabric import protocol as P
from fabric.client.consumer_fetch import BUFFERED_BYTES_MAX
from fabric.config_sections import ServicesConfig
from fabric.records import view_batches
from nodes.consumer import INSTANCE_BUFFER_BYTES_MIN, fetch_limits
from nodes.consumer_instance import Instance, InstanceHost
from tests.unit import builders_group_consumer as builders
from tests.unit.builders_group_consumer import (T0, BrokerRepliesReactor, OffsetsCoordinator, OnePartitionBroker,
                                                RestInstance, consumer_config, serve)
from tests.unit.fakes import ScriptedCoordinatorLink, as_leader_wrote, make_batch

MIB = 1024 * 1024


def test_the_default_budget_gives_each_of_the_default_instances_one_mib() -> None:
    assert fetch_limits(ServicesConfig()) == {"buffered_bytes_max": MIB, "fetch_bytes_max": MIB,
                                              "partition_fetch_bytes_max": MIB}


def test_fewer_instances_get_bigger_shares_with_the_fetch_caps_of_a_lone_consumer() -> None:
    limits = fetch_limits(ServicesConfig(consumer_instances_max=10))
    assert limits == {"buffered_bytes_max": 256 * MIB // 10, "fetch_bytes_max": 8 * MIB,
                      "partition_fetch_bytes_max": 4 * MIB}


def test_a_share_is_never_above_a_lone_consumers_bound_nor_below_the_floor() -> None:
    assert fetch_limits(ServicesConfig(consumer_instances_max=1, consumer_buffer_bytes_max=1 << 40))[
        "buffered_bytes_max"] == BUFFERED_BYTES_MAX
    assert fetch_limits(ServicesConfig(consumer_instances_max=10_000, consumer_buffer_bytes_max=MIB)) == {
        "buffered_bytes_max": INSTANCE_BUFFER_BYTES_MIN, "fetch_bytes_max": INSTANCE_BUFFER_BYTES_MIN,
        "partition_fetch_bytes_max": INSTANCE_BUFFER_BYTES_MIN}


@pytest.mark.parametrize("bad", [0, 1000, MIB - 1, -1, (1 << 40) + 1])
def test_a_budget_below_one_mib_or_absurd_is_refused(bad: int) -> None:
    with pytest.raises(ValidationError, match="consumer_buffer_bytes_max"):
        ServicesConfig(consumer_buffer_bytes_max=bad)


def test_an_instance_reads_with_its_hosts_share() -> None:
    broker = OnePartitionBroker()
    reactor = BrokerRepliesReactor(broker)
    config = consumer_config(broker, reactor, ScriptedCoordinatorLink(OffsetsCoordinator()), enable_auto_commit=False)
    share = {"buffered_bytes_max": 300 * 1024, "fetch_bytes_max": 300 * 1024, "partition_fetch_bytes_max": 200 * 1024}
    host = InstanceHost("consumer-1", ["tcp://127.0.0.1:1"], 1000, [].append, share)
    inst = Instance(host, "g", "i", config, 0)
    serve(inst, "create")
    try:
        c = inst.consumer
        assert c is not None
        assert (c.buffered_bytes_max, c.fetch_bytes_max, c.partition_fetch_bytes_max) == (300 * 1024, 300 * 1024,
                                                                                          200 * 1024)
        serve(inst, "assign", partitions=[list(T0)])
        offsets: list[int] = []
        for _ in range(10):  # the first answers come as the metadata and the log start come in
            offsets += [r[2] for r in serve(inst, "fetch", timeout_ms=0, max_records=3)["records"]]
            if offsets:
                break
        assert offsets == [0, 1, 2]  # and it reads
    finally:
        inst._close()


def decoded_bytes_of_a_cut(data: bytes) -> int:
    """What a batch cut by a poll keeps decoded for its rest, measured: the bytes a view of
    ``data`` holds, beyond ``data``, once its first 10 records were read and let go."""
    head, rest = view_batches("t", 0, data).split(10)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        del head.records()[:]
        del head
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_an_instance_fetches_ahead_within_its_share_less_what_a_cut_left_decoded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A REST fetch whose ``max_bytes`` cuts a batch leaves it decoded whole for the rest the
    instance keeps buffered -- some 8 times its fetched bytes for small records. The instance's
    next FETCH asked for its share less the fetched bytes only, as if it held nothing more: at
    the default 1 MiB share, an instance holding a cut 1 MiB batch of small records held ~8 MiB
    and still fetched ahead, and a service of such instances could hold several times its budget.
    (The fetched bytes and the fetches in flight were counted already: this is what was not.)"""
    monkeypatch.setattr(builders, "RECORDS_PER_FETCH_ANSWER", 10_000)
    monkeypatch.setattr(builders, "LOG_END_OFFSET", 100_000)
    share = 4 * MIB
    rest = RestInstance(enable_auto_commit=False, buffered_bytes_max=share, fetch_bytes_max=share,
                        partition_fetch_bytes_max=share)
    asked: list[int] = []
    request = rest.broker.request

    def recording(command: bytes, header: dict, payloads: Any = (), *, callback: Callable, timeout_ms: int = 0) -> int:
        if command == P.FETCH:
            asked.append(header["max_bytes"])
        return request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)
    rest.broker.request = recording  # type: ignore[method-assign]
    try:
        got: list[int] = []
        for _ in range(10):
            got = rest.fetch(max_records=5000, max_bytes=100)  # ~10 records of a batch of 10,000
            if got:
                break
        assert got and got[0] == 0 and len(got) < 100
        rest.idle(200)  # the fetch ahead comes back: the next one asks for the room left
        assert len(asked) >= 3
        consumer = rest.instance.consumer
        assert consumer is not None
        decoded = decoded_bytes_of_a_cut(as_leader_wrote(make_batch(10_000), 0, 1))
        held = consumer._buffered_bytes + decoded
        assert held + asked[-1] <= share, f"held {held} ({decoded} decoded) and asked for {asked[-1]}: over {share}"
    finally:
        rest.instance._close()
