"""A seeded fuzz of the idempotent producer with more than one request in flight per partition
(``max_in_flight`` 2 and 5), against real broker partitions (MemoryEngine): requests reach
the broker in the order they were sent and are written, refused whole before the write (not
leader, not enough replicas, a batch over the topic's byte limit, which moves: the producer
splits it), or lost with their connection; answers come back in any order,
or never (a timeout); the leader forgets its producers (an LRU eviction); batches run out of
delivery time while others of their partition are still retried. After each run, per
partition: no record twice in the log, none out of order, every future done, every
acknowledged record in the log at the offset its future gives (and every future completed in
the order sent), every record that failed but is in the log failed saying it may have been
written -- and no batch ever refused as an old duplicate (numbered out of order, or a retry the
broker no longer remembers). The same faults run without a retry backoff (a batch sent again
goes at the next pass) and with the Producer's default one."""

from __future__ import annotations

import random

import pytest

from fabric import protocol as P
from fabric.errors import RequestTimeout
from tests.unit.test_producer_failure_paths_fuzz import check_outcomes, settle
from tests.unit.test_producer_split_against_a_partition import BIG, L1, L2, SplitRig

ENDPOINTS = ((L1, "t"), (L2, "u"))


class Broker:
    """One endpoint's side of the connection: requests arrive in sending order; each is written
    (or refused whole) by the real partition when it arrives, and answered later, in any order."""

    def __init__(self, rig: SplitRig, endpoint: str, topic: str) -> None:
        self.rig, self.endpoint, self.topic = rig, endpoint, topic
        self.arrived = 0        # requests (indexes into the client's ``sent``) taken, in order
        self.held: dict[int, tuple] = {}  # arrived, not answered: index -> (header, error)
        self.dropped: set[int] = set()    # lost on the way: never arrive

    def _produces(self) -> list[int]:
        c = self.rig.clients.get(self.endpoint)
        return [] if c is None else [i for i, s in enumerate(c.sent) if s[0] == P.PRODUCE]

    def pending(self) -> list[int]:
        return [i for i in self._produces() if i >= self.arrived and i not in self.dropped]

    def arrive(self, refuse: int | None = None, invalid: int | None = None) -> bool:
        """The oldest request on its way reaches the broker: written part by part as the
        partition judges it, or (``refuse``, an error code) refused whole before any write.
        ``invalid``: the part of that index (if any) is refused for good (invalid_record)
        before the others are judged."""
        todo = self.pending()
        if not todo:
            return False
        i = todo[0]
        self.arrived = i + 1
        _, header, payloads, _ = self.rig.clients[self.endpoint].sent[i]
        results = []
        for j, ((topic, _p, _e, flags), data) in enumerate(zip(header["parts"], payloads)):
            if refuse is not None:
                results.append([-1, refuse, "refused"])
                continue
            if j == invalid:
                results.append([-1, P.INVALID_RECORD, "invalid"])
                continue
            r, _ = self.rig.parts[topic].append_as_leader([data], self.rig.limit[topic], [flags])
            results.append(list(r[0]))
        self.held[i] = ({"results": results}, None)
        return True

    def arrive_together(self) -> bool:
        """Every request on its way reaches the broker in one reactor pass: each partition's
        batches of them all appended in one call (the broker's group commit)."""
        todo = self.pending()
        if not todo:
            return False
        self.arrived = todo[-1] + 1
        c = self.rig.clients[self.endpoint]
        inputs: dict[str, list[tuple[int, int, bytes, int]]] = {}
        for i in todo:
            _, header, payloads, _ = c.sent[i]
            for j, ((topic, _p, _e, flags), data) in enumerate(zip(header["parts"], payloads)):
                inputs.setdefault(topic, []).append((i, j, data, flags))
        results: dict[int, dict[int, list]] = {i: {} for i in todo}
        for topic, items in inputs.items():
            out, _ = self.rig.parts[topic].append_as_leader([d for _, _, d, _ in items], self.rig.limit[topic],
                                                           [f for _, _, _, f in items])
            for (i, j, _, _), r in zip(items, out):
                results[i][j] = list(r)
        for i in todo:
            self.held[i] = ({"results": [results[i][j] for j in sorted(results[i])]}, None)
        return True

    def restart(self) -> None:
        """The broker's process restarts (the leader again, at the next leader epoch): what
        had not arrived is lost with the old process, whose requests are never answered; the
        client learns it from fresh metadata and fails them (``_reroute_in_flight``)."""
        self.dropped.update(self.pending())
        self.held.clear()
        self.rig.bump_epoch(self.topic)

    def answer(self, rnd: random.Random) -> bool:
        """One arrived request, picked at random, is answered."""
        if not self.held:
            return False
        i = rnd.choice(sorted(self.held))
        self._answer(i, *self.held.pop(i))
        return True

    def lose_reply(self, rnd: random.Random) -> bool:
        """One unanswered request's answer never comes (the client's timeout ends it); if it had
        not arrived, it may still arrive later (a slow broker)."""
        c = self.rig.clients.get(self.endpoint)
        open_ = [] if c is None else [i for i in c.unanswered if c.sent[i][0] == P.PRODUCE]
        if not open_:
            return False
        i = rnd.choice(open_)
        self.held.pop(i, None)
        self._answer(i, None, RequestTimeout("no reply"))
        return True

    def drop_connection(self) -> None:
        """The connection ends: what had not arrived never will, and every open request fails
        (in sending order, as RpcClient.fail_all)."""
        self.dropped.update(self.pending())
        self.held.clear()
        c = self.rig.clients.get(self.endpoint)
        if c is not None:
            for i in sorted(i for i in c.unanswered if c.sent[i][0] == P.PRODUCE):
                self._answer(i, None, RequestTimeout("connection lost"))

    def _answer(self, i: int, header: dict | None, err: object) -> None:
        # the client never sends a batch numbered behind what the partition took of its
        # producer unless as a retry the partition still remembers: an old duplicate is a batch
        # numbered out of queue order, or a retry pushed out of the broker's memory
        assert header is None or all(r[1] != P.DUPLICATE_SEQUENCE for r in header["results"]), header
        c = self.rig.clients[self.endpoint]
        if i in c.unanswered:
            c.unanswered.remove(i)
            c.sent[i][3](header, [], err)


