"""``loom -c FILE status``: -c/--config and --bootstrap are taken before the subcommand too, and
the subcommand's own (given after it) wins over them, which win over $LOOM_CONFIG. Every form
after the subcommand keeps working. A config path that does not exist makes each command name
the file it was handed, without a cluster."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from nodes.cli import main

COMMANDS = [["status"], ["topic", "list"], ["topic", "describe", "t"], ["group", "list"], ["keys", "list"],
            ["alerts"]]


def _run(args: list[str], env: dict[str, str] | None = None):  # noqa: ANN202
    return CliRunner().invoke(main, args, env={"LOOM_CONFIG": None, **(env or {})})


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_config_before_the_subcommand_reaches_it(tmp_path: Path, command: list[str]) -> None:
    before = str(tmp_path / "before.yaml")
    result = _run(["-c", before, *command])
    assert result.exit_code == 1, result.output
    assert f"{before}: cannot read" in result.output


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_config_after_the_subcommand_still_works(tmp_path: Path, command: list[str]) -> None:
    after = str(tmp_path / "after.yaml")
    result = _run([*command, "-c", after])
    assert result.exit_code == 1 and f"{after}: cannot read" in result.output, result.output


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_the_subcommands_config_wins_over_the_one_before_it(tmp_path: Path, command: list[str]) -> None:
    before, after = str(tmp_path / "before.yaml"), str(tmp_path / "after.yaml")
    result = _run(["-c", before, *command, "-c", after])
    assert result.exit_code == 1 and f"{after}: cannot read" in result.output, result.output
    assert before not in result.output


def test_long_forms_before_the_subcommand(tmp_path: Path) -> None:
    for flag in ("--config", "--cluster-config"):
        path = str(tmp_path / f"{flag}.yaml")
        result = _run([flag, path, "topic", "list"])
        assert result.exit_code == 1 and f"{path}: cannot read" in result.output, result.output


def test_config_before_the_subcommand_wins_over_the_environment(tmp_path: Path) -> None:
    before, env = str(tmp_path / "before.yaml"), str(tmp_path / "env.yaml")
    result = _run(["-c", before, "status"], env={"LOOM_CONFIG": env})
    assert result.exit_code == 1 and f"{before}: cannot read" in result.output, result.output
    result = _run(["status"], env={"LOOM_CONFIG": env})  # and the environment alone still counts
    assert result.exit_code == 1 and f"{env}: cannot read" in result.output, result.output


def test_bootstrap_before_the_subcommand_reaches_it() -> None:
    """down needs the config: handed only --bootstrap (before the subcommand) it says so."""
    result = _run(["--bootstrap", "127.0.0.1:1", "down"])
    assert result.exit_code == 1 and "loom down needs the cluster's config" in result.output, result.output


def test_help_shows_the_options_before_the_subcommand() -> None:
    result = _run(["--help"])
    assert result.exit_code == 0
    assert "-c, --config" in result.output and "--bootstrap" in result.output
    assert "after the subcommand, which wins" in result.output


@pytest.mark.parametrize("args, handed", [
    (["-c", "a.yaml", "bench", "cluster", "--runs", "1"], ["-c", "a.yaml", "--runs", "1"]),
    (["--bootstrap", "h:1", "bench", "cluster"], ["--bootstrap", "h:1"]),
    (["-c", "a.yaml", "bench", "cluster", "-c", "b.yaml"], ["-c", "b.yaml"]),
    (["-c", "a.yaml", "bench", "cluster", "--bootstrap=h:1"], ["--bootstrap=h:1"]),
    (["-c", "a.yaml", "bench", "cluster", "--self-contained"], ["--self-contained"]),
    (["bench", "cluster", "--runs", "1"], ["--runs", "1"]),
])
def test_bench_gets_the_target_given_before_it_unless_it_names_one(monkeypatch: pytest.MonkeyPatch,
                                                                  args: list[str], handed: list[str]) -> None:
    import bench.cli
    seen: list[list[str]] = []
    fake = types.SimpleNamespace(main=lambda argv: seen.append(argv) or 0)
    monkeypatch.setattr(bench.cli.importlib, "import_module", lambda name: fake)
    result = _run(args)
    assert result.exit_code == 0, result.output
    assert seen == [handed]
