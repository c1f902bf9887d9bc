"""One producer or consumer of ``loom bench``, run as its own process:

    python -m bench.worker '<spec as JSON>'

It connects, prints ``{"ready": …}``, waits for ``go`` on stdin, runs, prints a
``{"sample": …}`` line about every ``SAMPLE_INTERVAL_S`` and a ``{"done": …}`` line at the
end (``{"error": …}`` and exit status 1 on failure). A consumer that follows producers
(``mode: follow``) reads until ``stop`` arrives on stdin and then until the offsets the
cluster had at that moment. A producer told ``stop`` ends its send loop there and flushes (the
parent's guard of the disk and memory: ``bench.workload.Run.check_room``). Every record goes through the public client API
(``fabric.client.Producer`` / ``Consumer``).

Latency (produce-ack): the time from ``send()`` to the record's delivery callback (which runs
on the producer's I/O thread), for every record at a fixed ``--rate`` (open loop) and for one
record in ``chunk`` otherwise. End-to-end: those records carry their send time (wall clock,
ns) after a marker, and the consumer takes the time its ``poll()`` returned them.

Not thread-safe apart from ``AckQueue.callback`` (called on the producer's I/O thread).
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections import deque
from functools import partial
from typing import Any, Callable

from bench.options import RECORDS_MAX
from bench.stats import LatencyHistogram

SAMPLE_INTERVAL_S = 0.5
CHUNK_SEND = 200             # closed loop: one latency sample every CHUNK_SEND records
CHUNK_SEND_MANY = 1000       # records per send_many() call (plus one sampled send())
PHASE_S_MAX = 3600.0         # any worker's running phase
GO_WAIT_S_MAX = PHASE_S_MAX + 600.0  # a worker waits this long for "go" (a consumer: the whole
#                                      produce phase before it), then gives up
FLUSH_S_MAX = 300.0
CALLBACKS_WAIT_S_MAX = 10.0  # after flush(): the last delivery callbacks to run
STOP_DRAIN_S_MAX = 60.0      # a following consumer: after "stop", reading up to the end offsets
POLL_MS = 100
DRIVE_INTERVAL_S = 0.05     # a group member waiting for "go" keeps its membership this often (maintain)
POLL_RECORDS_MAX = 50_000
PACED_TIMED_PER_S_MAX = 5000  # open loop: records timed per second at most (1 in k above that)
PACE_SLEEP_S_MIN = 0.0002     # open loop: sleep only when this far ahead (a sleep costs ~60 µs)
STAMP = b"LMTS"              # marks a record whose next 8 bytes are its send time (ns, little endian)
STAMP_BYTES = 12


def payload(size: int) -> bytes:
    """A record value of ``size`` bytes: hex text (compresses about 2x, as real data might)."""
    return os.urandom(size // 2 + 1).hex().encode()[:size]


def stamped(value: bytes) -> bytes:
    return STAMP + time.time_ns().to_bytes(8, "little") + value[STAMP_BYTES:]


class AckQueue:
    """Delivery callbacks -> the worker loop. ``callback`` runs on the producer's I/O thread;
    deque append/popleft are thread-safe, so neither side takes a lock."""

    def __init__(self) -> None:
        self.done: deque[tuple[float, float, bool]] = deque()

    def callback(self, t_send: float) -> Callable[[Any, Exception | None], None]:
        return partial(self._done, t_send)

    def _done(self, t_send: float, _md: Any, err: Exception | None) -> None:
        self.done.append((t_send, time.perf_counter(), err is None))


class Sampler:
    """Counters and latency histograms; one sample line per interval. Owned by the worker loop."""

    def __init__(self, emit: Callable[[dict], None], stopping: threading.Event | None = None) -> None:
        self.emit = emit
        self.stopping = stopping or threading.Event()  # set: a producer's loop ends (the run is cut short)
        self.sent = self.acked = self.consumed = self.errors = 0
        self.acks_taken = 0  # delivery callbacks seen (one per sampled record)
        self.lat, self.e2e = LatencyHistogram(), LatencyHistogram()          # interval
        self.lat_all, self.e2e_all = LatencyHistogram(), LatencyHistogram()  # whole run
        self.send_delay = LatencyHistogram()  # open loop, whole run: each timed send's lateness
        self.last_s = time.perf_counter()
        self.next_s = self.last_s + SAMPLE_INTERVAL_S

    def take_acks(self, acks: AckQueue, records_per_ack: int) -> int:
        taken = 0
        for _ in range(len(acks.done)):  # bounded: what is there now
            t_send, t_ack, ok = acks.done.popleft()
            if ok:
                self.lat.record_us((t_ack - t_send) * 1e6)
                self.acked += records_per_ack
            else:
                self.errors += records_per_ack
            taken += 1
        self.acks_taken += taken
        return taken

    def e2e_record(self, latency_us: float) -> None:
        self.e2e.record_us(latency_us)

    def maybe_emit(self, now: float, force: bool = False) -> None:
        if now < self.next_s and not force:
            return
        self.next_s = now + SAMPLE_INTERVAL_S
        dt, self.last_s = now - self.last_s, now  # what the counters' growth is spread over
        self.emit({"sample": {"t": time.time(), "dt": dt, "sent": self.sent, "acked": self.acked, "consumed": self.consumed,
                              "lat": self.lat.to_json(), "e2e": self.e2e.to_json()}})
        self.lat_all.merge(self.lat)
        self.e2e_all.merge(self.e2e)
        self.lat, self.e2e = LatencyHistogram(), LatencyHistogram()


class Commands:
    """Lines from stdin ("go", "stop") on a reader thread, so the loops never block on them.
    ``stopping`` is set as soon as "stop" arrives: a producer's send loop looks at it (no queue
    to drain) and ends early."""

    def __init__(self, stream: Any) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.stopping = threading.Event()
        threading.Thread(target=self._read, args=(stream,), daemon=True, name="bench-commands").start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            word = line.strip()
            if word == "stop":
                self.stopping.set()
            self.lines.put(word)
        self.lines.put("eof")

    def wait(self, word: str, timeout_s: float, drive: Callable[[], None] | None = None) -> None:
        """The next line, which must be ``word``; ``drive`` is called every DRIVE_INTERVAL_S
        meanwhile (a group member's ``maintain``: it takes part in the rebalance a later member's
        join starts, which otherwise waited for it until the go, and then some)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, min(DRIVE_INTERVAL_S, deadline - time.monotonic()))
                                      if drive is not None else timeout_s)
                break
            except queue.Empty:
                if drive is None or time.monotonic() >= deadline:
                    raise
                drive()
        if line != word:
            raise RuntimeError(f"expected {word!r} on stdin, got {line!r}")

    def has(self, word: str) -> bool:
        try:
            line = self.lines.get_nowait()
        except queue.Empty:
            return False
        return line == word or line == "eof"


