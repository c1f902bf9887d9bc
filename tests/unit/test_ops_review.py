"""Operator surface and fabric: findings of the operations review, each pinned by a test.

- the reactor's timer table must not fill up with cancelled timers (every RPC request arms a
  timeout timer that its reply cancels);
- config files that are not text, and YAML errors, are one line naming the file;
- the supervisor does not restart a node that exits with a configuration error, says why a
  child died, and refuses a second supervisor of the same data dir (lock, not just a pid file);
- ``loom down`` never signals an unrelated process that merely mentions "loom";
- a node whose port is taken fails with one line and its own exit code;
- the wheel contains every subpackage.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import zmq

from fabric import protocol as P
from fabric.config import ConfigError, load_config, parse_config
from fabric.errors import FabricError
from fabric.reactor import Reactor
from fabric.rpc import RpcClient, RpcServer
from nodes import launcher
from nodes.run import EXIT_BIND_ERROR
from tests.harness import ROOT, make_config


class FakeClock:
    def __init__(self) -> None:
        self.t_ms = 0

    def now_ms(self) -> int:
        return self.t_ms

    def wall_ms(self) -> int:
        return self.t_ms


# -- reactor timers -----------------------------------------------------------------------------
def test_cancelled_timers_do_not_fill_the_timer_table() -> None:
    reactor = Reactor(FakeClock())  # type: ignore[arg-type]
    fired: list[int] = []
    keep = reactor.call_later(60_000, lambda: fired.append(1))
    for _ in range(3 * P.TIMERS_MAX):  # a request timeout armed, then cancelled by its reply
        reactor.call_later(30_000, lambda: None).cancel()
    assert len(reactor._timers) <= P.TIMERS_MAX // 2, "cancelled timers pile up in the heap"
    reactor.clock.t_ms = 60_000  # type: ignore[attr-defined]
    reactor.run_once(0)
    assert fired == [1] and not keep.cancelled


def test_cancelling_a_fired_or_cancelled_timer_twice_keeps_the_count_right() -> None:
    reactor = Reactor(FakeClock())  # type: ignore[arg-type]
    t = reactor.call_later(0, lambda: None)
    reactor.run_once(0)
    t.cancel()  # already fired: nothing in the heap to account for
    u = reactor.call_later(10, lambda: None)
    u.cancel()
    u.cancel()
    periodic = reactor.call_every(5, lambda: None)
    reactor.clock.t_ms = 20  # type: ignore[attr-defined]
    reactor.run_once(0)
    assert [e[2] for e in reactor._timers] == [periodic]
    assert reactor.timers_live == 1


def test_many_rpc_round_trips_do_not_exhaust_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Request timeouts much longer than round trips: the server's replies cancel them. A
    heartbeat timer (due sooner than any timeout) keeps the cancelled ones off the heap's top."""
    monkeypatch.setattr(P, "TIMERS_MAX", 64)
    ctx = zmq.Context.instance()
    reactor = Reactor()
    reactor.call_every(1000, lambda: None)
    endpoint = f"inproc://ops-review-{os.getpid()}"
    server = RpcServer(ctx, reactor, endpoint)
    server.route(P.PING, lambda req: {"pong": True})
    client = RpcClient(ctx, reactor, endpoint, identity="t")
    replies: list[dict] = []
    try:
        for _ in range(500):
            client.request(P.PING, {}, callback=lambda h, p, e: replies.append(h or {"error": e}), timeout_ms=30_000)
            for _ in range(100):  # bounded: one round trip on inproc takes a pass or two
                if client.in_flight == 0:
                    break
                reactor.run_once(10)
        assert len(replies) == 500 and all(r.get("pong") for r in replies)
    finally:
        client.close()
        server.close()


# -- config errors are one line -----------------------------------------------------------------
def test_binary_config_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"nodes:\n  \xd0\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=rf"^{path}: "):
        load_config(path, environ={})


def test_yaml_syntax_error_is_one_line_with_the_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("nodes:\n  a: [1, 2\n  b: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: not valid YAML") and "line " in message


# -- supervisor ---------------------------------------------------------------------------------
class _ExitedProc:
    def __init__(self, pid: int, returncode: int) -> None:
        self.pid = pid
        self.returncode = returncode

    def poll(self) -> int:
        return self.returncode


def _two_node_config(tmp_path: Path):  # noqa: ANN202
    return parse_config({"cluster": {"data_dir": str(tmp_path)},
                         "nodes": {"coordinator": {"role": "coordinator", "port": 19004},
                                   "broker-1": {"role": "broker", "broker_id": 1, "port": 19001}},
                         "supervisor": {"restart_backoff_ms": 100}}, str(tmp_path / "c.yaml"), environ={})


def test_supervisor_does_not_restart_a_node_with_a_config_error(tmp_path: Path) -> None:
    cfg = _two_node_config(tmp_path)
    lines: list[str] = []
    sup = launcher.Supervisor(cfg, str(tmp_path / "c.yaml"), emit=lines.append)
    log = launcher.log_path(cfg, "broker-1")
    log.parent.mkdir(parents=True)
    log.write_text("loom: c.yaml: storage.engine: no engine named 'nope'\n")
    child = sup.children["broker-1"]
    child.proc = _ExitedProc(4242, launcher.EXIT_CONFIG_ERROR)  # type: ignore[assignment]
    sup.tick(1000)
    sup.tick(100_000)
    assert child.restart_at_ms is None and child.restarts == 0 and child.proc is None
    assert any("broker-1" in ln and "not restarting" in ln and "no engine named 'nope'" in ln for ln in lines), lines


