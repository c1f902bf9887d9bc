"""Every command takes --bootstrap (before or after the subcommand), but `loom up` refuses it
and `loom down`, `loom restart` and `loom alerts` need the config instead: their --help says
so, rather than offering the endpoints as a way to name the cluster (README, "Configuration")."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from nodes.cli import main


def _bootstrap_help(command: str) -> str:
    result = CliRunner().invoke(main, [command, "--help"], env={"LOOM_CONFIG": None})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("--bootstrap"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("-"))
    return " ".join(" ".join(lines[start:end]).split())


def test_up_says_it_refuses_bootstrap() -> None:
    assert "refused" in _bootstrap_help("up")


@pytest.mark.parametrize("command", ["down", "restart", "alerts"])
def test_the_commands_that_need_the_config_say_bootstrap_is_not_enough(command: str) -> None:
    assert "not enough" in _bootstrap_help(command)


@pytest.mark.parametrize("command", ["status", "produce", "consume"])
def test_the_others_keep_the_plain_help(command: str) -> None:
    text = _bootstrap_help(command)
    assert "of the coordinator or brokers" in text and "refused" not in text and "not enough" not in text


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        out.append((path + (name,), cmd))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, path + (name,))
    return out


def test_every_option_of_every_command_says_what_it_is() -> None:
    """`loom keys list --help` showed `-c, --config TEXT` and nothing else: every option of every
    command (and group) carries a help text."""
    bare = [f"loom {' '.join(path)} {p.opts[0]}" for path, cmd in _commands(main) for p in cmd.params
            if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert not bare, bare
