"""What a consumer service's hosted instances fetch ahead is bounded all together
(``services.consumer_buffer_bytes_max``): each instance's GroupConsumer gets an equal share of
it (``nodes.consumer.fetch_limits``). Before, every instance fetched ahead as a lone consumer
does -- up to 200,000 records and 8 MiB per FETCH per broker -- and a service at its default 256
instances on topics with a backlog could hold several GB."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fabric.client.consumer_fetch import BUFFERED_BYTES_MAX
from fabric.config_sections import ServicesConfig
from nodes.consumer import INSTANCE_BUFFER_BYTES_MIN, fetch_limits
from nodes.consumer_instance import Instance, InstanceHost
from tests.unit.builders_group_consumer import (T0, BrokerRepliesReactor, OffsetsCoordinator, OnePartitionBroker,
                                                consumer_config, serve)
from tests.unit.fakes import ScriptedCoordinatorLink

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
