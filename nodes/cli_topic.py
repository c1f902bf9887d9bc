"""``loom topic create|list|describe|alter|delete`` (kafka-topics conventions).

The topic is a positional argument or ``--topic``. ``describe`` prints Kafka's shape: a
summary line per topic, then one tab-separated line per partition::

    Topic: orders	PartitionCount: 3	ReplicationFactor: 3	Configs: min.insync.replicas=2
    	Topic: orders	Partition: 0	Leader: 1	Replicas: 1,2,3	Isr: 1,2,3
"""

from __future__ import annotations

import logging
import sys
import time

import click
from rich.console import Console

from fabric import protocol as P
from fabric.client import Admin
from fabric.errors import CodedError, RemoteError, TopicNotInMetadataError
from fabric.metadata import PartitionInfo, TopicInfo
from nodes.cli_common import BOOTSTRAP_HELP, CONFIG_HELP, Target, from_group

log = logging.getLogger(__name__)

READY_WAIT_S = 15.0  # create/alter wait this long for every new partition to have a leader


def parse_key_values(items: tuple[str, ...], what: str = "--config") -> dict[str, str]:
    """``("k=v", …)`` -> {k: v}; raises click.BadParameter naming the bad item."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            hint = f" ({CLUSTER_CONFIG_HINT})" if item.endswith((".yaml", ".yml")) else ""
            raise click.BadParameter(f"expected key=value, not {item!r}{hint}", param_hint=what)
        out[key.strip()] = value.strip()
    return out


def _topic_name(name: str | None, topic: str | None, required: bool = True) -> str | None:
    if name and topic and name != topic:
        raise click.UsageError(f"two topic names given: {name!r} and --topic {topic!r}")
    chosen = name or topic
    if required and not chosen:
        raise click.UsageError("name the topic: loom topic ... NAME (or --topic NAME)")
    return chosen


CLUSTER_CONFIG_HINT = "--config sets topic configs (K=V); give the cluster config with -c/--cluster-config FILE"


def _no_topic_configs(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> None:
    if value:
        raise click.UsageError(f"this command takes no topic configs: {CLUSTER_CONFIG_HINT}")


def cluster_options(fn, topic_configs: bool = False):  # noqa: ANN001, ANN201
    """Like nodes.cli_common.target_options, but ``--config`` is kept for topic configs
    (kafka-topics' ``--config k=v``): the cluster config is ``-c`` / ``--cluster-config``.
    Commands without topic configs answer ``--config FILE`` with what to use instead."""
    if not topic_configs:
        fn = click.option("--config", "_topic_configs", multiple=True, hidden=True, expose_value=False,
                          callback=_no_topic_configs)(fn)
    fn = click.option("-c", "--cluster-config", "config", default=None, envvar="LOOM_CONFIG", callback=from_group,
                      help=CONFIG_HELP)(fn)
    fn = click.option("--bootstrap", "bootstrap", default=None, callback=from_group, help=BOOTSTRAP_HELP)(fn)
    return fn


def topic_options(fn, topic_configs: bool = False):  # noqa: ANN001, ANN201
    fn = click.option("--topic", "topic", default=None, help="the topic (or give it as the argument)")(fn)
    fn = click.argument("name", required=False)(fn)
    return cluster_options(fn, topic_configs)


def topic_options_with_configs(fn):  # noqa: ANN001, ANN201
    """topic_options for the commands that take ``--config K=V`` (create, alter)."""
    return topic_options(fn, topic_configs=True)


def wait_ready(admin: Admin, topic: str, partitions_min: int, timeout_s: float = READY_WAIT_S) -> bool:
    """Wait until ``topic`` has ``partitions_min`` partitions whose leaders answer
    LIST_OFFSETS (then produce and consume work at once). False after ``timeout_s``.
    Progress is shown on stderr when it is a terminal."""
    console = Console(file=sys.stderr) if sys.stderr.isatty() else None
    status = console.status(f"waiting for the leaders of {topic}...") if console else None
    deadline = time.monotonic() + timeout_s
    if status:
        status.start()
    try:
        while time.monotonic() < deadline:
            try:
                t = admin.metadata().topics.get(topic)
                if t is not None and len(t.partitions) >= partitions_min and all(p.leader >= 0 for p in t.partitions):
                    admin.list_offsets(topic)
                    return True
            except CodedError as e:  # leaders are still taking over
                log.debug("%s not ready yet: %s", topic, e)
            time.sleep(0.1)
        return False
    finally:
        if status:
            status.stop()


@click.group()
def topic() -> None:
    """Create, list, describe, alter and delete topics."""


@topic.command()
@topic_options_with_configs
@click.option("--partitions", type=click.IntRange(1), default=None, help="number of partitions (default: topics.partitions)")
@click.option("--replication-factor", type=click.IntRange(1), default=None, help="replicas per partition (default: topics.replication_factor)")
@click.option("--config", "configs", multiple=True, metavar="K=V", help="topic config, repeatable (retention.ms=…, min.insync.replicas=…)")
@click.option("--if-not-exists", is_flag=True, help="succeed when the topic already exists")
def create(config: str | None, bootstrap: str | None, name: str | None, topic: str | None, partitions: int | None,
           replication_factor: int | None, configs: tuple[str, ...], if_not_exists: bool) -> None:
    """Create a topic: loom topic create NAME --partitions N --replication-factor R."""
    name = _topic_name(name, topic)
    with Target(config, bootstrap).admin() as admin:
        try:
            reply = admin.create_topic(name, partitions, replication_factor, parse_key_values(configs) or None)
        except RemoteError as e:
            if e.code == P.TOPIC_ALREADY_EXISTS and if_not_exists:
                return
            raise
        if not wait_ready(admin, name, reply.get("partitions", 1)):
            click.echo(f"loom: warning: {name} was created but not every partition has a leader yet", err=True)
    click.echo(f"Created topic {name}.")


@topic.command(name="list")
@cluster_options
def list_topics(config: str | None, bootstrap: str | None) -> None:
    """List topic names, one per line."""
    with Target(config, bootstrap).admin() as admin:
        for name in admin.list_topics():
            click.echo(name)


def format_topic(t: TopicInfo) -> str:
    rf = len(t.partitions[0].replicas) if t.partitions else 0
    configs = ",".join(f"{k}={v}" for k, v in sorted(t.configs.items()))
    return f"Topic: {t.name}\tPartitionCount: {len(t.partitions)}\tReplicationFactor: {rf}\tConfigs: {configs}"


def format_partition(p: PartitionInfo) -> str:
    leader = str(p.leader) if p.leader >= 0 else "none"
    return (f"\tTopic: {p.topic}\tPartition: {p.partition}\tLeader: {leader}\t"
            f"Replicas: {','.join(map(str, p.replicas))}\tIsr: {','.join(map(str, p.isr))}")


@topic.command()
@topic_options
@click.option("--under-replicated-partitions", "under_replicated", is_flag=True,
              help="only partitions whose ISR is smaller than their replica set")
@click.option("--unavailable-partitions", "unavailable", is_flag=True, help="only partitions without a leader")
def describe(config: str | None, bootstrap: str | None, name: str | None, topic: str | None,
             under_replicated: bool, unavailable: bool) -> None:
    """Describe one topic (or all): partitions, leaders, replicas, ISR."""
    name = _topic_name(name, topic, required=False)
    with Target(config, bootstrap).admin() as admin:
        md = admin.metadata()
    if name is not None and name not in md.topics:
        raise TopicNotInMetadataError(f"no topic {name!r}")
    names = [name] if name else sorted(t for t in md.topics if not t.startswith(P.INTERNAL_TOPIC_PREFIX))
    filtered = under_replicated or unavailable
    for n in names:
        t = md.topics[n]
        if not filtered:
            click.echo(format_topic(t))
        for p in t.partitions:
            if filtered and not ((under_replicated and p.under_replicated) or (unavailable and p.offline)):
                continue
            click.echo(format_partition(p))


@topic.command()
@topic_options_with_configs
@click.option("--partitions", type=click.IntRange(1), default=None, help="new (larger) partition count")
@click.option("--config", "configs", multiple=True, metavar="K=V", help="topic config to set, repeatable")
def alter(config: str | None, bootstrap: str | None, name: str | None, topic: str | None,
          partitions: int | None, configs: tuple[str, ...]) -> None:
    """Add partitions to a topic or change its configs."""
    name = _topic_name(name, topic)
    if partitions is None and not configs:
        raise click.UsageError("nothing to alter: give --partitions N and/or --config K=V")
    with Target(config, bootstrap).admin() as admin:
        reply = admin.alter_topic(name, partitions, parse_key_values(configs) or None)
        if partitions is not None and not wait_ready(admin, name, partitions):
            click.echo(f"loom: warning: not every new partition of {name} has a leader yet", err=True)
    changed = ([f"{reply.get('partitions')} partitions"] if partitions is not None else []) + \
        ([f"configs set: {', '.join(sorted(parse_key_values(configs)))}"] if configs else [])
    click.echo(f"Altered topic {name}: {'; '.join(changed)}.")


@topic.command()
@topic_options
@click.option("--if-exists", is_flag=True, help="succeed when the topic does not exist")
def delete(config: str | None, bootstrap: str | None, name: str | None, topic: str | None, if_exists: bool) -> None:
    """Delete a topic and its data."""
    name = _topic_name(name, topic)
    with Target(config, bootstrap).admin() as admin:
        try:
            admin.delete_topic(name)
        except RemoteError as e:
            if e.code == P.UNKNOWN_TOPIC_OR_PARTITION and if_exists:
                return
            raise
    click.echo(f"Deleted topic {name}.")


COMMANDS = [topic]
