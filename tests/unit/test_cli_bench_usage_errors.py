"""Every ``loom bench`` subcommand answers a usage error in the one-line form of the rest of the
CLI, ``loom: error: … (see 'loom bench X --help')``, with exit code 2 (the benchmarks printed
argparse's multi-line usage block under ``python -m bench.X``)."""

from __future__ import annotations

import importlib

import pytest

BENCHES = {"cluster": "bench.cluster", "failover": "bench.failover", "engines": "bench.engines",
           "monitor": "bench.monitor", "gateway": "bench.gateway", "rtt": "bench.rtt",
           "pagecache": "bench.pagecache"}


@pytest.mark.parametrize("name", sorted(BENCHES))
@pytest.mark.parametrize("argv", [["--bogus"], ["--runs", "x"]])
def test_a_usage_error_is_one_line(name: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    if name == "gateway" and argv[0] == "--runs":
        argv = ["--requests", "x"]
    with pytest.raises(SystemExit) as e:
        importlib.import_module(BENCHES[name]).main(argv)
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loom: error: "), lines
    assert lines[0].endswith(f"(see 'loom bench {name} --help')"), lines


@pytest.mark.parametrize("command", ["produce", "consume", "e2e"])
def test_the_workload_commands_answer_usage_errors_in_one_line(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import runner
    with pytest.raises(SystemExit) as e:
        runner.main([command, "--records", "x"])
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"loom: error: argument --records: invalid int value: 'x' (see 'loom bench {command} --help')"]
