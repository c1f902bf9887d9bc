"""Consumer instances, Confluent REST Proxy v2: an instance lives on a consumer service
(the agent keeps it alive there, or moves it when its service dies)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from flask import request

from webui import schemas as S
from webui.context import Gateway
from webui.errors import ApiError, ClusterError
from webui.routes_v2 import check_partitions, records_json
from webui.spec import Api

V2 = "application/vnd.kafka.v2+json"
FETCH_TIMEOUT_MS_MAX = 30_000
FETCH_RECORDS_MAX = 5000
FETCH_BYTES_MAX = 512 * 1024   # the documented maximum of max_bytes (openapi.json)

CREATE_SCHEMA = {"type": "object", "properties": {
    "name": S.NAME, "format": {"type": "string", "enum": ["binary", "json"]},
    "auto.offset.reset": {"type": "string", "enum": ["earliest", "latest"]},
    "auto.commit.enable": {"type": "string", "enum": ["true", "false"]},
    "fetch.min.bytes": {"type": "string", "pattern": "^[0-9]{1,9}$"},
    "consumer.request.timeout.ms": {"type": "string", "pattern": "^[0-9]{1,6}$"},
    # Loom's: how soon the group notices this instance is gone (default 10 s)
    "session.timeout.ms": {"type": "string", "pattern": "^[1-9][0-9]{2,5}$"}}}


BASE = "/consumers/{group_name}/instances/{instance}"
INSTANCE_ERRORS = (40403,)


@dataclass(frozen=True)
class _Shapes:
    """The path parameters and bodies the routes share."""
    group_path: dict
    inst_path: dict
    tps: dict          # {partitions: [{topic, partition}]}
    tpos: dict         # {offsets: [{topic, partition, offset}]}
    offsets_out: dict
    seeks: dict


def _body_types(schema: dict) -> dict:
    return {V2: schema, "application/json": schema}


def register(api: Api, gw: Gateway) -> None:
    group_path = {"group_name": api.schema("GroupName", S.GROUP_NAME)}
    sh = _Shapes(
        group_path=group_path,
        inst_path={**group_path, "instance": api.schema("InstanceName", S.NAME)},
        tps={"type": "object", "required": ["partitions"], "properties": {
            "partitions": {"type": "array", "minItems": 1, "maxItems": 10_000,
                           "items": api.schema("TopicPartition", S.TOPIC_PARTITION)}}},
        tpos={"type": "object", "required": ["offsets"], "properties": {
            "offsets": {"type": "array", "maxItems": 10_000,
                        "items": api.schema("TopicPartitionOffset", S.TOPIC_PARTITION_OFFSET)}}},
        offsets_out={"type": "object", "required": ["offsets"], "properties": {"offsets": {"type": "array", "items": {
            "type": "object", "required": ["topic", "partition", "offset", "metadata"],
            "properties": {"topic": {"type": "string"}, "partition": {"type": "integer"}, "offset": {"type": "integer"},
                           "metadata": {"type": "string"},
                           "topic_id": {"type": "string", "description": "the id of the topic a committed offset is "
                                                                         "of (where one is committed)"}}}}}},
        seeks={"type": "object", "required": ["offsets"], "properties": {
            "offsets": {"type": "array", "maxItems": 10_000, "items": api.schema("SeekOffset", S.SEEK_OFFSET)}}})
    _instance_ops(api, gw, sh)
    _record_ops(api, gw, sh)
    _position_ops(api, gw, sh)


def _call(gw: Gateway, group: str, inst: str, fn: Any) -> Any:
    return gw.agent.call_instance(group, inst, fn)


@contextmanager
def _mode_conflict_for_rest(group: str, inst: str, has: str) -> Iterator[None]:
    """The 409 (40904, kind ``subscription_conflict``) of the call inside said for a REST client:
    the consumer's own message advises the library's ``unsubscribe()``, which a REST client has
    no call for; it is told the request to send."""
    try:
        yield
    except ClusterError as e:
        if e.kind != "subscription_conflict":
            raise
        path = f"/consumers/{quote(group, safe='')}/instances/{quote(inst, safe='')}/subscription"
        raise ClusterError(e.kind, f"consumer instance {inst!r} of group {group!r} {has}; a subscription and "
                                   f"assigned partitions are mutually exclusive: unsubscribe first with DELETE {path} "
                                   "(with auto-commit it commits their positions)", e.code) from e


def _instance_ops(api: Api, gw: Gateway, sh: _Shapes) -> None:
    """Create and delete an instance; its subscription or assigned partitions."""
    @api.op("POST", "/consumers/{group_name}", role="consume", tag="consumers", summary="Create a consumer instance",
            path_params=sh.group_path, body=_body_types(api.schema("CreateConsumer", CREATE_SCHEMA)),
            response={"type": "object", "required": ["instance_id", "base_uri"],
                      "properties": {"instance_id": {"type": "string"}, "base_uri": {"type": "string"}}},
            errors=(40901,), body_error=42203)
    def create(group_name: str, body: dict, content_type: str) -> dict:
        config: dict[str, Any] = {"auto_offset_reset": body.get("auto.offset.reset", "latest")}
        if "auto.commit.enable" in body:
            config["enable_auto_commit"] = body["auto.commit.enable"] == "true"
        if "session.timeout.ms" in body:
            config["session_timeout_ms"] = int(body["session.timeout.ms"])
        entry = gw.agent.create_instance(group_name, body.get("name"), config, body.get("format", "binary"))
        return {"instance_id": entry.name,
                "base_uri": f"{request.host_url.rstrip('/')}/consumers/{quote(group_name, safe='')}/instances/"
                            f"{quote(entry.name, safe='')}"}

    @api.op("DELETE", BASE, role="consume", tag="consumers", summary="Delete a consumer instance (leaves its group)",
            path_params=sh.inst_path, errors=INSTANCE_ERRORS)
    def delete(group_name: str, instance: str) -> None:
        gw.agent.delete_instance(group_name, instance)

    @api.op("POST", BASE + "/subscription", role="consume", tag="consumers", summary="Subscribe to topics",
            path_params=sh.inst_path, errors=(40401, 40403, 40904),
            description="An instance with assigned partitions answers 409 (40904) and keeps them: "
                        "unsubscribe first (DELETE …/subscription commits their positions with auto-commit).",
            body=_body_types({"type": "object", "required": ["topics"], "properties": {
                "topics": {"type": "array", "minItems": 1, "maxItems": 1000, "items": S.NAME}}}))
    def subscribe(group_name: str, instance: str, body: dict, content_type: str) -> None:
        with _mode_conflict_for_rest(group_name, instance, "reads assigned partitions"):
            gw.agent.subscribe(group_name, instance, sorted(set(body["topics"])))

    @api.op("GET", BASE + "/subscription", role="consume", tag="consumers", summary="The subscribed topics",
            path_params=sh.inst_path, errors=INSTANCE_ERRORS,
            response={"type": "object", "required": ["topics"],
                      "properties": {"topics": {"type": "array", "items": {"type": "string"}}}})
    def subscription(group_name: str, instance: str) -> dict:
        return {"topics": _call(gw, group_name, instance, lambda h: h.subscription())}

    @api.op("DELETE", BASE + "/subscription", role="consume", tag="consumers",
            summary="Unsubscribe, or give up the assigned partitions", path_params=sh.inst_path, errors=INSTANCE_ERRORS,
            description="With auto-commit, the positions are committed first (up to what the client has "
                        "confirmed by coming back); then the instance may subscribe or be assigned partitions.")
    def unsubscribe(group_name: str, instance: str) -> None:
        gw.agent.subscribe(group_name, instance, [])

    @api.op("POST", BASE + "/assignments", role="consume", tag="consumers",
            summary="Read exactly these partitions (instead of a subscription)", path_params=sh.inst_path,
            errors=(40401, 40402, 40403, 40904), body=_body_types(sh.tps),
            description="An instance with a subscription answers 409 (40904) and keeps it: unsubscribe first. "
                        "Partitions already assigned keep their positions, new ones start at the group's "
                        "committed offsets; with auto-commit, those left out are committed first.")
    def assign(group_name: str, instance: str, body: dict, content_type: str) -> None:
        with _mode_conflict_for_rest(group_name, instance, "is subscribed"):
            gw.agent.assign(group_name, instance, sorted({(x["topic"], x["partition"]) for x in body["partitions"]}))

    @api.op("GET", BASE + "/assignments", role="consume", tag="consumers",
            summary="The partitions the group assigned to this instance", path_params=sh.inst_path, errors=INSTANCE_ERRORS,
            response={"type": "object", "required": ["partitions"], "properties": {
                "partitions": {"type": "array", "items": {"$ref": "#/components/schemas/TopicPartition"}}}})
    def assignments(group_name: str, instance: str) -> dict:
        parts = _call(gw, group_name, instance, lambda h: h.assignment())
        return {"partitions": [{"topic": t, "partition": p} for t, p in parts]}


def _record_ops(api: Api, gw: Gateway, sh: _Shapes) -> None:
    """Fetch records, commit offsets, read the committed ones."""
    @api.op("GET", BASE + "/records", role="consume", tag="consumers",
            summary="Fetch records (the positions advance)", path_params=sh.inst_path, errors=INSTANCE_ERRORS,
            description="Waits up to `timeout` ms (default 1000) for records, unless the gateway's long-poll "
                        "budget is taken: then it answers at once with the records there (maybe none; poll again). "
                        "A fetch whose answer the gateway did not get from the consumer service (answered "
                        "503) leaves the positions where it began: the instance's next request puts them back, "
                        "so the retry gets the same records (at-least-once) and no commit covers them before. "
                        "One fetch of an instance at a time: a parallel one waits up to 5 s, then 408.",
            query={"timeout": {"type": "integer", "minimum": 0, "maximum": FETCH_TIMEOUT_MS_MAX},
                   "max_bytes": {"type": "integer", "minimum": 1, "maximum": FETCH_BYTES_MAX}},
            response={"type": "array", "items": {"$ref": "#/components/schemas/Record"}})
    def records(group_name: str, instance: str, query: dict) -> list[dict]:
        entry = gw.agent.instance(group_name, instance)
        with gw.long_polls.wait_ms(query.get("timeout", 1000)) as timeout_ms:  # over the budget: no wait
            got = _call(gw, group_name, instance, lambda h: h.fetch(timeout_ms=timeout_ms,
                                                               max_bytes=query.get("max_bytes", FETCH_BYTES_MAX),
                                                               max_records=FETCH_RECORDS_MAX))
        return records_json(got, entry.fmt)

    @api.op("POST", BASE + "/offsets", role="consume", tag="consumers",
            summary="Commit offsets (each the last record processed; without offsets: everything fetched)",
            path_params=sh.inst_path, errors=(40401, 40402, 40403, 40905, 42205),
            description="Without a body, or without offsets in it, everything fetched is committed.",
            body=_body_types({"type": "object", "properties": {"offsets": sh.tpos["properties"]["offsets"]}}),
            body_required=False)
    def commit(group_name: str, instance: str, body: dict | None, content_type: str | None) -> None:
        offsets = (body or {}).get("offsets")
        if not offsets:
            _call(gw, group_name, instance, lambda h: h.commit())
            return
        wanted = {(o["topic"], o["partition"]): o["offset"] + 1 for o in offsets}  # o: the last record processed
        try:
            _call(gw, group_name, instance, lambda h: h.commit(wanted))
        except ClusterError as e:
            if e.kind == "topic_not_found":  # the cluster's unknown_topic_or_partition: say which it lacks
                check_partitions(gw.agent.metadata(), wanted)
            raise

    @api.op("GET", BASE + "/offsets", role="consume", tag="consumers",
            summary="Committed offsets (next offset to read; -1: none) of the partitions in the body "
                    "(Confluent's {partitions: [{topic, partition}]}), or without one of the assigned partitions",
            path_params=sh.inst_path, errors=INSTANCE_ERRORS, response=sh.offsets_out, body=_body_types(sh.tps),
            body_required=False)
    def committed(group_name: str, instance: str, body: dict | None, content_type: str | None) -> dict:
        asked = None if body is None else [(p["topic"], p["partition"]) for p in body["partitions"]]
        got, ids = _call(gw, group_name, instance, lambda h: h.committed_with_topic_ids(asked))
        out = []
        for (t, p), o in sorted(got.items()):
            entry = {"topic": t, "partition": p, "offset": o, "metadata": ""}
            if o >= 0 and t in ids:
                entry["topic_id"] = ids[t]
            out.append(entry)
        return {"offsets": out}


def _position_ops(api: Api, gw: Gateway, sh: _Shapes) -> None:
    """Seek, read the positions, seek to either end."""
    @api.op("POST", BASE + "/positions", role="consume", tag="consumers", summary="Seek to offsets",
            path_params=sh.inst_path, errors=(40401, 40403, 42205), body=_body_types(sh.seeks),
            description="An entry may name the `topic_id` its offset is of (as GET …/offsets answers it): an "
                        "id of a topic deleted since -- made again under its name -- is refused 404 (40401) "
                        "and nothing is sought, instead of taking the old topic's offset for the new topic. A "
                        "partition named twice takes its last entry (its offset with its own `topic_id`, or none).")
    def seek(group_name: str, instance: str, body: dict, content_type: str) -> None:
        # a partition named twice takes its last entry, as a commit's body does: its offset with its
        # own topic_id (or none) -- never an earlier entry's id with a later entry's offset
        last = {(o["topic"], o["partition"]): o for o in body["offsets"]}
        offsets = {tp: o["offset"] for tp, o in last.items()}
        ids = {tp: o["topic_id"] for tp, o in last.items() if "topic_id" in o}
        _call(gw, group_name, instance, lambda h: h.seek(offsets, ids or None))

    @api.op("GET", BASE + "/positions", role="consume", tag="consumers",
            summary="Current positions (next offset to fetch; -1: not known yet)", path_params=sh.inst_path,
            errors=INSTANCE_ERRORS, response=sh.offsets_out)
    def positions(group_name: str, instance: str) -> dict:
        got = _call(gw, group_name, instance, lambda h: h.positions())
        return {"offsets": [{"topic": t, "partition": p, "offset": o, "metadata": ""} for (t, p), o in sorted(got.items())]}

    for where in ("beginning", "end"):
        def seek_edge(group_name: str, instance: str, body: dict, content_type: str, where: str = where) -> None:
            tps_ = [(x["topic"], x["partition"]) for x in body["partitions"]]
            if not tps_:
                raise ApiError(42205, "partitions must name at least one partition")
            _call(gw, group_name, instance, lambda h: h.seek_to_beginning(tps_) if where == "beginning" else h.seek_to_end(tps_))
        api.op("POST", f"{BASE}/positions/{where}", role="consume", tag="consumers",
               summary=f"Seek partitions to their {where}", path_params=sh.inst_path, errors=(40403, 42205),
               body=_body_types(sh.tps))(seek_edge)
