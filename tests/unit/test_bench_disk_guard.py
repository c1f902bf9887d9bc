"""`loom bench` stops its producers before a self-contained cluster fills the disk it writes to,
or (the memory engine) the machine's memory.

A 1 KiB workload at RF 3 writes about 1 GB/s on this machine: a two-minute `--duration` run
filled a 79 GB disk and took every process on the machine down with it. The guard measures the
free space of the file system under the cluster's data; below the floor it tells the producers
to stop, the run ends like a shorter one, and its result says why it ended early."""

from __future__ import annotations

import io
import threading
import time
from types import SimpleNamespace

import pytest

from bench import report, worker, workload

GIB = 1 << 30


class RecordingProducer:
    def __init__(self, on_record=None) -> None:  # noqa: ANN001
        self.count = 0
        self.on_record = on_record or (lambda n: None)

    def send(self, topic: str, value: bytes, on_delivery=None) -> None:  # noqa: ANN001
        self.count += 1
        self.on_record(self.count)
        if on_delivery is not None:
            on_delivery(None, None)

    def send_many(self, topic: str, values: list[bytes]) -> None:
        for _ in values:
            self.send(topic, b"")


def _unbounded(api: str, rate: int | None = None) -> dict:
    # no record target and no duration: only a stop ends the loop (or PHASE_S_MAX)
    return {"topic": "t", "records": None, "duration": None, "api": api, "rate": rate}


@pytest.mark.parametrize("api", ["send", "send_many"])
def test_the_closed_loop_ends_when_told_to_stop(api: str) -> None:
    stopping = threading.Event()
    p = RecordingProducer(on_record=lambda n: stopping.set() if n == 5000 else None)
    acks, s = worker.AckQueue(), worker.Sampler(lambda _: None, stopping)
    worker._closed_loop(p, _unbounded(api), b"v" * 100, False, acks, s, time.perf_counter(),
                        worker.CHUNK_SEND_MANY if api == "send_many" else worker.CHUNK_SEND)
    assert 5000 <= s.sent <= 5000 + worker.CHUNK_SEND_MANY
    assert s.sent == p.count


def test_the_open_loop_ends_when_told_to_stop() -> None:
    stopping = threading.Event()
    p = RecordingProducer(on_record=lambda n: stopping.set() if n == 300 else None)
    acks, s = worker.AckQueue(), worker.Sampler(lambda _: None, stopping)
    worker._paced(p, _unbounded("send", rate=100_000), b"v" * 100, False, acks, s, time.perf_counter(),
                  worker.timed_every(100_000))
    assert s.sent == p.count == 300


def test_the_command_reader_raises_the_stop_flag_as_soon_as_stop_arrives() -> None:
    commands = worker.Commands(io.StringIO("go\nstop\n"))
    assert commands.stopping.wait(5.0)
    commands.wait("go", 1.0)  # the words stay readable in order, as before
    assert commands.has("stop")


def test_the_floor_is_a_gibibyte_or_a_share_of_a_big_disk() -> None:
    assert workload.disk_floor_bytes(20 * GIB) == workload.DISK_FREE_MIN_BYTES
    assert workload.disk_floor_bytes(1000 * GIB) == int(1000 * GIB * workload.DISK_FREE_MIN_SHARE)
    assert workload.DISK_FREE_MIN_BYTES >= GIB


class FakeProc:
    def __init__(self) -> None:
        self.stdin = io.BytesIO()

    def poll(self) -> None:
        return None


def _run_with_disk(free: list[int], total: int = 100 * GIB, memory: list[int] | None = None) -> tuple[workload.Run, list]:
    """A run on a fake file system (``free[0]`` bytes free) and a fake machine (``memory[0]``
    bytes available of 24 GiB; plenty unless given)."""
    target = workload.Target(["tcp://127.0.0.1:1"], {}, True, data_dir="/nowhere")
    o = SimpleNamespace()
    memory = memory or [20 * GIB]
    r = workload.Run(o, target, "t", "/nowhere", None,
                     disk_usage=lambda path: SimpleNamespace(total=total, free=free[0], used=total - free[0]),
                     memory=lambda: (24 * GIB, memory[0]))
    producer = workload.Worker("producer", 0, FakeProc(), "/nowhere/p.stderr")
    consumer = workload.Worker("consumer", 0, FakeProc(), "/nowhere/c.stderr")
    r.workers += [producer, consumer]
    return r, [producer, consumer]


