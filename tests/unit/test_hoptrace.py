"""fabric.hoptrace: marks are kept only when tracing is on, written per process, read back in
order; bench.rtt.hop_table lines up each request's points across processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import rtt
from fabric import hoptrace


@pytest.fixture
def traced(tmp_path: Path):  # noqa: ANN201
    hoptrace.enable(tmp_path)
    yield tmp_path
    hoptrace.disable()


def test_marks_are_kept_only_when_tracing_is_on(tmp_path: Path) -> None:
    hoptrace.mark("before")  # off: nothing held, nothing written
    hoptrace.enable(tmp_path)
    hoptrace.mark("a")
    hoptrace.mark("b")
    hoptrace.disable()
    hoptrace.mark("after")
    hoptrace.flush()
    marks = hoptrace.read(tmp_path)
    assert list(marks) == [os.getpid()]
    assert [p for _, p in marks[os.getpid()]] == ["a", "b"]
    assert marks[os.getpid()][0][0] <= marks[os.getpid()][1][0]


def test_many_marks_are_written_out_as_they_come(traced: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hoptrace, "FLUSH_MARKS", 10)
    for i in range(25):
        hoptrace.mark(f"p{i}")
    assert len(hoptrace.read(traced)[os.getpid()]) == 20  # two flushes; five still held
    hoptrace.flush()
    assert [p for _, p in hoptrace.read(traced)[os.getpid()]] == [f"p{i}" for i in range(25)]


def test_a_child_process_traces_from_the_environment_and_writes_at_exit(tmp_path: Path) -> None:
    code = "from fabric import hoptrace; hoptrace.mark('child.point')"
    env = dict(os.environ, **{hoptrace.ENV: str(tmp_path)})
    child = subprocess.run([sys.executable, "-c", code], env=env, cwd=Path(__file__).parents[2], check=True)
    assert child.returncode == 0
    ((pid, marks),) = hoptrace.read(tmp_path).items()
    assert pid != os.getpid() and [p for _, p in marks] == ["child.point"]


CLIENT, LEADER, F1, F2 = 10, 20, 30, 40
ROLES = {CLIENT: "client", LEADER: "leader", F1: "follower", F2: "follower"}


def _request(t0: int, followers: bool = True, skip: str | None = None) -> dict[int, list[tuple[int, str]]]:
    """One produce's marks, 1 µs (1000 ns) apart, as the processes would record them."""
    out: dict[int, list] = {pid: [] for pid in ROLES}
    t = t0
    for process, point, _, _ in rtt.HOPS:
        if process == "follower" and not followers:
            continue
        if point == "ack.received" and not followers:
            continue
        if point == skip:
            t += 1000
            continue
        pid = {"client": CLIENT, "leader": LEADER, "follower": F1}[process]
        out[pid].append((t, point))
        t += 1000
    return out


def _merge(*requests: dict) -> dict:
    out: dict[int, list] = {}
    for r in requests:
        for pid, ms in r.items():
            out.setdefault(pid, []).extend(ms)
    return out


def test_each_request_is_lined_up_step_by_step() -> None:
    marks = _merge(*(_request(i * 1_000_000) for i in range(10)))
    # a heartbeat pass of the leader between requests, and a stray reactor chunk in one: ignored
    marks[LEADER] += [(500_000, "port.chunk"), (3_000_500, "port.chunk")]
    table = rtt.hop_table(marks, ROLES)
    assert table["requests"] == 10
    assert [s["point"] for s in table["steps"]] == [h[1] for h in rtt.HOPS[1:]]
    # the second ack.received is the next one after the first, not the same mark
    assert [s["p99"] for s in table["steps"]] == [1.0] * (len(rtt.HOPS) - 1)


def test_points_a_run_never_passes_drop_out() -> None:
    table = rtt.hop_table(_merge(*(_request(i * 1_000_000, followers=False) for i in range(5))), ROLES)
    points = [s["point"] for s in table["steps"]]
    assert "replica.batch" not in points and "ack.received" not in points
    assert "produce.publish" in points and points[-1] == "app.acked"
    assert table["lined_up"] == 5


def test_a_request_missing_a_point_is_left_out_of_the_figures() -> None:
    requests = [_request(i * 1_000_000) for i in range(19)] + [_request(19_000_000, skip="replica.ack")]
    table = rtt.hop_table(_merge(*requests), ROLES)
    assert table["requests"] == 20 and table["lined_up"] == 19
    assert "replica.ack" in [s["point"] for s in table["steps"]]
    steps = len(rtt.HOPS) - 1
    assert table["work_us"]["p50"] + table["hop_us"]["p50"] == pytest.approx(steps * 1.0)


def test_hops_needs_loom() -> None:
    with pytest.raises(SystemExit) as e:
        rtt.main(["--hops"])
    assert e.value.code == 2


def test_a_trace_that_cannot_be_written_stops_tracing_not_the_process(tmp_path: Path) -> None:
    hoptrace.enable(tmp_path / "gone")  # no such directory
    hoptrace.mark("a")
    hoptrace.flush()  # no OSError out of it: a node marking on its hot path goes on
    hoptrace.mark("b")
    hoptrace.flush()
    assert not (tmp_path / "gone").exists()
    hoptrace.disable()
