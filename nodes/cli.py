"""The ``loom`` command (Kafka tool conventions). Subcommands live in one module each:

    nodes/cli_cluster.py  up, down, status
    nodes/cli_topic.py    topic create|list|describe|alter|delete
    nodes/cli_data.py     produce, consume
    nodes/cli_group.py    group list|describe|reset-offsets|delete
    nodes/cli_monitor.py  alerts (and the monitor's view in status)
    nodes/cli_keys.py     keys add|list (gateway API keys)
    bench (loom bench)    in bench/cli.py

Every command finds the cluster through ``-c CONFIG``, ``--bootstrap host:port,…`` (after the
subcommand, or before it: ``loom -c FILE status``; after wins), ``$LOOM_CONFIG`` or
config/cluster.yaml. Errors are one clear line and a non-zero exit.
"""

from __future__ import annotations

import os
import sys

import click

from bench import cli as cli_bench
from fabric.config import ConfigError
from fabric.errors import FabricError
from nodes import cli_cluster, cli_data, cli_group, cli_keys, cli_monitor, cli_topic
from nodes.cli_common import GROUP_TARGET, group_target_options


class LoomGroup(click.Group):
    """Turns Loom's operating errors into one line on stderr and exit code 1, and usage errors
    into one line (``loom: error: …``, pointing at ``--help``) and exit code 2."""

    def main(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        if not kwargs.pop("standalone_mode", True):
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
            return rv if isinstance(rv, int) else None  # the exit status of `loom`
        except click.UsageError as e:
            where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            click.echo(f"loom: error: {e.format_message()}{where}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"loom: error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            sys.exit(130)

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return super().invoke(ctx)
        except (FabricError, ConfigError) as e:
            click.echo(f"loom: error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt as e:
            sys.exit(143 if isinstance(e, cli_data.Terminated) else 130)
        except BrokenPipeError:  # `loom status | head -1`: the reader left; that is not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
            sys.exit(0)


@click.group(cls=LoomGroup)
@click.version_option(package_name="loom")
@group_target_options
@click.pass_context
def main(ctx: click.Context, config: str | None, bootstrap: str | None) -> None:
    """Loom: a replicated, partitioned message log on ZeroMQ."""
    ctx.meta[GROUP_TARGET] = {"config": config, "bootstrap": bootstrap}


# Registered explicitly: a subcommand module that fails to import is an error, not a command
# that silently goes missing.
for _module in (cli_cluster, cli_topic, cli_data, cli_group, cli_keys, cli_monitor, cli_bench):
    for _cmd in _module.COMMANDS:
        main.add_command(_cmd)


if __name__ == "__main__":  # python -m nodes.cli
    main()