def run_producer(spec: dict, commands: Commands, emit: Callable[[dict], None]) -> dict:
    from fabric.client import Producer
    topic, value, e2e = spec["topic"], payload(spec["record_size"]), spec["e2e"]
    in_flight = {} if spec.get("max_in_flight") is None else {"max_in_flight": spec["max_in_flight"]}
    p = Producer(spec["bootstrap"], acks=spec["acks"], linger_ms=spec["linger_ms"],
                 batch_records_max=spec["batch_size"], compression=spec["compression"], **in_flight)
    try:
        p.metadata.partition_count(topic, 30_000)  # metadata before the clock starts
        emit({"ready": {"role": "producer", "index": spec["index"]}})
        commands.wait("go", GO_WAIT_S_MAX)
        acks, s = AckQueue(), Sampler(emit, commands.stopping)
        cpu0, wall0, t0 = time.process_time(), time.time(), time.perf_counter()
        if spec["rate"]:
            per_ack = timed_every(spec["rate"])
            _paced(p, spec, value, e2e, acks, s, t0, per_ack)
        else:
            per_ack = CHUNK_SEND_MANY if spec["api"] == "send_many" else CHUNK_SEND
            _closed_loop(p, spec, value, e2e, acks, s, t0, per_ack)
        _flush_sampling(p, acks, s, per_ack)
        seconds = time.perf_counter() - t0
        deadline = time.perf_counter() + CALLBACKS_WAIT_S_MAX
        expected = -(-s.sent // per_ack)  # one sampled record per chunk, the last chunk too
        s.take_acks(acks, per_ack)
        while s.acks_taken < expected and time.perf_counter() < deadline:
            time.sleep(0.005)  # the I/O thread runs the last callbacks just after the flush wakes us
            s.take_acks(acks, per_ack)
        s.maybe_emit(time.perf_counter(), force=True)
        return {"role": "producer", "records": s.sent, "errors": s.errors, "seconds": seconds,
                "cpu_s": time.process_time() - cpu0, "t_start": wall0, "t_end": wall0 + seconds,
                "lat": s.lat_all.to_json(), "send_delay": s.send_delay.to_json(), "api": spec["api"]}
    finally:
        p.close(timeout=30)


def _flush_sampling(p: Any, acks: AckQueue, s: Sampler, per_ack: int) -> None:
    """``flush()`` on a helper thread while this one keeps taking acknowledgements and sampling
    (a closed loop's buffer takes seconds to drain: the timeline shows it). Re-raises what
    ``flush`` raised."""
    failure: list[BaseException] = []

    def flush() -> None:
        try:
            p.flush(timeout=FLUSH_S_MAX)
        except BaseException as e:  # handed to the worker's thread below
            failure.append(e)
    flusher = threading.Thread(target=flush, name="bench-flush", daemon=True)
    flusher.start()
    deadline = time.perf_counter() + FLUSH_S_MAX + CALLBACKS_WAIT_S_MAX
    while flusher.is_alive() and time.perf_counter() < deadline:
        flusher.join(SAMPLE_INTERVAL_S / 5)
        s.take_acks(acks, per_ack)
        s.maybe_emit(time.perf_counter())
    if failure:
        raise failure[0]
    if flusher.is_alive():
        raise RuntimeError(f"flush did not return within {FLUSH_S_MAX:.0f} s")


def _closed_loop(p: Any, spec: dict, value: bytes, e2e: bool, acks: AckQueue, s: Sampler, t0: float, chunk: int) -> None:
    topic, send = spec["topic"], p.send
    target = spec["records"] if spec["records"] is not None else RECORDS_MAX
    deadline = t0 + (spec["duration"] if spec["duration"] is not None else PHASE_S_MAX)
    many = p.send_many if spec["api"] == "send_many" else None
    values = [value] * (chunk - 1)
    stopping = s.stopping
    while s.sent < target and not stopping.is_set():
        n = min(chunk, target - s.sent)
        if many is not None:
            if n > 1:
                many(topic, values if n == chunk else values[:n - 1])
        else:
            for _ in range(n - 1):
                send(topic, value)
        t = time.perf_counter()
        send(topic, stamped(value) if e2e else value, on_delivery=acks.callback(t))
        s.sent += n
        now = time.perf_counter()
        if now >= s.next_s:
            s.take_acks(acks, chunk)
            s.maybe_emit(now)
        if now >= deadline:
            break


def timed_every(rate: int) -> int:
    """Open loop: time (and stamp) one record in this many, so that at most
    PACED_TIMED_PER_S_MAX callbacks a second load the producer's I/O thread."""
    return max(1, -(-rate // PACED_TIMED_PER_S_MAX))


def _paced(p: Any, spec: dict, value: bytes, e2e: bool, acks: AckQueue, s: Sampler, t0: float, every: int) -> None:
    """Open loop: record i is due at t0 + i / rate whether or not earlier ones were acknowledged
    (a late loop sends at once to catch up, as the OpenMessaging Benchmark does). Every record
    is timed up to PACED_TIMED_PER_S_MAX/s, one in ``every`` above."""
    topic, send, interval_s = spec["topic"], p.send, 1.0 / spec["rate"]
    target = spec["records"] if spec["records"] is not None else RECORDS_MAX
    deadline = t0 + (spec["duration"] if spec["duration"] is not None else PHASE_S_MAX)
    stopping = s.stopping
    while s.sent < target and not stopping.is_set():
        due = t0 + s.sent * interval_s
        ahead = due - time.perf_counter()
        if ahead >= PACE_SLEEP_S_MIN:
            time.sleep(ahead)  # pacing the offered load, not synchronisation
        t = time.perf_counter()
        if s.sent % every:
            send(topic, value)
        else:
            # the ack latency counts from the send, as the peers' benchmarks do; how late the
            # send went out is the send delay (a loop that falls behind shows there)
            s.send_delay.record_us(max(0.0, t - due) * 1e6)
            send(topic, stamped(value) if e2e else value, on_delivery=acks.callback(t))
        s.sent += 1
        if t >= s.next_s:
            s.take_acks(acks, every)
            s.maybe_emit(t)
        if t >= deadline:
            break


def _open_consumer(spec: dict, admin: Any) -> tuple[Any, dict[int, int] | None, int]:
    """A consumer positioned at the end of its partitions (assign mode), or a member of
    ``spec["group"]`` that has joined (group mode: it reads from the group's committed offsets,
    i.e. from the beginning for a new group). Returns it, the start offsets (None in group mode)
    and the records a joining member already polled (counted as consumed)."""
    from fabric.client import LATEST, Consumer, GroupConsumer
    topic, mine = spec["topic"], spec["partitions"]
    if not spec.get("group"):
        c = Consumer(spec["bootstrap"], auto_offset_reset="earliest")
        start = admin.list_offsets(topic, LATEST)  # read only what this run produces
        c.assign([(topic, p) for p in mine])
        for p in mine:
            c.seek((topic, p), start[p])
        c.partitions_for(topic)
        return c, start, 0
    c = GroupConsumer(spec["bootstrap"], group_id=spec["group"], auto_offset_reset="earliest",
                      enable_auto_commit=False)
    c.subscribe([topic])
    early, deadline = 0, time.monotonic() + GO_WAIT_S_MAX
    while not c.assignment() and time.monotonic() < deadline:
        early += len(c.poll(timeout_ms=POLL_MS, max_records=POLL_RECORDS_MAX))  # the join happens in poll
    if not c.assignment():
        raise RuntimeError(f"no partitions assigned in group {spec['group']} within {GO_WAIT_S_MAX:.0f} s")
    return c, None, early


def run_consumer(spec: dict, commands: Commands, emit: Callable[[dict], None]) -> dict:
    """Assign mode stops by itself: drain at the end offsets it finds at "go", follow at those it
    finds at "stop". Group mode stops at "stop" (the parent counts the whole group's records)
    and commits asynchronously after every poll that returned records."""
    from fabric.client import LATEST, Admin
    topic, mine, group = spec["topic"], spec["partitions"], spec.get("group")
    batch_api = spec.get("api") == "send_many"  # consumers then use poll_batch
    with Admin(spec["bootstrap"]) as admin:
        c, start, early = _open_consumer(spec, admin)
        try:
            emit({"ready": {"role": "consumer", "index": spec["index"]}})
            commands.wait("go", GO_WAIT_S_MAX, c.maintain if group else None)
            s = Sampler(emit)
            s.consumed = early
            cpu0, wall0, t0 = time.process_time(), time.time(), time.perf_counter()
            target = None
            if spec["mode"] == "drain" and not group:
                end = admin.list_offsets(topic, LATEST)
                target = sum(end[p] - start[p] for p in mine)
            deadline = t_stop = t0 + PHASE_S_MAX
            t_last = t0
            while (target is None or s.consumed < target) and time.perf_counter() < min(deadline, t_stop):
                if target is None and commands.has("stop"):
                    if group:
                        c.commit()  # the last asynchronous commit may still be in flight
                        break
                    end = admin.list_offsets(topic, LATEST)
                    target = sum(end[p] - start[p] for p in mine)
                    t_stop = time.perf_counter() + STOP_DRAIN_S_MAX
                if batch_api:  # the batch call: per-partition views, every value decoded
                    values = []
                    for view in c.poll_batch(timeout_ms=POLL_MS, max_records=POLL_RECORDS_MAX):
                        values += view.values  # a list per view: no Python per record here
                else:
                    values = [r.value for r in c.poll(timeout_ms=POLL_MS, max_records=POLL_RECORDS_MAX)]
                if values:
                    t_last = time.perf_counter()
                    s.consumed += len(values)
                    if group:
                        c.commit(asynchronous=True)
                    if spec["e2e"]:
                        _e2e(values, s)
                s.maybe_emit(time.perf_counter())
            following = spec["mode"] == "follow" or group
            seconds = (t_last if following else time.perf_counter()) - t0
            s.maybe_emit(time.perf_counter(), force=True)
            return {"role": "consumer", "records": s.consumed, "expected": target, "seconds": seconds,
                    "cpu_s": time.process_time() - cpu0, "t_start": wall0, "t_end": wall0 + seconds,
                    "e2e": s.e2e_all.to_json()}
        finally:
            c.close()


def _e2e(values: list, s: Sampler) -> None:
    now_ns = time.time_ns()
    for v in values:
        if v[:4] == STAMP:
            s.e2e_record((now_ns - int.from_bytes(v[4:STAMP_BYTES], "little")) / 1000)


def _emit(line: dict) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    commands = Commands(sys.stdin)
    try:
        run = run_producer if spec["role"] == "producer" else run_consumer
        _emit({"done": run(spec, commands, _emit)})
        return 0
    except Exception as e:  # reported to the parent, which stops the run with this message
        _emit({"error": f"{spec['role']} {spec['index']}: {type(e).__name__}: {e}"})
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