def test_supervisor_says_why_a_crashed_node_died(tmp_path: Path) -> None:
    cfg = _two_node_config(tmp_path)
    lines: list[str] = []
    sup = launcher.Supervisor(cfg, str(tmp_path / "c.yaml"), emit=lines.append)
    log = launcher.log_path(cfg, "broker-1")
    log.parent.mkdir(parents=True)
    log.write_text("Traceback (most recent call last):\nOSError: [Errno 28] No space left on device\n")
    sup.children["broker-1"].proc = _ExitedProc(4243, 1)  # type: ignore[assignment]
    sup.tick(1000)
    assert any("restarting in 100 ms" in ln and "No space left on device" in ln for ln in lines), lines


def test_a_second_supervisor_of_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    cfg = _two_node_config(tmp_path)
    first = launcher.Supervisor(cfg, str(tmp_path / "c.yaml"), emit=lambda line: None)
    second = launcher.Supervisor(cfg, str(tmp_path / "c.yaml"), emit=lambda line: None)
    try:
        first.check_not_running()  # takes the data dir's lock (no pid file written yet)
        with pytest.raises(FabricError, match="already running"):
            second.check_not_running()
    finally:
        first.release_lock()
        second.release_lock()
    second.check_not_running()  # free again once the first lets go
    second.release_lock()


def test_an_unrelated_process_that_mentions_loom_is_not_ours(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", str(tmp_path / "loom-notes.txt")])
    try:
        assert launcher.pid_alive(proc.pid)
        assert not launcher.is_loom_process(proc.pid)
    finally:
        proc.kill()
        proc.wait(timeout=10)


# -- a node that cannot bind --------------------------------------------------------------------
def test_node_with_its_port_taken_exits_with_one_line(tmp_path: Path) -> None:
    config_path = make_config(tmp_path, 1)
    cfg = load_config(config_path, environ={})
    blocker = zmq.Context.instance().socket(zmq.ROUTER)
    blocker.bind(cfg.node("coordinator").endpoint)
    try:
        run = subprocess.run([sys.executable, "-m", "nodes.run", "-c", str(config_path), "--node", "coordinator"],
                             capture_output=True, text=True, cwd=str(ROOT), timeout=60,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
    finally:
        blocker.close(0)
    assert run.returncode == EXIT_BIND_ERROR, run.stderr
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("loom:")]
    assert "Traceback" not in run.stderr and len(errors) == 1, run.stderr
    assert f"127.0.0.1:{cfg.node('coordinator').port}" in errors[0] and "in use" in errors[0]


# -- packaging ----------------------------------------------------------------------------------
def test_the_wheel_includes_every_subpackage() -> None:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = tool.get("packages")
    on_disk = {str(p.parent.relative_to(ROOT)).replace("/", ".")
               for top in ("fabric", "engines", "nodes", "webui", "bench") for p in (ROOT / top).rglob("__init__.py")}
    if isinstance(packages, list):
        missing = on_disk - set(packages)
    else:
        include = packages["find"]["include"]
        from fnmatch import fnmatch
        missing = {p for p in on_disk if not any(fnmatch(p, pat) for pat in include)}
    assert not missing, f"not packaged: {sorted(missing)}"


# -- CLI flags checked before any network call ---------------------------------------------------
@pytest.mark.parametrize("offset", ["-5", "1.5", "abc"])
def test_consume_rejects_a_bad_offset_at_once(offset: str) -> None:
    from click.testing import CliRunner

    from nodes.cli import main
    # an address where nothing listens: a check made after connecting would time out instead
    result = CliRunner().invoke(main, ["consume", "t", "--partition", "0", "--offset", offset,
                                       "--bootstrap", "127.0.0.1:9"])
    assert result.exit_code == 2 and "--offset" in result.output and offset in result.output, result.output


def test_consume_interrupted_reports_what_it_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from fabric.records import Record
    from nodes import cli_data
    from nodes.cli import main

    class OnePollThenCtrlC:
        polls = 0
        closed = False

        def poll(self, timeout_ms: int, max_records: int) -> list:
            self.polls += 1
            if self.polls > 1:
                raise KeyboardInterrupt
            return [Record("t", 0, i, 0, None, b"v%d" % i, []) for i in range(3)]

        def close(self) -> None:
            self.closed = True

    fake = OnePollThenCtrlC()
    monkeypatch.setattr(cli_data, "_check_partition", lambda *a: None)
    monkeypatch.setattr(cli_data, "_assigned_consumer", lambda *a: fake)
    result = CliRunner().invoke(main, ["consume", "t", "--bootstrap", "127.0.0.1:9"])
    assert result.exit_code == 130 and fake.closed
    assert result.stdout == "v0\nv1\nv2\n" and "Processed a total of 3 messages" in result.stderr


def test_a_node_reactor_survives_a_failing_handler_and_a_client_reactor_raises() -> None:
    import zmq as _zmq
    from fabric.reactor import Reactor as _Reactor
    ctx = _zmq.Context.instance()
    for contain in (True, False):
        r = _Reactor(contain_handler_errors=contain)
        pull = ctx.socket(_zmq.PULL)
        push = ctx.socket(_zmq.PUSH)
        addr = f"inproc://handler-errors-{contain}"
        pull.bind(addr)
        push.connect(addr)
        seen = []

        def handler(frames: list) -> None:
            seen.append(frames[0])
            if frames[0] == b"boom":
                raise ValueError("handler bug")
        r.add_socket(pull, handler)
        push.send(b"boom")
        push.send(b"after")
        try:
            if contain:
                while len(seen) < 2:
                    r.run_once(100)
                assert seen == [b"boom", b"after"]
            else:
                import pytest as _pytest
                with _pytest.raises(ValueError):
                    while True:
                        r.run_once(100)
        finally:
            pull.close(0)
            push.close(0)
