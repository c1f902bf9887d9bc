"""What every ``loom`` subcommand shares: where the cluster is (``Target``) and the options
that say so. Subcommand modules import this, never ``nodes.cli`` (which imports them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click
from click.core import ParameterSource

from fabric.config import LoomConfig, load_config
from fabric.errors import FabricError


@dataclass
class Target:
    """Where the cluster is: a config path and/or bootstrap endpoints."""

    config: str | None
    bootstrap: str | None

    def admin(self):  # noqa: ANN201 - imported lazily to keep `loom --help` fast
        from fabric.client import Admin
        return Admin(self.bootstrap, config_path=self.config)


# ctx.meta key (meta is shared by a context and its subcommands' contexts): the -c/--bootstrap
# given before the subcommand, ``loom -c FILE status``.
GROUP_TARGET = "loom.group_target"
CONFIG_HELP = "cluster config YAML (default: $LOOM_CONFIG, then config/cluster.yaml)"
BOOTSTRAP_HELP = "host:port[,host:port...] of the coordinator or brokers"
BOOTSTRAP_NOT_ENOUGH_HELP = "not enough here: needs the cluster's config (-c CONFIG or $LOOM_CONFIG)"


def group_target_options(fn):  # noqa: ANN001, ANN201
    """-c/--config and --bootstrap on ``loom`` itself, before the subcommand. No envvar here:
    the subcommand's own option (given after it) wins, then this one, then $LOOM_CONFIG."""
    fn = click.option("-c", "--config", "--cluster-config", "config", default=None, metavar="FILE",
                      help=CONFIG_HELP + "; also after the subcommand, which wins")(fn)
    fn = click.option("--bootstrap", "bootstrap", default=None, metavar="HOST:PORT,...",
                      help=BOOTSTRAP_HELP + "; also after the subcommand, which wins")(fn)
    return fn


def from_group(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A subcommand's -c/--bootstrap callback: its own value when given on the command line,
    else the one given before the subcommand, else its envvar's or default."""
    if ctx.get_parameter_source(param.name or "") is ParameterSource.COMMANDLINE:
        return value
    given = ctx.meta.get(GROUP_TARGET, {}).get(param.name)
    return value if given is None else given


def target_options(fn=None, *, bootstrap_help: str = BOOTSTRAP_HELP):  # noqa: ANN001, ANN201
    """-c/--config and --bootstrap on every command (Kafka tools take them per command; given
    before the subcommand too, see group_target_options). ``@target_options(bootstrap_help=...)``
    for a command that refuses --bootstrap or needs the config besides (BOOTSTRAP_NOT_ENOUGH_HELP):
    its --help says so."""
    if fn is None:
        return lambda f: target_options(f, bootstrap_help=bootstrap_help)
    fn = click.option("-c", "--config", "config", default=None, envvar="LOOM_CONFIG", callback=from_group,
                      help=CONFIG_HELP)(fn)
    fn = click.option("--bootstrap", "bootstrap", default=None, callback=from_group, help=bootstrap_help)(fn)
    return fn


def config_for(config: str | None, bootstrap: str | None, command: str, why: str) -> LoomConfig:
    """The config a command that needs one reads; with only --bootstrap, a clear error: the
    default file (config/cluster.yaml, when the working directory has one) may be another
    cluster's than the endpoints', so it is not read in their place."""
    if bootstrap_alone(config, bootstrap):
        raise FabricError(f"{command} needs the cluster's config (-c CONFIG or $LOOM_CONFIG), "
                          f"--bootstrap is not enough: {why}")
    return load_config(config)


def bootstrap_alone(config: str | None, bootstrap: str | None) -> bool:
    """--bootstrap given without -c or $LOOM_CONFIG: the endpoints are the cluster, and the
    default config file, which may describe another one, is not read."""
    return bool(bootstrap) and not config
