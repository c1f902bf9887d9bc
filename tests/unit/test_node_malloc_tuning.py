"""A node process keeps freed memory for reuse (nodes/run.py's ``tune_malloc``): a large buffer
comes from the heap rather than a fresh mmap, and once freed its memory stays in the heap for
the next one instead of going back to the kernel (to come back as zero-filled pages, a page
fault per 4 KiB, on every batch copy). Checked in fresh processes through glibc's
``mallinfo2``; the control shows the defaults doing the opposite."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nodes.local_cluster import SOURCE_ROOT

PROBE = """
import ctypes, sys
libc = ctypes.CDLL(None)
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    from nodes.run import tune_malloc
    if not tune_malloc():
        print("no-mallopt")
        sys.exit(0)
before = libc.mallinfo2()
buf = bytearray(8 * 1024 * 1024)
held = libc.mallinfo2()
del buf
after = libc.mallinfo2()
print(held.hblks - before.hblks, after.arena - before.arena)
"""
BUFFER_BYTES = 8 * 1024 * 1024

ARENA_PROBE = """
import ctypes, sys, threading
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
if sys.argv[1] == "limited":
    from nodes.run import limit_malloc_arenas
    if not limit_malloc_arenas():
        print("no-mallopt")
        sys.exit(0)
allocated, done = threading.Barrier(int(sys.argv[2]) + 1), threading.Event()
def allocate():
    libc.malloc(64 * 1024)  # the thread's first malloc: glibc picks its arena
    allocated.wait()
    done.wait()
threads = [threading.Thread(target=allocate) for _ in range(int(sys.argv[2]))]
for t in threads:
    t.start()
allocated.wait()
libc.malloc_stats()  # to stderr: an "Arena N:" section per arena
done.set()
for t in threads:
    t.join()
"""
THREADS = 8


def _probe(mode: str) -> tuple[int, int]:
    """(mmapped blocks added while an 8 MiB buffer is held, heap bytes kept after it is freed).
    Skips where the tuned probe finds no glibc mallopt."""
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=str(SOURCE_ROOT), capture_output=True,
                         text=True, timeout=60, check=True)
    if out.stdout.strip() == "no-mallopt":
        pytest.skip("no glibc mallopt here")
    mmapped, kept = out.stdout.split()
    return int(mmapped), int(kept)


def test_a_freed_large_buffer_stays_in_the_heap_for_the_next_one() -> None:
    # tuned only in the probe's process: this test process keeps glibc's defaults for the tests
    # after it (test_node_malloc_tuning_isolation.py::test_the_malloc_tuning_test_leaves_the_test_process_at_glibc_defaults)
    mmapped, kept = _probe("tuned")
    assert mmapped == 0 and kept >= BUFFER_BYTES // 2  # (part of it may have been free heap already)
    mmapped, kept = _probe("default")  # the control: glibc's defaults
    assert mmapped == 1 and kept < BUFFER_BYTES // 2


def _arenas(mode: str) -> int:
    """How many malloc arenas a fresh process has once THREADS threads have each allocated."""
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", ARENA_PROBE, mode, str(THREADS)], cwd=str(SOURCE_ROOT),
                         capture_output=True, text=True, timeout=60, check=True, env=env)
    if out.stdout.strip() == "no-mallopt":
        pytest.skip("no glibc mallopt here")
    return sum(line.startswith("Arena ") for line in out.stderr.splitlines())


def test_a_limited_process_shares_two_malloc_arenas_among_its_threads() -> None:
    from nodes.run import MALLOC_ARENAS_MAX
    assert _arenas("limited") == MALLOC_ARENAS_MAX
    assert _arenas("default") > MALLOC_ARENAS_MAX  # the control: glibc gives each thread its own


def test_an_operators_malloc_arena_max_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from nodes import run
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")  # read by glibc at start; not overridden
    monkeypatch.setattr(run, "_mallopt", lambda: pytest.fail("mallopt called"))
    assert run.limit_malloc_arenas()


@pytest.mark.parametrize("role, tuned, limited", [("broker", True, False), ("gateway", False, True),
                                                  ("coordinator", False, False), ("producer", False, False),
                                                  ("consumer", False, True), ("monitor", False, False)])
def test_the_node_entry_point_tunes_malloc_before_building_the_node(monkeypatch: pytest.MonkeyPatch, role: str,
                                                                    tuned: bool, limited: bool) -> None:
    """The thresholds for brokers only (nodes/run.py's MALLOC_TUNED_ROLES): the tuning is for
    their data path; the other roles (a gateway runs the client library on many threads, one
    malloc arena each, each of which would keep up to the trim threshold of freed memory) keep
    glibc's defaults. The arenas limited for the roles with a thread per client or request
    (MALLOC_ARENA_LIMITED_ROLES)."""
    from nodes import run
    calls: list[str] = []

    class FakeNode:
        def __init__(self, config: object, name: str) -> None:
            calls.append("built")

        def run(self) -> None:
            calls.append("run")

    class FakeConfig:
        def node(self, name: str) -> object:
            return type("N", (), {"role": role})()

    monkeypatch.setattr(run, "load_config", lambda path: FakeConfig())
    monkeypatch.setattr(run, "node_class", lambda role: FakeNode)
    monkeypatch.setattr(run, "tune_gc_after_start", lambda: None)
    monkeypatch.setattr(run, "tune_malloc", lambda: calls.append("malloc") or True)
    monkeypatch.setattr(run, "limit_malloc_arenas", lambda: calls.append("arenas") or True)
    monkeypatch.setattr(run, "setup_logging", lambda level: None)
    assert run.main(["--node", "b1"]) == 0
    assert calls == (["malloc"] if tuned else []) + (["arenas"] if limited else []) + ["built", "run"]
