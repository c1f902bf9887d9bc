"""What every ``loom`` subcommand shares: where the cluster is (``Target``) and the options
that say so. Subcommand modules import this, never ``nodes.cli`` (which imports them).
"""

from __future__ import annotations

from dataclasses import dataclass

import click


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
