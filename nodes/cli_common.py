"""What every ``loom`` subcommand shares: where the cluster is (``Target``) and the options
that say so. Subcommand modules import this, never ``nodes.cli`` (which imports them).
"""

from __future__ import annotations

from dataclasses import dataclass

import click

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


def target_options(fn):  # noqa: ANN001, ANN201
    """-c/--config and --bootstrap on every command (Kafka tools take them per command)."""
    fn = click.option("-c", "--config", "config", default=None, envvar="LOOM_CONFIG",
                      help="cluster config YAML (default: $LOOM_CONFIG, then config/cluster.yaml)")(fn)
    fn = click.option("--bootstrap", "bootstrap", default=None,
                      help="host:port[,host:port...] of the coordinator or brokers")(fn)
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