def _forget_producers(rig: SplitRig, topic: str) -> None:
    table = rig.parts[topic].producers
    table.truncate(forgot_below=max(1, rig.parts[topic].log_end_offset))


def _run(seed: int, max_in_flight: int, more_faults: bool = False, backoff: bool = False) -> None:
    """``backoff``: the Producer's default retry backoff (100 ms doubling to 1000 ms; no jitter,
    so that a seed replays), else none."""
    rnd = random.Random(seed)
    backoff_settings = dict(retry_backoff_ms=100, retry_backoff_max_ms=1000, retry_jitter=0.0) if backoff else {}
    rig = SplitRig(batch_records_max=rnd.choice([2, 3, 10]), delivery_timeout_ms=rnd.choice([300, 1000, 100_000]),
                   max_in_flight=max_in_flight, **backoff_settings)
    brokers = [Broker(rig, ep, topic) for ep, topic in ENDPOINTS]
    sent: dict[str, list[bytes]] = {"t": [], "u": []}
    futs: dict[str, list] = {"t": [], "u": []}
    acked: dict[str, list[bytes]] = {"t": [], "u": []}  # in the order the futures said written
    completed: dict[str, list[bytes]] = {"t": [], "u": []}  # in the order the callbacks ran, failures too

    def on_done(topic: str, value: bytes):  # noqa: ANN202
        def done(_md: object, err: object) -> None:
            completed[topic].append(value)
            if err is None:
                acked[topic].append(value)
        return done

    most_in_flight = 0
    for step in range(60):
        for i, topic in enumerate(rnd.choices("tu", k=rnd.randint(0, 5))):
            v = b"%s%03d.%d" % (topic.encode(), step, i) + (b"." * rnd.choice([0, 0, 0, 100, 400]))
            sent[topic].append(v)
            futs[topic].append(rig.send(topic, v, on_delivery=on_done(topic, v)))
        if rnd.random() < 0.6:
            rig.flush_batches()
        if rnd.random() < 0.15:
            rig.limit["t"] = rnd.choice([BIG, BIG, 300, 600, 1200])
        if rnd.random() < 0.3:
            rig.clock.advance(rnd.choice([30, 60, 200, 400]))
            rig.reactor.run_due()
        rig.grant_pid()
        for b in brokers:
            c = rig.clients.get(b.endpoint)
            if c is not None:
                most_in_flight = max(most_in_flight, sum(c.sent[i][0] == P.PRODUCE for i in c.unanswered))
            act = rnd.random()
            if act < 0.35:
                b.arrive()
            elif act < 0.6:
                b.answer(rnd)
            elif act < 0.67:
                b.arrive(refuse=rnd.choice([P.NOT_LEADER, P.NOT_ENOUGH_REPLICAS]))
            elif act < 0.72:
                b.lose_reply(rnd)
            elif act < 0.76:
                b.drop_connection()
            elif act < 0.8:
                _forget_producers(rig, b.topic)
            elif more_faults and act < 0.85:
                b.arrive_together()
            elif more_faults and act < 0.88:
                b.arrive(invalid=rnd.randint(0, 3))
            elif more_faults and act < 0.9:
                b.restart()
    rig.limit["t"] = BIG
    rig.flush_batches()

    def answer_all() -> bool:
        busy = False
        for b in brokers:
            while b.arrive():
                busy = True
            while b.answer(rnd):
                busy = True
        return busy
    settle(rig, futs, answer_all, step_ms=60, rounds=400)
    check_outcomes(rig, sent, futs)
    for topic in "tu":
        order = {v: i for i, v in enumerate(sent[topic])}
        acked_idx = [order[v] for v in acked[topic]]
        assert acked_idx == sorted(acked_idx), ("acknowledged out of order", topic, acked_idx)
        done_idx = [order[v] for v in completed[topic]]
        assert done_idx == sorted(done_idx), ("completed out of order", topic, done_idx)
    assert most_in_flight <= max_in_flight  # (one partition per broker)
    # every request answered and read: nothing of the bookkeeping is left to grow
    f = rig.sender._flights
    leftovers = {"in flight": dict(f._of), "answers": {k: v for k, v in f._answers.items() if v},
                 "dead": f.dead, "requeued": dict(f._requeued),
                 "awaiting": dict(f.awaiting), "deferred": dict(f.deferred)}
    assert not any(leftovers.values()), leftovers


