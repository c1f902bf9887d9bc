"""A fetch position out of the log's range (a seek past its end, or below a start that retention
moved) is reset by ``auto_offset_reset`` -- and said, once per reset, with the position and where
the consumer goes (Kafka's consumer logs "Fetch position ... is out of range ... resetting
offset"): `loom consume --offset` past the end printed nothing and waited for new records.

A real Consumer on a ManualClock and a fake broker leading t-0 (log end 1000) that answers
OFFSET_OUT_OF_RANGE from ``out_of_range_from`` (tests/unit/builders_group_consumer.py)."""

from __future__ import annotations

import logging

import pytest

from fabric import protocol as P
from fabric.client.consumer import Consumer
from tests.unit.builders_group_consumer import T0, HeldWorld, consumer_config


@pytest.mark.parametrize("policy", ["latest", "earliest"])
def test_a_position_out_of_range_is_said_with_where_the_consumer_goes(policy: str,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    w = HeldWorld(P.JOIN_GROUP, enable_auto_commit=False)
    w.client.holding = False
    w.broker.out_of_range_from = 5000
    c = Consumer("127.0.0.1:1", **{k: v for k, v in consumer_config(w.broker, w.reactor, None).items()
                                   if k not in ("coordinator", "heartbeat_factory")} | {"auto_offset_reset": policy})
    try:
        c.assign([T0])
        c.seek(T0, 5000)
        with caplog.at_level(logging.WARNING, logger="fabric.client.consumer"):
            for _ in range(20):
                c.poll(100, max_records=1)
                if c.position(T0) is not None and c.position(T0) != 5000:
                    break
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(said) == 1, said
        assert "t-0" in said[0] and "5000" in said[0] and policy in said[0]
    finally:
        c.close()
        w.close()
