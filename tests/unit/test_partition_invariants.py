"""Partition invariants hold after every change, or the node stops.

``log_start_offset <= high_watermark <= log_end_offset`` after every method that changes a
partition, and the engine stores appended batches contiguously at the log end. A violation is
a bug: AssertionError, which leaves the node's reactor unanswered and stops the process with
``EXIT_PROGRAMMER_ERROR`` (nodes/run.py) so that the supervisor restarts it from disk. Before,
nothing checked them: a replica opened over a log whose start retention had moved served a high
watermark below its log start, and an engine storing a batch off the log end went unnoticed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import zmq

from engines import batch as B
from engines.api import EngineConfig
from engines.memory import MemoryEngine
from fabric import protocol as P
from fabric import wire
from fabric.config import load_config
from nodes.base import Node
from nodes.broker.partition import Partition
from nodes.run import EXIT_PROGRAMMER_ERROR
from tests.harness import ROOT, make_config
from tests.unit.fakes import make_batch

BATCH_MAX = 1024 * 1024
ME, OTHER = 1, 2
RUN_MS_MAX = 5000  # how long the node may serve before the test gives up on it


def _batch(n: int = 3) -> bytes:
    return make_batch(n, keys=False)


def _engine() -> MemoryEngine:
    return MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX))


class SkippingEngine(MemoryEngine):
    """An engine with a bug: it leaves a hole of one offset before every append."""

    def append_many(self, batches: list, *, crc_checked: bool = False) -> list[int]:  # type: ignore[override]
        self._log_end_offset += 1
        return super().append_many(batches, crc_checked=crc_checked)


def _leader_data(batches: int) -> bytes:
    leader = Partition("t", 0, OTHER, _engine(), None)
    leader.become_leader(1, [ME, OTHER], [OTHER], now_ms=0)
    for _ in range(batches):
        leader.append_as_leader([_batch()], BATCH_MAX)
    return leader.read(0, 1 << 20, upto_offset=leader.log_end_offset)


def test_a_replica_opened_over_a_retained_log_starts_its_high_watermark_at_the_log_start() -> None:
    engine = _engine()
    engine.reset_to(50)  # retention moved the start; no high-watermark checkpoint
    part = Partition("t", 0, ME, engine, None)
    assert part.high_watermark == 50
    part.become_follower(OTHER, 1, [ME, OTHER], [ME, OTHER])
    assert part.log_start_offset <= part.high_watermark <= part.log_end_offset


def test_a_checkpointed_high_watermark_below_the_log_start_is_raised_to_it(tmp_path: Path) -> None:
    (tmp_path / "high-watermark-checkpoint").write_text("7\n")
    engine = _engine()
    engine.reset_to(20)
    assert Partition("t", 0, ME, engine, str(tmp_path)).high_watermark == 20


def test_a_high_watermark_past_the_log_end_is_a_bug_not_carried_on() -> None:
    part = Partition("t", 0, ME, _engine(), None)
    part.become_follower(OTHER, 1, [ME, OTHER], [ME, OTHER])
    part.append_as_follower(_leader_data(2))
    part.high_watermark = part.log_end_offset + 5  # what a broken update would leave
    with pytest.raises(AssertionError, match="high watermark"):
        part.set_high_watermark_from_leader(0)


def test_a_follower_batch_the_engine_stores_off_the_log_end_is_a_bug() -> None:
    part = Partition("t", 0, ME, SkippingEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), None)
    part.become_follower(OTHER, 1, [ME, OTHER], [ME, OTHER])
    with pytest.raises(AssertionError, match="contiguously"):
        part.append_as_follower(_leader_data(1))


def test_a_leader_batch_the_engine_stores_off_the_log_end_is_a_bug() -> None:
    part = Partition("t", 0, ME, SkippingEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), None)
    part.become_leader(1, [ME], [ME], now_ms=0)
    with pytest.raises(AssertionError, match="contiguously"):
        part.append_as_leader([_batch()], BATCH_MAX)


def test_follower_appends_stay_contiguous_through_overlaps_and_gaps() -> None:
    data = _leader_data(4)
    views = [bytes(v) for _, v in B.iter_batches(data)]
    part = Partition("t", 0, ME, _engine(), None)
    part.become_follower(OTHER, 1, [ME, OTHER], [ME, OTHER])
    assert part.append_as_follower(views[0] + views[2]) == 1  # the batch after the gap is not stored
    assert part.append_as_follower(data) == 3  # overlap skipped, the rest continues the log end
    assert part.log_end_offset == 12


# -- an invariant violation in a handler stops the node ----------------------------------------
def test_an_invariant_violation_in_a_handler_leaves_the_node_unanswered(tmp_path: Path) -> None:
    node = Node(load_config(make_config(tmp_path, 1), environ={}), "coordinator")
    part = Partition("t", 0, ME, _engine(), None)
    part.become_follower(OTHER, 1, [ME, OTHER], [ME, OTHER])

    def handler(req: wire.Request) -> dict:
        part.high_watermark = 3  # a bug: past the (empty) log end
        part.set_high_watermark_from_leader(int(req.header.get("hw", 0)))
        return {"hw": part.high_watermark}
    node.server.route(P.LIST_OFFSETS, handler)
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(node.node_config.endpoint)
    try:
        dealer.send_multipart(wire.encode_request(P.LIST_OFFSETS, {"id": 1, "hw": 0}))
        node.reactor.call_later(RUN_MS_MAX, node.reactor.stop)  # a node that carries on stops here
        with pytest.raises(AssertionError, match="high watermark"):
            node.run()
        assert not dealer.poll(100), "an invariant violation was answered"
    finally:
        dealer.close(0)
        node.close()


def test_an_assertion_leaving_a_node_exits_with_the_programmer_error_code(tmp_path: Path) -> None:
    config_path = make_config(tmp_path, 1)
    script = textwrap.dedent(f"""
        import sys
        import nodes.run as run

        class Broken:
            def __init__(self, config, name):
                pass

            def run(self):
                raise AssertionError("log start 5 <= high watermark 3 <= log end 9 does not hold")

        run.node_class = lambda role: Broken
        sys.exit(run.main(["-c", {str(config_path)!r}, "--node", "coordinator"]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(ROOT),
                          timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == EXIT_PROGRAMMER_ERROR, done.stderr
    assert "programmer error" in done.stderr and "AssertionError" in done.stderr