@pytest.mark.parametrize("seed", range(120))
def test_pipelined_requests_lose_duplicate_reorder_or_misreport_nothing(seed: int) -> None:
    _run(seed, max_in_flight=2 if seed % 3 else 5)


@pytest.mark.parametrize("seed", range(40))
def test_one_request_in_flight_against_the_same_faults(seed: int) -> None:
    _run(seed, max_in_flight=1)


@pytest.mark.parametrize("seed", range(120))
def test_pipelined_requests_through_group_commits_invalid_batches_and_leader_restarts(seed: int) -> None:
    """As above, and: requests read in one pass of the broker (one append per partition), a
    batch refused for good (its producer id reset), the leader restarted at a new epoch."""
    _run(seed, max_in_flight=2 if seed % 3 else 5, more_faults=True)


@pytest.mark.parametrize("faults", ["pipelined", "more-faults", "one-in-flight"])
@pytest.mark.parametrize("seed", range(120))
def test_the_same_faults_with_the_retry_backoff(seed: int, faults: str) -> None:
    """Batches sent again wait out their backoff, their partitions' later batches behind them:
    nothing lost, written twice, reordered -- nor stuck past the settling (a batch refused out
    of order behind one failed for good used to back off too, one round per second)."""
    in_flight = 1 if faults == "one-in-flight" else 2 if seed % 3 else 5
    _run(seed, max_in_flight=in_flight, more_faults=faults == "more-faults", backoff=True)
