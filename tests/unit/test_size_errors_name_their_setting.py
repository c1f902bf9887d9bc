"""An oversized record's error names the setting that bounds it, not only the number: the
producer client's ``record_bytes_max`` (a producer node's is ``limits.message_bytes_max``),
the leader's bound (the topic's ``max.message.bytes``, at most ``limits.batch_bytes_max``) and
the gateway's body limit (``gateway.request_bytes_max``). The error codes are unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fabric import protocol as P
from fabric.client.producer import Producer
from fabric.config import load_config
from fabric.errors import RecordSizeExceededError
from fabric.metadata import ClusterMetadata
from nodes import producer as producer_service
from tests.harness import make_config
from tests.unit.fakes import make_batch
from tests.unit.test_gateway_fastpath import AUTH, BINARY, BODY_MAX, binary
from tests.unit.test_gateway_fastpath import make_app as make_gateway
from tests.unit.test_partition import _append, _leader

NOWHERE = "127.0.0.1:9"  # nothing listens: no test here reaches the network


def test_the_client_names_record_bytes_max() -> None:
    md = ClusterMetadata.from_wire({
        "version": 1, "cluster": "c", "coordinator": "tcp://127.0.0.1:9",
        "brokers": [[1, "127.0.0.1", 9, 109, True]], "topics": {"t": {"configs": {}, "partitions": [[1, 3, [1], [1]]]}}})
    with Producer(NOWHERE, record_bytes_max=1024, max_block_ms=100) as p:
        p.metadata.update(md)
        with pytest.raises(RecordSizeExceededError) as one:
            p.send("t", b"x" * 2000, partition=0)
        with pytest.raises(RecordSizeExceededError) as many:
            p.send_many("t", [b"a", b"x" * 2000], keys=[b"k", b"k"], partition=0)
    assert one.value.code == many.value.code == P.RECORD_TOO_LARGE
    assert "is over 1024 (the producer's record_bytes_max)" in str(one.value)
    assert "record 1 of" in str(many.value) and "is over 1024 (the producer's record_bytes_max)" in str(many.value)


def test_a_producer_node_names_the_config_key(tmp_path: Path) -> None:
    config = load_config(make_config(tmp_path, 1, extra_nodes=("producer",),
                                     overrides={"limits": {"message_bytes_max": 4096}}))
    service = producer_service.ProducerService(config, "producer")
    try:
        p = service._new_producer(-1)
        try:
            with pytest.raises(RecordSizeExceededError) as e:
                p.send("t", b"x" * 5000, partition=0)
        finally:
            p.close(0)
    finally:
        service.close()
    assert e.value.code == P.RECORD_TOO_LARGE
    assert "is over 4096 (limits.message_bytes_max of the cluster config)" in str(e.value)


def test_the_leader_names_max_message_bytes_and_its_cap() -> None:
    p = _leader()
    batch = make_batch(3, pid=9, epoch=0, seq=0, tag="x" * 200)
    [(offset, code, message)] = [r[:3] for r in _append(p, [batch], 300)]
    assert (offset, code) == (-1, P.RECORD_TOO_LARGE) and p.log_end_offset == 0
    assert f"batch of {len(batch)} bytes is over 300" in message
    assert "max.message.bytes" in message and "limits.batch_bytes_max" in message


@pytest.mark.parametrize("fast", [True, False])
def test_the_gateway_names_request_bytes_max(fast: bool) -> None:
    client, *_ = make_gateway(fast)
    r = client.post("/topics/t", data=binary(b"x" * BODY_MAX), headers={**AUTH, "Content-Type": BINARY})
    body = json.loads(r.get_data())
    assert r.status_code == 413 and body["error_code"] == 41301
    assert f"the limit is {BODY_MAX} (gateway.request_bytes_max)" in body["message"]
