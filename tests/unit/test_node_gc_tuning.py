"""A node's process tunes the cyclic collector after start-up (nodes/run.py): start-up objects
frozen, higher thresholds -- and cyclic garbage is still collected, so memory stays bounded."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from nodes import run


def _in_fresh_process(code: str) -> str:
    """Run ``code`` in a fresh interpreter (the collector's settings are process-wide); its stdout."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60,
                         check=True)
    return out.stdout.strip()


def test_tuning_freezes_start_up_objects_and_raises_thresholds():
    out = _in_fresh_process("""
        import gc
        from nodes import run
        assert gc.get_freeze_count() == 0
        run.tune_gc_after_start()
        print(gc.get_freeze_count(), *gc.get_threshold())
    """)
    frozen, *thresholds = map(int, out.split())
    assert frozen > 1000  # the modules' objects, at least
    assert thresholds == [run.GC_GEN0_OBJECTS_MAX, run.GC_GEN1_COLLECTIONS, run.GC_GEN2_COLLECTIONS]


def test_cyclic_garbage_is_still_collected_after_tuning():
    # 2,000,000 two-list cycles, each unreachable at once: without collections they would hold
    # ~4 M objects; the collector must keep the live ones near GC_GEN0_OBJECTS_MAX
    out = _in_fresh_process("""
        import gc
        from nodes import run
        run.tune_gc_after_start()
        peak = 0
        for i in range(2_000_000):
            a = []; b = [a]; a.append(b)
            if i % 10_000 == 0:
                peak = max(peak, len(gc.get_objects()))
        print(peak)
    """)
    assert int(out) < 4 * run.GC_GEN0_OBJECTS_MAX + 100_000


def test_the_node_entry_point_tunes_before_running(monkeypatch):
    calls: list[str] = []

    class FakeNode:
        def __init__(self, config, name):
            calls.append("built")

        def run(self):
            calls.append("run")

    class FakeConfig:
        def node(self, name):
            return type("N", (), {"role": "broker"})()

    monkeypatch.setattr(run, "load_config", lambda path: FakeConfig())
    monkeypatch.setattr(run, "node_class", lambda role: FakeNode)
    monkeypatch.setattr(run, "tune_gc_after_start", lambda: calls.append("tuned"))
    monkeypatch.setattr(run, "setup_logging", lambda level: None)
    assert run.main(["--node", "b1"]) == 0
    assert calls == ["built", "tuned", "run"]
