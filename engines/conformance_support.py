"""What the engine conformance suite (``engines/conformance.py``) is built from: the batches it
writes and reads back, and the kill -9 writer process its crash tests start.

``make_batch``, ``batch_index`` and ``read_all`` are also what other engine tests use to write
batches whose payload says which they are and to read a log back whole. The writer process runs
``python -c "from engines.conformance_support import crash_writer_main; crash_writer_main()"``
with the engine named by a spec ("module:Class"), is killed while it appends, and reports each
flush on stdout. Only stdlib + engines. Not thread-safe.
"""

from __future__ import annotations

import importlib
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import Any

from engines.api import Engine, EngineConfig
from engines.batch import HEADER_BYTES, BatchHeader, build, iter_batches

CRASH_DEADLINE_S = 20.0  # the writer must report this many flushes before this deadline
CRASH_FLUSHES_BEFORE_KILL = 5
WRITER_BATCHES_MAX = 200_000
WRITER_SECONDS_MAX = 60.0


def make_batch(index: int, record_count: int = 3, payload_bytes: int = 100,
               timestamp_ms: int | None = None) -> bytes:
    """A valid batch whose payload encodes ``index`` (so tests can check what they read)."""
    ts = index * 1000 if timestamp_ms is None else timestamp_ms
    payload = struct.pack(">q", index) * max(payload_bytes // 8, 1)
    return build(payload, record_count, ts, ts + 10, base_offset=123456)


def batch_index(header_view: memoryview) -> int:
    return struct.unpack_from(">q", header_view, HEADER_BYTES)[0]  # the payload make_batch wrote


def read_all(engine: Engine, start: int | None = None, max_bytes: int = 64 * 1024) -> list[tuple[BatchHeader, bytes]]:
    """Every batch from ``start`` (default log_start_offset) to the end, CRC-checked, via
    sequential reads. Asserts offsets are contiguous."""
    offset = engine.log_start_offset if start is None else start
    out = []
    for _ in range(1_000_000):
        if offset >= engine.log_end_offset:
            break
        data = engine.read(offset, max_bytes)
        assert data, f"empty read at {offset} < log_end_offset {engine.log_end_offset}"
        for header, view in iter_batches(data, check_crc=True):
            assert header.base_offset <= offset < header.next_offset or header.base_offset == offset
            out.append((header, bytes(view)))
            offset = header.next_offset
    assert offset == engine.log_end_offset
    return out



class raises:
    """Minimal stdlib stand-in for pytest.raises."""

    def __init__(self, error: type[BaseException]) -> None:
        self.error = error

    def __enter__(self) -> "raises":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            raise AssertionError(f"{self.error.__name__} not raised")
        return issubclass(exc_type, self.error)


# -- the kill -9 writer --------------------------------------------------------------------------

def run_and_kill_writer(spec: str, directory: str, config: EngineConfig, main: str = "crash_writer_main",
                        extra_args: tuple[str, ...] = ()) -> tuple[int, str]:
    """Start a writer process (``main``: a function of this module), wait (with a deadline)
    for CRASH_FLUSHES_BEFORE_KILL flush reports, SIGKILL it while it is appending, and return
    the highest flushed log end."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from engines.conformance_support import {main}; {main}()",
         spec, directory, config.to_json(), *extra_args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    lines: queue.Queue[str | None] = queue.Queue(maxsize=100_000)

    def pump() -> None:
        for line in proc.stdout:  # ends when the process dies
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    flushed, reports = -1, 0
    deadline = time.monotonic() + CRASH_DEADLINE_S
    try:
        while reports < CRASH_FLUSHES_BEFORE_KILL:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            assert line is not None, f"writer exited early: {proc.stderr.read()}"
            if line.startswith("flushed "):
                flushed, reports = int(line.split()[1]), reports + 1
    except queue.Empty:
        raise AssertionError("writer reported no flush before the deadline") from None
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    # lines written before the kill may still be in the pipe: the last flush report counts
    while True:
        try:
            line = lines.get(timeout=5)
        except queue.Empty:
            break
        if line is None:
            break
        if line.startswith("flushed "):
            flushed = max(flushed, int(line.split()[1]))
    return flushed, proc.stderr.read()


def _open_writer_engine() -> Engine:
    """The engine named by argv: spec ("module:Class"), directory, EngineConfig as JSON."""
    spec, directory, config_json = sys.argv[1:4]
    module_name, _, attr = spec.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    return cls(directory, EngineConfig.from_json(config_json))


def crash_writer_main() -> None:
    """argv: engine spec ("module:Class"), directory, EngineConfig as JSON. Appends batches
    (payload = batch index) forever-but-bounded, flushes every 20 batches and prints
    "flushed <log_end_offset>" after each flush."""
    _write_until_killed(_open_writer_engine())


def crash_reset_writer_main() -> None:
    """argv as crash_writer_main, then the reset offset. Appends 30 batches without flushing,
    resets the log to that offset (durable on return: reported as a flush), then writes as
    crash_writer_main does."""
    engine = _open_writer_engine()
    for i in range(30):
        engine.append(make_batch(10_000 + i, payload_bytes=8000))
    engine.reset_to(int(sys.argv[4]))
    print(f"flushed {engine.log_end_offset}", flush=True)
    _write_until_killed(engine)


def _write_until_killed(engine: Engine) -> None:
    deadline = time.monotonic() + WRITER_SECONDS_MAX
    for i in range(WRITER_BATCHES_MAX):
        if time.monotonic() > deadline:
            break
        engine.append(make_batch(i, payload_bytes=8000))
        if i % 20 == 19:
            engine.flush()
            print(f"flushed {engine.log_end_offset}", flush=True)
    engine.close()
