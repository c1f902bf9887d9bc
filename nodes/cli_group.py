"""``loom group list|describe|reset-offsets|delete`` (kafka-consumer-groups conventions).

    loom group list
    loom group describe G [--members | --state]
    loom group reset-offsets G --topic T (--to-earliest | --to-latest | --to-offset N |
                                          --to-datetime T | --shift-by N) [--execute]
    loom group delete G

reset-offsets prints the plan and changes nothing unless ``--execute`` is given; like Kafka it
only works on a group without active members, and clamps new offsets to each partition's
[log start, log end]. ``--shift-by`` moves committed offsets: a partition without one fails the
whole reset (nothing changes), as Kafka's tool refuses it.
"""

from __future__ import annotations

from datetime import datetime, timezone

import click

from fabric.client.group_admin import GroupAdmin
from fabric.errors import FabricError
from nodes.cli_common import Target, target_options

# how long reset-offsets waits for a partition's leader: an election (under a second after a
# leader's SIGKILL; a paused leader is replaced once its session times out, 3 s by default) is
# waited out, while an offline partition (no in-sync replica alive) fails the plan at once
RESET_LEADER_WAIT_MS = 5000


def _table(headers: list[str], rows: list[list]) -> None:
    cells = [headers] + [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def _groups(config: str | None, bootstrap: str | None) -> tuple[GroupAdmin, object]:
    admin = Target(config, bootstrap).admin()
    return GroupAdmin(admin), admin


@click.group("group")
def group() -> None:
    """Consumer groups: list, describe (lag), reset offsets, delete."""


@group.command("list")
@target_options
def list_cmd(config: str | None, bootstrap: str | None) -> None:
    """Every group the coordinator knows (active or with committed offsets)."""
    ga, admin = _groups(config, bootstrap)
    try:
        rows = [[g["group"], g["state"], g["members"]] for g in ga.list_groups()]
    finally:
        admin.close()  # type: ignore[attr-defined]
    _table(["GROUP", "STATE", "MEMBERS"], rows)


@group.command("describe")
@click.argument("group_id")
@click.option("--members", is_flag=True, help="list the members and their partitions")
@click.option("--state", is_flag=True, help="show the group's state, assignor and generation")
@target_options
def describe_cmd(group_id: str, members: bool, state: bool, config: str | None, bootstrap: str | None) -> None:
    """Committed offsets, log end offsets and lag per partition (or --members / --state)."""
    ga, admin = _groups(config, bootstrap)
    try:
        if state:
            d = ga.describe(group_id)
            _table(["GROUP", "COORDINATOR", "ASSIGNMENT-STRATEGY", "STATE", "GENERATION", "#MEMBERS"],
                   [[group_id, admin.metadata().coordinator, d["assignor"] or "-", d["state"],  # type: ignore[attr-defined]
                     d["generation"], len(d["members"])]])
            return
        if members:
            d = ga.describe(group_id)
            rows = [[group_id, m["member_id"], m["host"], m["client_id"], len(m["assignment"]),
                     ",".join(f"{t}-{p}" for t, p in m["assignment"]) or "-"] for m in d["members"]]
            _table(["GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS", "ASSIGNMENT"], rows)
            return
        d = ga.describe(group_id)
        if d["state"] == "Dead":
            raise FabricError(f"consumer group {group_id!r} does not exist")
        rows = [[r.group, r.topic, r.partition, r.current_offset if r.current_offset >= 0 else None,
                 r.log_end_offset if r.log_end_offset >= 0 else None, r.lag, r.consumer_id, r.host, r.client_id]
                for r in ga.lag(group_id)]
        if d["state"] in ("Empty",):
            click.echo(f"Consumer group '{group_id}' has no active members.")
        _table(["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST",
                "CLIENT-ID"], rows)
    finally:
        admin.close()  # type: ignore[attr-defined]


def _parse_datetime_ms(text: str) -> int:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use ISO 8601, e.g. 2024-05-01T12:00:00 (UTC unless an offset is given)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


@group.command("reset-offsets")
@click.argument("group_id")
@click.option("--topic", required=True, help="the topic whose committed offsets to reset")
@click.option("--to-earliest", is_flag=True, help="each partition's log start offset")
@click.option("--to-latest", is_flag=True, help="each partition's log end offset")
@click.option("--to-offset", type=int, default=None, help="this offset on every partition")
@click.option("--to-datetime", default=None, help="first offset at or after this ISO 8601 time")
@click.option("--shift-by", type=int, default=None, help="move the committed offsets by N (negative: back); refused, with nothing "
              "changed, when a partition of the topic has no committed offset")
@click.option("--execute", is_flag=True, help="apply the plan (without it: a dry run that prints it)")
@target_options
def reset_cmd(group_id: str, topic: str, to_earliest: bool, to_latest: bool, to_offset: int | None,
              to_datetime: str | None, shift_by: int | None, execute: bool, config: str | None,
              bootstrap: str | None) -> None:
    """Plan (and with --execute apply) new committed offsets for a group with no active members."""
    ga, admin = _groups(config, bootstrap)
    try:
        d = ga.describe(group_id)
        if d["members"]:
            n = len(d["members"])
            raise FabricError(f"consumer group {group_id!r} has {n} active member{'s' * (n != 1)}: "
                              "offsets can only be reset while the group is empty")
        when = _parse_datetime_ms(to_datetime) if to_datetime is not None else None
        plan = ga.plan_reset(group_id, topic, to_earliest=to_earliest, to_latest=to_latest, to_offset=to_offset,
                             to_datetime_ms=when, shift_by=shift_by, leader_wait_ms=RESET_LEADER_WAIT_MS)
        _table(["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"],
               [[group_id, t, p, cur if cur >= 0 else None, new] for (t, p), (cur, new) in sorted(plan.items())])
        asked = {tp: to_offset if to_offset is not None else cur + shift_by  # a shift: every cur was committed
                 for tp, (cur, _new) in plan.items() if to_offset is not None or shift_by is not None}
        clamped = sorted(tp for tp, want in asked.items() if plan[tp][1] != want)
        if clamped:  # as Kafka's tool warns: the offset asked for is outside the log
            click.echo(f"Note: partition{'s' * (len(clamped) != 1)} {', '.join(str(p) for _t, p in clamped)}: the "
                       "offset asked for is outside the log, set to its start or end instead.")
        if execute:
            ga.execute_reset(group_id, plan)
            click.echo(f"Reset {len(plan)} partitions of {topic} for group {group_id}.")
        else:
            click.echo("Dry run: nothing changed. Add --execute to apply.")
    finally:
        admin.close()  # type: ignore[attr-defined]


@group.command("delete")
@click.argument("group_id")
@target_options
def delete_cmd(group_id: str, config: str | None, bootstrap: str | None) -> None:
    """Delete a group without active members, with its committed offsets."""
    ga, admin = _groups(config, bootstrap)
    try:
        ga.delete(group_id)
    finally:
        admin.close()  # type: ignore[attr-defined]
    click.echo(f"Deleted consumer group {group_id}.")


COMMANDS = [group]
