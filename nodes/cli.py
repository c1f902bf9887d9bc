"""The ``loom`` command (Kafka tool conventions). Subcommands live in one module each:

    nodes/cli_cluster.py  up, down, status
    nodes/cli_topic.py    topic create|list|describe|alter|delete
    nodes/cli_data.py     produce, consume
    nodes/cli_group.py    group list|describe|reset-offsets|delete
    nodes/cli_keys.py     keys add|list (gateway API keys)
    bench (loom bench)    in bench/cli.py

Every command finds the cluster through ``-c CONFIG``, ``--bootstrap host:port,…``,
``$LOOM_CONFIG`` or config/cluster.yaml. Errors are one clear line and a non-zero exit.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

import click

from fabric.config import ConfigError
from fabric.errors import FabricError

SUBCOMMAND_MODULES = ("nodes.cli_cluster", "nodes.cli_topic", "nodes.cli_data", "nodes.cli_group", "nodes.cli_keys",
                      "bench.cli")


@dataclass
class Target:
    """Where the cluster is: a config path and/or bootstrap endpoints."""

    config: str | None
    bootstrap: str | None

    def admin(self):  # noqa: ANN201 - imported lazily to keep `loom --help` fast
        from fabric.client import Admin
        return Admin(self.bootstrap, config_path=self.config)


def target_options(fn):  # noqa: ANN001, ANN201
    """-c/--config and --bootstrap on every command (Kafka tools take them per command)."""
    fn = click.option("-c", "--config", "config", default=None, envvar="LOOM_CONFIG",
                      help="cluster config YAML (default: $LOOM_CONFIG, then config/cluster.yaml)")(fn)
    fn = click.option("--bootstrap", "bootstrap", default=None,
                      help="host:port[,host:port...] of the coordinator or brokers")(fn)
    return fn


class LoomGroup(click.Group):
    """Turns Loom's operating errors into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return super().invoke(ctx)
        except (FabricError, ConfigError) as e:
            click.echo(f"loom: error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            sys.exit(130)


@click.group(cls=LoomGroup)
@click.version_option(package_name="loom")
def main() -> None:
    """Loom: a replicated, partitioned message log on ZeroMQ."""


for _mod in SUBCOMMAND_MODULES:
    try:
        _m = importlib.import_module(_mod)
    except ModuleNotFoundError as _e:
        if _e.name != _mod:
            raise
        continue
    for _cmd in getattr(_m, "COMMANDS", ()):
        main.add_command(_cmd)


if __name__ == "__main__":  # python -m nodes.cli
    main()
