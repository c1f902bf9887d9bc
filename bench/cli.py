"""``loom bench produce|consume|e2e|engines|cluster|failover|gateway|monitor|rtt|pagecache``: the benchmarks
behind the CLI.

Each subcommand hands its arguments unchanged to the benchmark module's own parser, so
``loom bench cluster --records 100000 --runs 3 --json out.json`` is exactly
``python -m bench.cluster --records 100000 --runs 3 --json out.json`` and
``loom bench produce --records 100000`` is ``python -m bench.runner produce --records 100000``
(``--help`` shows that parser's help, under the ``loom bench …`` name; its usage errors are one
line, ``loom: error: …``, as every other ``loom`` command's: ``bench.options.UsageParser``).
"""

from __future__ import annotations

import importlib
import sys

import click

from nodes.cli_common import GROUP_TARGET

_PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


def _target_given(args: list[str]) -> bool:
    return any(a in ("-c", "--cluster-config", "--bootstrap", "--self-contained")
               or a.startswith(("--cluster-config=", "--bootstrap=")) or (a.startswith("-c") and a[2:3] != "-")
               for a in args)


def _run(module: str, args: list[str]) -> None:
    # `loom -c FILE bench cluster`: the target given before the subcommand is handed to the
    # benchmark's parser, unless the arguments name one of their own (those win)
    given = click.get_current_context().meta.get(GROUP_TARGET, {})
    if not _target_given(args):
        if given.get("config"):
            args = ["-c", given["config"], *args]
        elif given.get("bootstrap"):
            args = ["--bootstrap", given["bootstrap"], *args]
    # imported when asked for: the benchmark modules pull in more than `loom --help` needs
    sys.exit(importlib.import_module(module).main(list(args)) or 0)


@click.group()
def bench() -> None:
    """Benchmarks: workloads, storage engines, a whole cluster, failover (results in bench/RESULTS.md)."""


@bench.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def produce(args: tuple[str, ...]) -> None:
    """Produce throughput and ack latency, per engine/fsync combination (python -m bench.runner produce)."""
    _run("bench.runner", ["produce", *args])


@bench.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def consume(args: tuple[str, ...]) -> None:
    """Produce a backlog, then drain it (python -m bench.runner consume)."""
    _run("bench.runner", ["consume", *args])


@bench.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def e2e(args: tuple[str, ...]) -> None:
    """Producers and consumers at once: end-to-end latency (python -m bench.runner e2e)."""
    _run("bench.runner", ["e2e", *args])


@bench.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def engines(args: tuple[str, ...]) -> None:
    """Append/read throughput per engine and fsync mode; with a cluster flag, the end-to-end comparison (python -m bench.engines)."""
    _run("bench.engines", list(args))


@bench.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def cluster(args: tuple[str, ...]) -> None:
    """Produce, then drain, per RF x acks scenario beside a raw pyzmq baseline (python -m bench.cluster)."""
    _run("bench.cluster", list(args))


@bench.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def failover(args: tuple[str, ...]) -> None:
    """Time from a leader's SIGKILL to the first acks=all write on the new leader (python -m bench.failover)."""
    _run("bench.failover", list(args))


@bench.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def monitor(args: tuple[str, ...]) -> None:
    """Produce throughput with and without the monitor, and its RSS (python -m bench.monitor)."""
    _run("bench.monitor", list(args))


@bench.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def gateway(args: tuple[str, ...]) -> None:
    """REST produce, WebSocket consume and REST latency through the gateway (python -m bench.gateway)."""
    _run("bench.gateway", list(args))


@bench.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def rtt(args: tuple[str, ...]) -> None:
    """This machine's bare two-process request/reply round trip, the floor under latency (python -m bench.rtt)."""
    _run("bench.rtt", list(args))


@bench.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def pagecache(args: tuple[str, ...]) -> None:
    """System CPU per MB written through the page cache, kept or dropped after each fsync (python -m bench.pagecache)."""
    _run("bench.pagecache", list(args))


COMMANDS = [bench]
