"""Run one node: ``python -m nodes.run -c CONFIG --node NAME``. The launcher starts every node
this way; ``loom up --node NAME`` does the same in the foreground."""

from __future__ import annotations

import argparse
import importlib
import errno
import logging
import os
import sys

import zmq

from fabric.config import ConfigError, load_config
from fabric.roles import ROLES
from nodes.base import setup_logging

log = logging.getLogger("loom.run")

# Exit codes the supervisor (nodes/launcher.py) acts on.
EXIT_CONFIG_ERROR = 2  # the config (file, node name, host) is wrong: restarting cannot help
EXIT_BIND_ERROR = 3    # the node's port is taken: restarted with backoff, it may be freed
EXIT_PROGRAMMER_ERROR = 70  # a bug stopped the node (EX_SOFTWARE): restarted, it recovers from disk


def node_class(role: str) -> type:
    """The class implementing ``role`` (fabric/roles.py's table), imported now. Raises
    ConfigError for an unknown role or one whose module this build does not have."""
    spec = ROLES.get(role)
    if spec is None:
        raise ConfigError(f"no node implementation for role {role!r}")
    try:
        return getattr(importlib.import_module(spec.module), spec.class_name)
    except ModuleNotFoundError as e:
        if e.name != spec.module:
            raise
        raise ConfigError(f"role {role!r} is not available in this build") from None


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
        return EXIT_CONFIG_ERROR
    except zmq.ZMQError as e:  # binding the ROUTER or PUB port
        if e.errno == errno.EADDRINUSE:
            print(f"loom: {args.node}: cannot listen: {e} (is another process using the port?)", file=sys.stderr)
            return EXIT_BIND_ERROR
        if e.errno == errno.EADDRNOTAVAIL:
            print(f"loom: {args.node}: cannot listen: {e} (the node's host is not an address of this machine)",
                  file=sys.stderr)
            return EXIT_CONFIG_ERROR
        raise
    try:
        node.run()
    except Exception:
        # like a kill -9, which recovery handles: no clean close from a state a bug has broken
        log.critical("%s stopped by a programmer error; the supervisor restarts it from disk", args.node,
                     exc_info=True)
        logging.shutdown()
        sys.stderr.flush()
        os._exit(EXIT_PROGRAMMER_ERROR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
