"""A seeded fuzz of the producer's splits, producer-id resets and renumbering against real
broker partitions (MemoryEngine): random records (some over a limit that moves), replies
delivered, lost after the write, refused as not leader, or with a batch failed for good. After
each run: no record twice in a log, none out of order, every future done, every acknowledged
record in the log, and the partition still takes a new record."""

from __future__ import annotations

import random

import pytest

from fabric import protocol as P
from fabric.errors import RequestTimeout
from tests.unit.test_producer_split_against_a_partition import BIG, L1, L2, SplitRig


def deliver_then_lose_reply(rig: SplitRig, ep: str) -> None:
    c = rig.clients[ep]
    _, header, payloads, _ = c.of(P.PRODUCE)[-1]
    for (topic, _p, _e, pw), data in zip(header["parts"], payloads):
        rig.parts[topic].append_as_leader([data], rig.limit[topic], [bool(pw)])
    c.answer_last(P.PRODUCE, None, err=RequestTimeout("no reply"))


def fail_first(rig: SplitRig, ep: str) -> None:
    """The first batch is refused for good (invalid_record, not written); the partition
    judges the rest itself."""
    c = rig.clients[ep]
    _, header, payloads, _ = c.of(P.PRODUCE)[-1]
    results = []
    for i, ((topic, _p, _e, pw), data) in enumerate(zip(header["parts"], payloads)):
        if i == 0:
            results.append([-1, P.INVALID_RECORD, "bad"])
        else:
            r, _ = rig.parts[topic].append_as_leader([data], rig.limit[topic], [bool(pw)])
            results.append(list(r[0]))
    c.answer_last(P.PRODUCE, {"results": results})


@pytest.mark.parametrize("seed", range(120))
def test_no_record_lost_twice_written_or_reordered(seed: int) -> None:
    rnd = random.Random(seed)
    rig = SplitRig(batch_records_max=rnd.choice([2, 3, 10]))
    sent: dict[str, list[bytes]] = {"t": [], "u": []}
    futs: dict[str, list] = {"t": [], "u": []}
    n = 0
    for _ in range(40):
        for _ in range(rnd.randint(0, 6)):
            topic = rnd.choice("tu")
            v = b"%s%05d" % (topic.encode(), n) + (b"." * rnd.choice([0, 0, 0, 100, 400]))
            n += 1
            sent[topic].append(v)
            futs[topic].append(rig.send(topic, v))
        if rnd.random() < 0.5:
            rig.flush_batches()
        if rnd.random() < 0.2:
            rig.limit["t"] = rnd.choice([BIG, 300, 600, 1200])
        rig.grant_pid()
        for ep, topic in ((L1, "t"), (L2, "u")):
            if not rig.unanswered(ep, P.PRODUCE):
                continue
            act = rnd.random()
            if act < 0.55:
                rig.deliver(ep)
            elif act < 0.7:
                deliver_then_lose_reply(rig, ep)
            elif act < 0.85:
                c = rig.clients[ep]
                k = len(c.of(P.PRODUCE)[-1][1]["parts"])
                rig.deliver(ep, override=[[-1, P.NOT_LEADER, "moved"]] * k)
            else:
                fail_first(rig, ep)
    rig.limit["t"] = BIG
    rig.flush_batches()
    for _ in range(200):
        rig.grant_pid()
        busy = False
        for ep in (L1, L2):
            if rig.unanswered(ep, P.PRODUCE):
                rig.deliver(ep)
                busy = True
        if not busy:
            break
    for topic in "tu":
        log = rig.log(topic)
        assert len(log) == len(set(log)), ("duplicate", topic, [v[:6] for v in log])
        order = {v: i for i, v in enumerate(sent[topic])}
        idx = [order[v] for v in log]
        assert idx == sorted(idx), ("reordered", topic, idx)
        for v, f in zip(sent[topic], futs[topic]):
            assert f.done(), ("stuck", topic, v[:6])
            e = f.exception(0)
            if e is None:
                assert v in log, ("acked but not in log", v[:6])
    # no partition left failing out of order: a fresh record goes through
    g = rig.send("t", b"final")
    rig.flush_batches()
    for _ in range(20):
        rig.grant_pid()
        if rig.unanswered(L1, P.PRODUCE):
            rig.deliver(L1)
    assert g.exception(0) is None, g.exception(0)
