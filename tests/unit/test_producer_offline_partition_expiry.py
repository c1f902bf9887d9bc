"""A batch for a partition that has no leader (offline: every in-sync replica is dead, or a
partition a restarted coordinator made before it heard any broker, on a broker that does not
come back) waits in the producer for a leader until ``delivery_timeout_ms``, as Kafka's does:
then it fails -- with the reason. It said only "not delivered within delivery_timeout_ms", with
the code request_timed_out, though no request was ever sent: now leader_not_available and that
the partition has no leader.

The sender's real parts on a ManualClock (tests/unit/builders_sender.py).
"""

from __future__ import annotations

from typing import Callable

from fabric import protocol as P
from fabric.errors import DeliveryTimeoutError
from tests.unit.builders_sender import Rig, sender_metadata


def test_a_batch_for_a_partition_without_a_leader_expires_saying_so(make_sender_rig: Callable[..., Rig]) -> None:
    rig = make_sender_rig(idempotent=False)  # delivery_timeout_ms 1000
    rig.metadata.update(sender_metadata(version=2, leader=-1))
    futures = rig.send("r")
    rig.sender.run_pass()
    assert not rig.produce_requests() and not futures[0].done()
    rig.reactor.advance(1000)
    rig.sender.run_pass()
    for f in futures:
        error = f.exception(0)
        assert isinstance(error, DeliveryTimeoutError), repr(error)
        assert error.code == P.LEADER_NOT_AVAILABLE and "t-0 has no leader" in error.message, error
