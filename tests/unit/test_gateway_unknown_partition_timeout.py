"""A record the producer's sender retried to its delivery timeout, the brokers answering
``unknown_topic_or_partition`` all along (a broker that missed the coordinator's pushes still
holds the deleted topic's replica and refuses the re-created topic's id; a partition the leader
has not opened yet), fails with ``DeliveryTimeoutError`` carrying that code -- a transient
condition, retriable. The gateway must not report it as failed for good (``error_code`` 1): the
metadata still has the record's partition, nothing says it is gone. Its error comes from the
real sender (tests/unit/builders_sender.py) and goes through the real ``GatewayAgent`` with a
producer service that relays it as the service does (code and message)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fabric import protocol as P
from fabric.config import load_config
from fabric.errors import CodedError, DeliveryTimeoutError
from nodes.gateway.agent import GatewayAgent
from nodes.local_cluster import GATEWAY_NODES, make_config
from tests.unit.builders_sender import LEADER, Rig, sender_metadata
from tests.unit.fakes import metadata_of


class _Admin:
    def metadata(self):  # noqa: ANN201 - the topic has both partitions all along
        return metadata_of({"t": 2})


class _Service:
    """Relays ``error`` for every record as the producer service does (nodes/producer.py)."""

    def __init__(self, error: CodedError) -> None:
        self.error = error

    def produce_rows(self, topic: str, records: list, acks: object, is_down: object = None) -> tuple:
        return tuple((-1, -1, self.error.code, self.error.message) for _ in records)


def _timed_out_on_unknown_partition(make_sender_rig: Callable[..., Rig]) -> CodedError:
    rig = make_sender_rig()
    rig.metadata.update(sender_metadata(version=1, partitions=2, topic_id="new"))
    futures = rig.send("a", partition=1)
    rig.sender.run_pass()
    rig.grant_producer_id(7)
    for _ in range(20):  # every try refused: the broker holds another topic's t-1
        rig.sender.run_pass()
        if futures[0].done():
            break
        rig.client(LEADER).answer_last(P.PRODUCE, {"results": [[-1, P.UNKNOWN_TOPIC_OR_PARTITION,
                                                                  "t-1 here is another topic (id old)"]]})
        rig.reactor.advance(100)
    error = futures[0].exception(0)
    assert isinstance(error, DeliveryTimeoutError) and error.code == P.UNKNOWN_TOPIC_OR_PARTITION, repr(error)
    return error


def test_a_delivery_timeout_after_unknown_partition_answers_is_reported_retriable(
        tmp_path: Path, make_sender_rig: Callable[..., Rig]) -> None:
    error = _timed_out_on_unknown_partition(make_sender_rig)
    a = GatewayAgent(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))),
                     make_admin=_Admin, make_producer=lambda: _Service(error))
    outcomes = a.produce("t", [(None, b"v", None, 1)], "all")
    assert outcomes[0][2].startswith("unknown_topic_or_partition"), outcomes
    assert outcomes[0][3] is True, f"a delivery timeout reported as failed for good: {outcomes}"
