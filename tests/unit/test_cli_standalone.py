"""The installed ``loom`` stands on its own: no package imports ``tests``, subcommand modules do
not import the CLI back, and ``loom bench …`` works from any directory."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fabric", "engines", "nodes", "webui", "bench")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_no_package_imports_the_tests() -> None:
    offenders = [str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
                 if any(m == "tests" or m.startswith("tests.") for m in _imports(p))]
    assert offenders == []


def test_subcommand_modules_do_not_import_the_cli_back() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in list((ROOT / "nodes").glob("cli_*.py")) + [ROOT / "bench" / "cli.py"]
                 if "nodes.cli" in _imports(p)]
    assert offenders == []


@pytest.mark.parametrize("bench", ["cluster", "failover", "engines", "rtt"])
def test_loom_bench_help_works_from_any_directory(tmp_path: Path, bench: str) -> None:
    loom = Path(sys.executable).parent / "loom"
    if not loom.exists():
        pytest.skip("the loom script is not installed next to this interpreter")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([str(loom), "bench", bench, "--help"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert f"usage: loom bench {bench}" in p.stdout


@pytest.mark.parametrize("args, says", [
    (["produce"], "Missing argument 'TOPIC'"),
    (["bogus"], "No such command 'bogus'"),
    (["topic", "list", "--config", "config/cluster.yaml"], "-c/--cluster-config"),
    (["topic", "describe", "x", "--config", "config/cluster.yaml"], "-c/--cluster-config"),
    (["topic", "create", "x", "--config", "config/cluster.yaml"], "-c/--cluster-config"),
])
def test_usage_errors_are_one_line(args: list[str], says: str) -> None:
    from click.testing import CliRunner

    from nodes.cli import main
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loom: error: ") and says in lines[0], result.output


@pytest.mark.parametrize("command", ["down", "alerts"])
def test_a_command_that_needs_the_config_says_so_when_given_only_bootstrap(tmp_path: Path, command: str) -> None:
    """Outside the repository (no config/cluster.yaml), --bootstrap alone: the error names what
    is missing, not the default file it could not read."""
    env = {k: v for k, v in os.environ.items() if k != "LOOM_CONFIG"} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "nodes.cli", command, "--bootstrap", "127.0.0.1:1"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1 and f"loom {command} needs the cluster's config" in done.stderr, done.stderr


@pytest.mark.parametrize("command", ["down", "alerts"])
def test_bootstrap_alone_does_not_fall_back_to_the_default_config(tmp_path: Path, command: str) -> None:
    """In a directory with a config/cluster.yaml (the repository, where the README runs every
    command), --bootstrap alone named one cluster while `loom down` stopped, and `loom alerts`
    listed the alerts of, the cluster of that default file: the endpoints given were ignored."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "cluster.yaml").write_text(
        (ROOT / "config" / "cluster.yaml").read_text().replace("data_dir: ../data", f"data_dir: {tmp_path / 'data'}"))
    env = {k: v for k, v in os.environ.items() if k != "LOOM_CONFIG"} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "nodes.cli", command, "--bootstrap", "127.0.0.1:1"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1 and f"loom {command} needs the cluster's config" in done.stderr, done.stderr


def test_up_refuses_bootstrap_endpoints_it_cannot_start(tmp_path: Path) -> None:
    """`loom up --bootstrap X` took the option (every command has it) and started the nodes of
    the default config, whatever X named. Endpoints name no nodes to start: a usage error."""
    env = {k: v for k, v in os.environ.items() if k != "LOOM_CONFIG"} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "nodes.cli", "up", "--bootstrap", "127.0.0.1:1"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("loom: error: ") and "--bootstrap" in done.stderr and "-c" in done.stderr, done.stderr


def test_restart_needs_the_config_and_a_running_supervisor(tmp_path: Path) -> None:
    """`loom restart NODE` asks the supervisor over its control socket in the config's data dir:
    --bootstrap alone says so, and a config whose cluster is not up says no cluster runs."""
    env = {k: v for k, v in os.environ.items() if k != "LOOM_CONFIG"} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "nodes.cli", "restart", "broker-1", "--bootstrap", "127.0.0.1:1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1 and "loom restart needs the cluster's config" in done.stderr, done.stderr
    config = tmp_path / "cluster.yaml"
    config.write_text((ROOT / "config" / "cluster.yaml").read_text().replace("data_dir: ../data",
                                                                                 f"data_dir: {tmp_path / 'data'}"))
    done = subprocess.run([sys.executable, "-m", "nodes.cli", "restart", "broker-1", "-c", str(config)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1 and "no running cluster found" in done.stderr, done.stderr