def test_the_guard_tells_the_producers_to_stop_once_and_says_why() -> None:
    free = [50 * GIB]
    r, (producer, consumer) = _run_with_disk(free)
    producer.going = consumer.going = True
    r.check_room()
    assert r.stopped_early is None and producer.proc.stdin.getvalue() == b""
    free[0] = workload.DISK_FREE_MIN_BYTES - 1
    r.check_room()
    r.check_room()
    assert producer.proc.stdin.getvalue() == b"stop\n"  # once, not at every check
    assert consumer.proc.stdin.getvalue() == b""        # consumers read on to what was written
    assert "disk" in r.stopped_early and "/nowhere" in r.stopped_early


def test_a_producer_that_is_done_is_not_told_and_the_run_is_not_marked() -> None:
    free = [1]
    r, (producer, _) = _run_with_disk(free)
    producer.going = True
    producer.done = {"records": 1}
    r.check_room()
    assert producer.proc.stdin.getvalue() == b""
    assert r.stopped_early is None  # nothing was cut short: a consume drain may fill the last GB


def test_a_producer_not_yet_started_is_never_told_stop_before_go() -> None:
    """A worker reads "go" first and anything else as a protocol error: the guard only talks
    to producers that were sent "go" (start() pumps while they connect)."""
    free = [1]
    r, (producer, _) = _run_with_disk(free)
    r.check_room()
    assert producer.proc.stdin.getvalue() == b"" and r.stopped_early is None


def test_a_disk_already_under_the_floor_refuses_the_run_before_it_starts(tmp_path) -> None:  # noqa: ANN001
    usage = SimpleNamespace(total=100 * GIB, free=workload.DISK_FREE_MIN_BYTES - 1)
    plenty = (24 * GIB, 20 * GIB)
    with pytest.raises(RuntimeError, match=r"the disk under .* GB free .*TMPDIR"):
        workload.check_room_before_run(str(tmp_path), disk_usage=lambda path: usage, memory=lambda: plenty)
    roomy = SimpleNamespace(total=100 * GIB, free=50 * GIB)
    workload.check_room_before_run(str(tmp_path), disk_usage=lambda path: roomy, memory=lambda: plenty)
    with pytest.raises(RuntimeError, match=r"GB of memory available"):
        workload.check_room_before_run(str(tmp_path), disk_usage=lambda path: roomy, memory=lambda: (24 * GIB, GIB))
    # memory unknown (no /proc/meminfo): not a reason to refuse
    workload.check_room_before_run(str(tmp_path), disk_usage=lambda path: roomy, memory=lambda: None)


def test_a_memory_engine_cluster_stops_before_the_machine_runs_out_of_memory() -> None:
    """The memory engine keeps every record in the brokers' RAM (three copies at RF 3): a 10 s
    full-speed run took 2.4 GB per broker, and a longer one would take the machine down."""
    memory = [20 * GIB]
    r, (producer, _) = _run_with_disk([50 * GIB], memory=memory)
    producer.going = True
    r.check_room()
    assert r.stopped_early is None
    memory[0] = workload.memory_floor_bytes(24 * GIB) - 1
    r.check_room()
    assert producer.proc.stdin.getvalue() == b"stop\n"
    assert "memory available" in r.stopped_early
    assert workload.memory_floor_bytes(24 * GIB) == max(workload.MEMORY_AVAILABLE_MIN_BYTES,
                                                        int(24 * GIB * workload.MEMORY_AVAILABLE_MIN_SHARE))


def test_a_cluster_elsewhere_is_not_watched() -> None:
    target = workload.Target(["tcp://127.0.0.1:1"], {}, False)
    called = []
    r = workload.Run(SimpleNamespace(), target, "t", "/nowhere", None,
                     disk_usage=lambda path: called.append(path), memory=lambda: called.append("memory"))
    r.check_room()
    assert called == [] and r.stopped_early is None


def test_the_run_line_says_the_run_was_cut_short() -> None:
    r = {"records_per_s": 10, "mb_per_s": 1.0, "latency_ms": {}, "cpu_us_per_record": {"client": 1.0, "cluster": 1.0},
         "stopped_early": "the disk under /x had 1.0 GB free"}
    assert "stopped early: the disk under /x had 1.0 GB free" in report.run_line("run 1/1 segment", r)


def test_the_table_says_how_many_runs_stopped_early() -> None:
    doc = {"runs": [{"stopped_early": "the disk under /x had 1.0 GB free"}, {}]}
    assert report.early_stop_lines(doc) == ["1 of 2 runs stopped early: the disk under /x had 1.0 GB free"]
    assert report.early_stop_lines({"runs": [{}, {}]}) == []
