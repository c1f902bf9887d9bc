"""The bench worker's send loops, on a recording stand-in for the Producer: the closed loop sends
exactly the target (one timed record per chunk), send_many is used only when asked for and the
client has it, the open loop paces at the offered rate, and end-to-end stamps are read back."""

from __future__ import annotations

import time

import pytest

from bench import runner, worker
from bench.options import OptionError, parse
from bench.stats import LatencyHistogram


class RecordingProducer:
    """Counts records; ``send_many`` exists only when ``many`` is set (as in an older client)."""

    def __init__(self, many: bool) -> None:
        self.sent: list[tuple[bytes, bool]] = []
        self.many_calls: list[int] = []
        if many:
            self.send_many = self._send_many

    def send(self, topic: str, value: bytes, on_delivery=None) -> None:  # noqa: ANN001
        self.sent.append((value, on_delivery is not None))
        if on_delivery is not None:
            on_delivery(None, None)

    def _send_many(self, topic: str, values: list[bytes]) -> None:
        self.many_calls.append(len(values))
        self.sent += [(v, False) for v in values]


def _spec(api: str, records: int, rate: int | None = None) -> dict:
    return {"topic": "t", "records": records, "duration": None, "api": api, "rate": rate}


@pytest.mark.parametrize("api, chunk", [("send", worker.CHUNK_SEND), ("send_many", worker.CHUNK_SEND_MANY)])
def test_closed_loop_sends_the_target_with_one_timed_record_per_chunk(api: str, chunk: int) -> None:
    p, acks, s = RecordingProducer(many=True), worker.AckQueue(), worker.Sampler(lambda _: None)
    worker._closed_loop(p, _spec(api, 2500), b"v" * 100, False, acks, s, time.perf_counter(), chunk)
    assert s.sent == len(p.sent) == 2500
    timed = sum(1 for _, cb in p.sent if cb)
    assert timed == -(-2500 // chunk) == len(acks.done)
    if api == "send_many":
        assert p.many_calls == [999, 999, 499]
    else:
        assert p.many_calls == []


def test_open_loop_paces_at_the_offered_rate_and_times_every_record() -> None:
    p, acks, s = RecordingProducer(many=False), worker.AckQueue(), worker.Sampler(lambda _: None)
    t0 = time.perf_counter()
    worker._paced(p, _spec("send", 200, rate=1000), b"v" * 100, True, acks, s, t0, worker.timed_every(1000))
    took = time.perf_counter() - t0
    assert 0.18 <= took < 1.0  # 200 records at 1000/s: the last is due at 0.199 s
    assert len(acks.done) == 200 and all(cb for _, cb in p.sent)
    assert all(v.startswith(worker.STAMP) and len(v) == 100 for v, _ in p.sent)


def test_open_loop_at_a_high_rate_times_one_record_in_k() -> None:
    p, acks, s = RecordingProducer(many=False), worker.AckQueue(), worker.Sampler(lambda _: None)
    every = worker.timed_every(50_000)
    assert every == 10
    worker._paced(p, _spec("send", 1000, rate=50_000), b"v" * 100, True, acks, s, time.perf_counter(), every)
    assert len(p.sent) == 1000 and len(acks.done) == 100
    assert sum(v.startswith(worker.STAMP) for v, _ in p.sent) == 100


def test_end_to_end_latency_is_read_from_stamped_records_only() -> None:
    s = worker.Sampler(lambda _: None)
    old = worker.stamped(b"x" * 100)
    time.sleep(0.002)
    worker._e2e([old, b"y" * 100], s)
    assert s.e2e.count == 1 and s.e2e.percentile_ms(50) >= 2.0


def test_send_many_is_measured_only_when_the_client_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from fabric.client import Producer
    monkeypatch.delattr(Producer, "send_many", raising=False)
    assert runner.available_apis(parse("produce", ["--api", "send,send_many"])) == ["send"]
    with pytest.raises(OptionError, match="send_many"):
        runner.available_apis(parse("produce", ["--api", "send_many"]))
    monkeypatch.setattr(Producer, "send_many", lambda self, topic, values: None, raising=False)
    assert runner.available_apis(parse("produce", ["--api", "send,send_many"])) == ["send", "send_many"]


def test_timeline_rates_use_each_samples_own_interval_and_sum_workers() -> None:
    from bench.workload import Timeline, Worker
    tl = Timeline()
    a, b = (Worker("producer", i, None, "") for i in (0, 1))  # type: ignore[arg-type]
    empty = LatencyHistogram().to_json()

    def sample(w: Worker, t: float, dt: float, acked: int) -> None:
        tl.add(w, {"t": tl.origin + t, "dt": dt, "acked": acked, "consumed": 0, "lat": empty, "e2e": empty})
    sample(a, 0.30, 0.30, 300)    # 1000/s
    sample(a, 0.45, 0.15, 600)    # 2000/s, same bucket: a averages 1500/s
    sample(b, 0.40, 0.40, 400)    # 1000/s
    sample(a, 0.90, 0.45, 1050)   # 1000/s, next bucket
    first, second = tl.points()
    assert (first["t_s"], first["produced_per_s"]) == (0.5, 2500)
    assert (second["t_s"], second["produced_per_s"]) == (1.0, 1000)


def test_flush_failure_reaches_the_worker() -> None:
    class FailingFlush(RecordingProducer):
        def flush(self, timeout: float | None = None) -> None:
            raise TimeoutError("flush timed out")
    with pytest.raises(TimeoutError):
        worker._flush_sampling(FailingFlush(many=False), worker.AckQueue(), worker.Sampler(lambda _: None), 1)


def test_a_failing_worker_stops_the_run_with_its_error(tmp_path) -> None:  # noqa: ANN001
    from bench.workload import Run, Target
    o = parse("produce", ["--records", "10"])
    run = Run(o, Target(["tcp://127.0.0.1:1"], {}, False), "t", str(tmp_path), None)
    try:
        with pytest.raises(RuntimeError, match="producer 0: KeyError"):
            run.start([{"role": "producer", "index": 0}])  # no bootstrap, no topic: the worker fails at once
    finally:
        run.close()


class _StallingProducer(RecordingProducer):
    """A producer whose send blocks once for ``stall_s`` (a full buffer), at record ``at``."""

    def __init__(self, at: int, stall_s: float) -> None:
        super().__init__(many=False)
        self.at, self.stall_s = at, stall_s

    def send(self, topic: str, value: bytes, on_delivery=None) -> None:  # noqa: ANN001
        if len(self.sent) == self.at:
            time.sleep(self.stall_s)  # the stand-in for a send() that blocks
        super().send(topic, value, on_delivery)


def test_open_loop_counts_how_late_each_send_went_out_behind_a_stall() -> None:
    """The ack latency counts from the send, as the peers' benchmarks do; the records that queued
    up behind a stalled send go out late, and the send delay (the OpenMessaging Benchmark's
    publish delay) says so instead of hiding it (coordinated omission)."""
    p, acks, s = _StallingProducer(at=10, stall_s=0.1), worker.AckQueue(), worker.Sampler(lambda _: None)
    worker._paced(p, _spec("send", 100, rate=1000), b"v" * 100, False, acks, s, time.perf_counter(), 1)
    assert s.send_delay.count == 100
    delays = s.send_delay.summary_ms()
    assert delays["p50"] >= 5.0, f"about 90 records were due during the 100 ms stall: {delays}"


def test_a_rate_below_one_record_a_second_per_producer_is_a_usage_error() -> None:
    with pytest.raises(OptionError, match="at least --producers"):
        parse("produce", ["--rate", "3", "--producers", "4", "--records", "100"])
