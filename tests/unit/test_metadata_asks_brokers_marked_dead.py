"""Metadata asks of brokers the client's metadata says are dead: asked after the live ones,
never left out for good. A producer's metadata is a copy, and "dead" in it may be long out of
date: in group_nemesis seed 134 --unclean, brokers 2 and 3 were SIGKILLed (the coordinator
marked them dead), broker 1 led every partition alone and was SIGSTOPped; broker 2 was started
again and elected uncleanly -- the only live broker, min.insync.replicas 1 -- and the
coordinator was then SIGKILLed and SIGSTOPped over and over. The producer, whose metadata still
said broker 1 alive and 2 and 3 dead, asked only the stopped broker 1 (3 s timeouts) and, at
the ends of its backoffs, the silent coordinator: it never asked broker 2, which led every
partition, and acknowledged nothing for 20 s, until the coordinator answered again."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fabric import protocol as P
from fabric.errors import ConnectionRefused, RequestTimeout
from fabric.metadata import ClusterMetadata
from tests.unit.builders_sender import COORDINATOR, LEADER, Rig

BROKER_2, BROKER_3 = "tcp://127.0.0.1:2", "tcp://127.0.0.1:3"


def _metadata(version: int, leader: int, epoch: int, alive: set[int]) -> ClusterMetadata:
    """Topic ``t``, one partition on brokers 1 to 3 (their ports 1 to 3), led by ``leader`` alone."""
    return ClusterMetadata.from_wire({
        "version": version, "cluster": "c", "coordinator": COORDINATOR,
        "brokers": [[b, "127.0.0.1", b, 100 + b, b in alive] for b in (1, 2, 3)],
        "topics": {"t": {"configs": {}, "id": "", "partitions": [[leader, epoch, [1, 2, 3], [leader]]]}}})


@pytest.mark.parametrize("back_after_ms", [0, 1000, 2000, 3000, 4000, 5000, 6000])
def test_a_producer_finds_the_new_leader_its_metadata_says_is_dead_while_nothing_else_answers(
        make_sender_rig: Callable[..., Rig], back_after_ms: int) -> None:
    """Broker 2 started again and elected ``back_after_ms`` into the outage (its port refuses
    until then). The stopped broker 1 holds each ask its whole timeout (3 s), longer than the
    coordinator's backoff, so a probe of the coordinator comes after each of them: in the
    third run of seed 134 (the dead brokers already in the turns) the probe took the turn
    after broker 1's -- broker 2's -- every time."""
    rig = make_sender_rig(endpoints=[COORDINATOR, LEADER, BROKER_2, BROKER_3], delivery_timeout_ms=60_000)
    rig.metadata.update(_metadata(5, leader=1, epoch=3, alive={1}))
    rig.sender.run_pass()
    rig.grant_producer_id(7)
    futures = rig.send("a")
    rig.sender.run_pass()
    assert len(rig.produce_requests()) == 1, "the batch went to broker 1"  # never answered: SIGSTOPped
    elected = _metadata(9, leader=2, epoch=4, alive={2})  # broker 2's copy: elected, alone in the ISR
    refused = ConnectionRefused("refused the connection: nothing listens there", reason="ECONNREFUSED")
    back_ms = rig.sender.clock.now_ms() + back_after_ms

    def answer(endpoint: str, sent_ms: int) -> tuple[int, dict | None, Exception | None]:
        """How an ask of ``endpoint`` sent at ``sent_ms`` ends: (after ms, header, error)."""
        if endpoint == LEADER:  # SIGSTOPped
            return 3000, None, RequestTimeout(f"no reply from {LEADER}")
        if endpoint == BROKER_2 and sent_ms >= back_ms:
            return 0, {"metadata": elected.to_wire()}, None
        return 0, None, refused  # SIGKILLed: the coordinator, broker 3, broker 2 until it is back
    asked: list[str] = []
    due: list[tuple[int, tuple, Callable]] = []  # (when, how it ends, callback) of the asks made
    for _ in range(300):  # 30 s
        rig.reactor.advance(100)
        rig.sender.run_pass()
        now = rig.sender.clock.now_ms()
        for endpoint, client in list(rig.clients.items()):
            for i in [i for i in client.unanswered if client.sent[i][0] == P.METADATA]:
                client.unanswered.remove(i)
                asked.append(endpoint)
                after_ms, header, error = answer(endpoint, now)
                due.append((now + after_ms, (header, [], error), client.sent[i][3]))
        for ask in [d for d in due if d[0] <= now]:
            due.remove(ask)
            ask[2](*ask[1])
        if rig.client(BROKER_2).of(P.PRODUCE):
            break
    assert rig.client(BROKER_2).of(P.PRODUCE), f"broker 2, the leader, not found in 30 s; asked {asked[:12]}..."
    assert rig.sender.clock.now_ms() - back_ms <= 6000, f"found late; asked {asked}"
    [(_, header, _, _)] = rig.client(BROKER_2).of(P.PRODUCE)
    assert header["parts"][0][:3] == ["t", 0, 4], "not sent to the new leader at its epoch"
    rig.client(BROKER_2).answer_last(P.PRODUCE, {"results": [[0, 0, ""]]})
    assert [f.result(0).offset for f in futures] == [0, 1]
