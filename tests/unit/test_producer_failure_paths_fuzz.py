"""A seeded fuzz of the idempotent producer's failure paths against real broker partitions
(MemoryEngine): replies delivered, lost after the whole or part of the request was written,
lost with nothing written, refused as not leader, a batch failed for good, the producer's state
forgotten by the leader (an LRU eviction), and batches that run out of delivery time while
others of their partition are still retried. After each run, per partition: no record twice
in the log, none out of order, every future done, every acknowledged record in the log at
the offset its future gives, and every record that failed but is in the log failed saying it
may have been written."""

from __future__ import annotations

import random
from typing import Callable

import pytest

from fabric import protocol as P
from fabric.errors import MAY_HAVE_BEEN_WRITTEN, RequestTimeout
from fabric.records import decode_batches
from tests.unit.test_producer_split_against_a_partition import L1, L2, SplitRig

ENDPOINTS = ((L1, "t"), (L2, "u"))


def _write_prefix_then_lose_reply(rig: SplitRig, ep: str, written: int) -> None:
    """The first ``written`` batches of the last PRODUCE are written, then the reply is lost."""
    c = rig.clients[ep]
    _, header, payloads, _ = c.of(P.PRODUCE)[-1]
    for (topic, _p, _e, pw), data in list(zip(header["parts"], payloads))[:written]:
        rig.parts[topic].append_as_leader([data], rig.limit[topic], [bool(pw)])
    c.answer_last(P.PRODUCE, None, err=RequestTimeout("no reply"))


def _forget_producers(rig: SplitRig, topic: str) -> None:
    """The leader's producer table loses every producer (as an LRU eviction does)."""
    table = rig.parts[topic].producers
    table.truncate(forgot_below=max(1, rig.parts[topic].log_end_offset))


def _offsets(rig: SplitRig, topic: str) -> dict[int, bytes]:
    p = rig.parts[topic]
    return {r.offset: r.value for r in decode_batches(topic, 0, p.engine.read(0, 1 << 30))}


def _run(seed: int) -> None:
    rnd = random.Random(seed)
    rig = SplitRig(batch_records_max=rnd.choice([2, 3, 10]), delivery_timeout_ms=rnd.choice([300, 1000, 100_000]))
    sent: dict[str, list[bytes]] = {"t": [], "u": []}  # per topic: the values, and their futures
    futs: dict[str, list] = {"t": [], "u": []}
    for step in range(40):
        for i, topic in enumerate(rnd.choices("tu", k=rnd.randint(0, 6))):
            sent[topic].append(b"%s%03d.%d" % (topic.encode(), step, i))
            futs[topic].append(rig.send(topic, sent[topic][-1]))
        if rnd.random() < 0.5:
            rig.flush_batches()
        if rnd.random() < 0.3:
            rig.clock.advance(rnd.choice([50, 200, 400]))
            rig.reactor.run_due()
        rig.grant_pid()
        for ep, topic in ENDPOINTS:
            if not rig.unanswered(ep, P.PRODUCE):
                continue
            k = len(rig.clients[ep].of(P.PRODUCE)[-1][1]["parts"])
            act = rnd.random()
            if act < 0.45:
                rig.deliver(ep)
            elif act < 0.6:
                _write_prefix_then_lose_reply(rig, ep, rnd.randint(0, k))
            elif act < 0.7:
                rig.deliver(ep, override=[[-1, P.NOT_LEADER, "moved"]] * k)
            elif act < 0.8:
                _forget_producers(rig, topic)
                rig.deliver(ep)
            elif act < 0.9:
                rig.deliver(ep, override=[[-1, P.NOT_ENOUGH_REPLICAS, "isr"]] * k)
            else:
                rig.clients[ep].answer_last(P.PRODUCE, None, err=RequestTimeout("no reply"))
    rig.flush_batches()

    def deliver_all() -> bool:
        pending = [ep for ep, _ in ENDPOINTS if rig.unanswered(ep, P.PRODUCE)]
        for ep in pending:
            rig.deliver(ep)
        return bool(pending)
    settle(rig, futs, deliver_all, step_ms=100, rounds=300)
    check_outcomes(rig, sent, futs)


def settle(rig: SplitRig, futs: dict[str, list], answer: Callable[[], bool], step_ms: int, rounds: int) -> None:
    """Time passes in ``step_ms`` steps (retries, timeouts), the producer id is granted and
    ``answer`` answers what is on its way (True: it did something), until every future is done
    and nothing is left to answer, or ``rounds`` steps."""
    for _ in range(rounds):
        rig.clock.advance(step_ms)
        rig.reactor.run_due()
        rig.grant_pid()
        if not answer() and all(f.done() for fs in futs.values() for f in fs):
            return


def check_outcomes(rig: SplitRig, sent: dict[str, list[bytes]], futs: dict[str, list]) -> None:
    """Per topic: no record twice in the log, none out of order, every future done, every
    acknowledged record at its offset, every failed record in the log said to be maybe written."""
    for topic in "tu":
        log = rig.log(topic)
        assert len(log) == len(set(log)), ("duplicate", topic, log)
        order = {v: i for i, v in enumerate(sent[topic])}
        idx = [order[v] for v in log]
        assert idx == sorted(idx), ("reordered", topic, idx)
        at = _offsets(rig, topic)
        for v, f in zip(sent[topic], futs[topic]):
            assert f.done(), ("stuck", topic, v)
            e = f.exception(0)
            if e is None:
                offset = f.result(0).offset
                assert at.get(offset) == v, ("acknowledged at an offset that holds another record", v, offset,
                                             at.get(offset))
            elif v in log:
                assert MAY_HAVE_BEEN_WRITTEN in str(e), ("failed without 'may have been written', but written", v, e)


@pytest.mark.parametrize("seed", range(150))
def test_no_record_lost_twice_written_reordered_or_misreported(seed: int) -> None:
    _run(seed)
