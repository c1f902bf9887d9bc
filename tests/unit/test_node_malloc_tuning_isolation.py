"""nodes/run.py's malloc tuning stays in node processes: its own test does not leave the test
process on the tuned allocator."""

from __future__ import annotations

import pytest

MALLOC_PROBE = """
import ctypes, sys
import pytest
rc = pytest.main(["-q", "-p", "no:cacheprovider", sys.argv[1]])
libc = ctypes.CDLL(None)
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblks
buf = bytearray(24 * 1024 * 1024)
print(int(rc), libc.mallinfo2().hblks - before)
"""


def test_the_malloc_tuning_test_leaves_the_test_process_at_glibc_defaults() -> None:
    """nodes/run.py's tune_malloc is for node processes. Its own test must not apply it to the
    test process, where every later test would run on the tuned allocator (a test that bounds
    this process's RSS, like test_zmtp_request_budget.py, would measure with freed memory kept
    in the heap, and differently when run alone). Checked in a fresh process: after that test,
    a 24 MiB buffer is still an mmap of its own, as at glibc's defaults."""
    import ctypes
    import subprocess
    import sys

    from nodes.local_cluster import SOURCE_ROOT
    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("no glibc mallinfo2 here")
    target = "tests/unit/test_node_malloc_tuning.py::test_a_freed_large_buffer_stays_in_the_heap_for_the_next_one"
    out = subprocess.run([sys.executable, "-c", MALLOC_PROBE, target], cwd=str(SOURCE_ROOT), capture_output=True,
                         text=True, timeout=120, check=True)
    rc, mmapped = out.stdout.split()[-2:]
    assert rc == "0", out.stdout
    assert mmapped == "1", "the test process's malloc was tuned: a 24 MiB buffer came from the heap"
