"""Run one node: ``python -m nodes.run -c CONFIG --node NAME``. The launcher starts every node
this way; ``loom up --node NAME`` does the same in the foreground."""

from __future__ import annotations

import argparse
import logging
import sys

from fabric.config import ConfigError, load_config
from nodes.base import setup_logging

log = logging.getLogger("loom.run")


def node_class(role: str) -> type:
    if role == "broker":
        from nodes.broker.node import Broker
        return Broker
    if role == "coordinator":
        from nodes.coordinator.node import Coordinator
        return Coordinator
    if role == "producer":
        from nodes.producer import ProducerService
        return ProducerService
    if role == "consumer":
        from nodes.consumer import ConsumerService
        return ConsumerService
    if role == "monitor":
        from nodes.monitor import Monitor
        return Monitor
    if role == "gateway":
        from nodes.gateway import Gateway
        return Gateway
    raise ConfigError(f"no node implementation for role {role!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nodes.run")
    ap.add_argument("-c", "--config", default=None)
    ap.add_argument("--node", required=True)
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = load_config(args.config)
        role = config.node(args.node).role
        cls = node_class(role)
        node = cls(config, args.node)
    except ConfigError as e:
        print(f"loom: {e}", file=sys.stderr)
        return 2
    node.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
