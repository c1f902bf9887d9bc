"""Admin, shaped like Confluent's v3 API: clusters, topics (create, PATCH partitions_count,
delete), partitions with leader/replicas/ISR/offsets, configs, brokers, consumer groups with
members, lags, lag summary and offset reset (dry run or execute)."""

from __future__ import annotations

from typing import Any

from fabric.protocol import INTERNAL_TOPIC_PREFIX
from webui import schemas as S
from webui.context import Gateway
from webui.errors import ApiError
from webui.spec import Api

JSON = "application/json"


def _list(kind: str, items: dict) -> dict:
    return {"type": "object", "required": ["kind", "data"],
            "properties": {"kind": {"const": kind}, "data": {"type": "array", "items": items}}}


C = "/v3/clusters/{cluster_id}"


def register(api: Api, gw: Gateway) -> None:
    cluster_path = {"cluster_id": api.schema("ClusterId", S.NAME)}
    _cluster_ops(api, gw, cluster_path)
    _topic_ops(api, gw, cluster_path)
    _partition_ops(api, gw, cluster_path)
    _broker_ops(api, gw, cluster_path)
    _group_ops(api, gw, cluster_path)
    _reset_ops(api, gw, cluster_path)


def _check_cluster(gw: Gateway, cluster_id: str) -> None:
    if cluster_id != gw.cluster_id:
        raise ApiError(40404, f"no cluster {cluster_id!r} (this is {gw.cluster_id!r})")


def _cluster_ops(api: Api, gw: Gateway, cluster_path: dict) -> None:
    cluster_s = api.schema("ClusterV3", {"type": "object", "required": ["kind", "cluster_id", "coordinator", "brokers_count"],
                                         "properties": {"kind": {"const": "KafkaCluster"}, "cluster_id": {"type": "string"},
                                                        "coordinator": {"type": "string"}, "brokers_count": {"type": "integer"}}})

    @api.op("GET", "/v3/clusters", role="read", tag="v3", summary="The cluster", response=_list("KafkaClusterList", cluster_s))
    def clusters() -> dict:
        return {"kind": "KafkaClusterList", "data": [cluster(gw.cluster_id)]}

    @api.op("GET", C, role="read", tag="v3", summary="One cluster", path_params=cluster_path, response=cluster_s)
    def cluster(cluster_id: str) -> dict:
        _check_cluster(gw, cluster_id)
        md = gw.agent.metadata()
        return {"kind": "KafkaCluster", "cluster_id": gw.cluster_id, "coordinator": "coordinator",
                "brokers_count": len(md.brokers)}


def _topic_ops(api: Api, gw: Gateway, cluster_path: dict) -> None:
    topic_path = {**cluster_path, "topic_name": {"$ref": "#/components/schemas/TopicName"}}
    topic_s = api.schema("TopicV3", {"type": "object", "required": ["kind", "cluster_id", "topic_name", "is_internal",
                                                                    "replication_factor", "partitions_count"],
                                     "properties": {"kind": {"const": "KafkaTopic"}, "cluster_id": {"type": "string"},
                                                    "topic_name": {"type": "string"}, "is_internal": {"type": "boolean"},
                                                    "replication_factor": {"type": "integer"},
                                                    "partitions_count": {"type": "integer"}}})

    def topic_v3(t: Any) -> dict:
        return {"kind": "KafkaTopic", "cluster_id": gw.cluster_id, "topic_name": t.name,
                "is_internal": t.name.startswith(INTERNAL_TOPIC_PREFIX),
                "replication_factor": len(t.partitions[0].replicas) if t.partitions else 0,
                "partitions_count": len(t.partitions)}

    @api.op("GET", C + "/topics", role="read", tag="v3", summary="List topics", path_params=cluster_path,
            response=_list("KafkaTopicList", topic_s))
    def topics(cluster_id: str) -> dict:
        _check_cluster(gw, cluster_id)
        md = gw.agent.metadata()
        return {"kind": "KafkaTopicList", "data": [topic_v3(t) for n, t in sorted(md.topics.items()) if not n.startswith(INTERNAL_TOPIC_PREFIX)]}

    create_schema = {"type": "object", "required": ["topic_name"], "properties": {
        "topic_name": {"$ref": "#/components/schemas/TopicName"},
        "partitions_count": S.PARTITIONS_COUNT,
        "replication_factor": {"type": "integer", "minimum": 1, "maximum": 16},
        "configs": {"type": "array", "maxItems": 20, "items": {"type": "object", "required": ["name", "value"], "properties": {
            "name": {"type": "string", "enum": S.TOPIC_CONFIGS}, "value": {"type": "string", "maxLength": 64}}}}}}

    @api.op("POST", C + "/topics", role="admin", tag="v3", summary="Create a topic", path_params=cluster_path,
            body={JSON: api.schema("CreateTopicV3", create_schema)}, response=topic_s, status=201, errors=(40902,),
            description="Bad partition counts, replication factors or config values get 422 (42204).")
    def create_topic(cluster_id: str, body: dict, content_type: str) -> dict:
        _check_cluster(gw, cluster_id)
        name = body["topic_name"]
        if name.startswith(INTERNAL_TOPIC_PREFIX):
            raise ApiError(42204, "topic names starting with '__' are reserved for internal topics")
        gw.agent.create_topic(name, body.get("partitions_count"), body.get("replication_factor"),
                              {x["name"]: x["value"] for x in body.get("configs") or []})
        return topic_v3(gw.agent.topic(name))

    @api.op("GET", C + "/topics/{topic_name}", role="read", tag="v3", summary="Describe a topic",
            path_params=topic_path, response=topic_s, errors=(40401,))
    def get_topic(cluster_id: str, topic_name: str) -> dict:
        _check_cluster(gw, cluster_id)
        return topic_v3(gw.agent.topic(topic_name))

    @api.op("PATCH", C + "/topics/{topic_name}", role="admin", tag="v3", summary="Add partitions",
            path_params=topic_path, errors=(40401,), response=topic_s,
            body={JSON: {"type": "object", "required": ["partitions_count"], "properties": {
                "partitions_count": S.PARTITIONS_COUNT}}},
            description="partitions_count must be larger than today's count (else 422, 42204).")
    def patch_topic(cluster_id: str, topic_name: str, body: dict, content_type: str) -> dict:
        _check_cluster(gw, cluster_id)
        gw.agent.topic(topic_name)
        gw.agent.alter_topic(topic_name, partitions=body["partitions_count"])
        return topic_v3(gw.agent.topic(topic_name))

    @api.op("DELETE", C + "/topics/{topic_name}", role="admin", tag="v3", summary="Delete a topic",
            path_params=topic_path, errors=(40401,))
    def delete_topic(cluster_id: str, topic_name: str) -> None:
        _check_cluster(gw, cluster_id)
        gw.agent.topic(topic_name)
        gw.agent.delete_topic(topic_name)



def _partition_ops(api: Api, gw: Gateway, cluster_path: dict) -> None:
    topic_path = {**cluster_path, "topic_name": {"$ref": "#/components/schemas/TopicName"}}
    part_path = {**topic_path, "partition_id": {"$ref": "#/components/schemas/PartitionId"}}
    replica = {"type": "object", "required": ["broker_id", "is_leader", "is_in_sync"], "properties": {
        "broker_id": {"type": "integer"}, "is_leader": {"type": "boolean"}, "is_in_sync": {"type": "boolean"}}}
    part_s = api.schema("PartitionV3", {"type": "object", "required": [
        "kind", "topic_name", "partition_id", "leader", "leader_epoch", "replicas", "isr", "under_replicated",
        "log_start_offset", "high_watermark", "end_offset"], "properties": {
        "kind": {"const": "KafkaPartition"}, "topic_name": {"type": "string"}, "partition_id": {"type": "integer"},
        "leader": {"type": ["object", "null"], "properties": {"broker_id": {"type": "integer"}}},
        "leader_epoch": {"type": "integer"}, "replicas": {"type": "array", "items": replica},
        "isr": {"type": "array", "items": {"type": "integer"}}, "under_replicated": {"type": "boolean"},
        "log_start_offset": {"type": "integer"}, "high_watermark": {"type": "integer"}, "end_offset": {"type": "integer"}}})
    config_s = api.schema("ConfigV3", {"type": "object", "required": ["name", "value"], "properties": {
        "name": {"type": "string"}, "value": {"type": ["string", "null"]}}})

    def partitions_v3(topic_name: str) -> list[dict]:
        t = gw.agent.topic(topic_name)
        offsets = gw.agent.offsets(topic_name, partial=True)  # -1 for a partition whose leader is not known
        out = []
        for p in t.partitions:
            start, hw = offsets.get(p.partition, (-1, -1))
            out.append({"kind": "KafkaPartition", "topic_name": topic_name, "partition_id": p.partition,
                        "leader": {"broker_id": p.leader} if p.leader >= 0 else None, "leader_epoch": p.leader_epoch,
                        "replicas": [{"broker_id": b, "is_leader": b == p.leader, "is_in_sync": b in p.isr} for b in p.replicas],
                        "isr": list(p.isr), "under_replicated": p.under_replicated,
                        "log_start_offset": start, "high_watermark": hw, "end_offset": hw})
        return out

    @api.op("GET", C + "/topics/{topic_name}/partitions", role="read", tag="v3",
            summary="Partitions: leader, replicas, ISR, log start offset, high watermark", path_params=topic_path,
            response=_list("KafkaPartitionList", part_s), errors=(40401,))
    def partitions(cluster_id: str, topic_name: str) -> dict:
        _check_cluster(gw, cluster_id)
        return {"kind": "KafkaPartitionList", "data": partitions_v3(topic_name)}

    @api.op("GET", C + "/topics/{topic_name}/partitions/{partition_id}", role="read", tag="v3",
            summary="One partition", path_params=part_path, response=part_s, errors=(40401, 40402))
    def partition(cluster_id: str, topic_name: str, partition_id: int) -> dict:
        _check_cluster(gw, cluster_id)
        parts = partitions_v3(topic_name)
        if partition_id >= len(parts):
            raise ApiError(40402, f"topic {topic_name!r} has no partition {partition_id}")
        return parts[partition_id]

    @api.op("GET", C + "/topics/{topic_name}/configs", role="read", tag="v3", summary="A topic's configs",
            path_params=topic_path, response=_list("KafkaTopicConfigList", config_s), errors=(40401,))
    def configs(cluster_id: str, topic_name: str) -> dict:
        _check_cluster(gw, cluster_id)
        t = gw.agent.topic(topic_name)
        return {"kind": "KafkaTopicConfigList",
                "data": [{"name": k, "value": None if v is None else str(v)} for k, v in sorted(t.configs.items())]}


def _broker_ops(api: Api, gw: Gateway, cluster_path: dict) -> None:
    broker_s = api.schema("BrokerV3", {"type": "object", "required": ["kind", "broker_id", "host", "port", "alive"],
                                       "properties": {"kind": {"const": "KafkaBroker"}, "broker_id": {"type": "integer"},
                                                      "host": {"type": "string"}, "port": {"type": "integer"},
                                                      "alive": {"type": "boolean"},
                                                      "engine": {"type": "string"},
                                                      "fsync": {"enum": ["always", "interval", "never"]},
                                                      "fsync_interval_ms": {"type": "integer"}}})

    @api.op("GET", C + "/brokers", role="read", tag="v3", summary="Brokers and their liveness", path_params=cluster_path,
            response=_list("KafkaBrokerList", broker_s))
    def brokers(cluster_id: str) -> dict:
        _check_cluster(gw, cluster_id)
        md = gw.agent.metadata()
        return {"kind": "KafkaBrokerList", "data": [{"kind": "KafkaBroker", "broker_id": b.broker_id, "host": b.host,
                                                     "port": b.port, "alive": b.alive, **gw.broker_storage.get(b.broker_id, {})}
                                                    for _, b in sorted(md.brokers.items())]}


def _group_ops(api: Api, gw: Gateway, cluster_path: dict) -> None:
    group_path = {**cluster_path, "group_name": {"$ref": "#/components/schemas/GroupName"}}
    member_s = {"type": "object", "required": ["consumer_id", "client_id", "host", "assignments"], "properties": {
        "consumer_id": {"type": "string"}, "client_id": {"type": "string"}, "host": {"type": "string"},
        "assignments": {"type": "array", "items": {"type": "object", "properties": {
            "topic_name": {"type": "string"}, "partition_id": {"type": "integer"}}}}}}
    group_s = api.schema("ConsumerGroupV3", {"type": "object", "required": ["kind", "consumer_group_id", "state"],
                                             "properties": {"kind": {"const": "KafkaConsumerGroup"},
                                                            "consumer_group_id": {"type": "string"},
                                                            "state": {"type": "string"}, "generation": {"type": "integer"},
                                                            "assignor": {"type": "string"}, "members_count": {"type": "integer"},
                                                            "members": {"type": "array", "items": member_s}}})
    lag_s = api.schema("ConsumerLagV3", {"type": "object", "required": [
        "topic_name", "partition_id", "current_offset", "log_end_offset", "lag", "consumer_id"], "properties": {
        "topic_name": {"type": "string"}, "partition_id": {"type": "integer"}, "current_offset": {"type": "integer"},
        "log_end_offset": {"type": "integer"}, "lag": {"type": ["integer", "null"]}, "consumer_id": {"type": "string"},
        "client_id": {"type": "string"}, "host": {"type": "string"}}})

    def group_v3(d: dict, members: bool) -> dict:
        out = {"kind": "KafkaConsumerGroup", "consumer_group_id": d["group"], "state": d["state"],
               "generation": d.get("generation", -1), "assignor": d.get("assignor") or ""}
        if members:
            out["members"] = [{"consumer_id": m["member_id"], "client_id": m.get("client_id", ""), "host": m.get("host", ""),
                               "assignments": [{"topic_name": t, "partition_id": p} for t, p in m.get("assignment", [])]}
                              for m in d.get("members", [])]
            out["members_count"] = len(out["members"])
        else:
            out["members_count"] = d.get("members", 0)
        return out

    @api.op("GET", C + "/consumer-groups", role="read", tag="v3", summary="Consumer groups", path_params=cluster_path,
            response=_list("KafkaConsumerGroupList", group_s))
    def groups(cluster_id: str) -> dict:
        _check_cluster(gw, cluster_id)
        return {"kind": "KafkaConsumerGroupList", "data": [group_v3(d, False) for d in gw.agent.list_groups()]}

    @api.op("GET", C + "/consumer-groups/{group_name}", role="read", tag="v3",
            summary="A group with its members and their assignments", path_params=group_path, response=group_s,
            errors=(40405,))
    def group(cluster_id: str, group_name: str) -> dict:
        _check_cluster(gw, cluster_id)
        return group_v3(gw.agent.describe_group(group_name), True)

    def lags(group_name: str) -> list[dict]:
        return [{"topic_name": r.topic, "partition_id": r.partition, "current_offset": r.current_offset,
                 "log_end_offset": r.log_end_offset, "lag": r.lag, "consumer_id": r.consumer_id,
                 "client_id": r.client_id, "host": r.host} for r in gw.agent.group_lag(group_name)]

    @api.op("GET", C + "/consumer-groups/{group_name}/lags", role="read", tag="v3",
            summary="Per partition: committed offset, log end offset (high watermark), lag", path_params=group_path,
            response=_list("KafkaConsumerLagList", lag_s), errors=(40405,))
    def group_lags(cluster_id: str, group_name: str) -> dict:
        _check_cluster(gw, cluster_id)
        return {"kind": "KafkaConsumerLagList", "data": lags(group_name)}

    @api.op("GET", C + "/consumer-groups/{group_name}/lag-summary", role="read", tag="v3",
            summary="Total and largest lag of a group", path_params=group_path, errors=(40405,),
            response={"type": "object", "required": ["kind", "consumer_group_id", "total_lag", "max_lag"], "properties": {
                "kind": {"const": "KafkaConsumerGroupLagSummary"}, "consumer_group_id": {"type": "string"},
                "total_lag": {"type": "integer"}, "max_lag": {"type": "integer"},
                "max_lag_topic_name": {"type": ["string", "null"]}, "max_lag_partition_id": {"type": ["integer", "null"]}}})
    def lag_summary(cluster_id: str, group_name: str) -> dict:
        _check_cluster(gw, cluster_id)
        rows = [r for r in lags(group_name) if r["lag"] is not None]
        top = max(rows, key=lambda r: r["lag"], default=None)
        return {"kind": "KafkaConsumerGroupLagSummary", "consumer_group_id": group_name,
                "total_lag": sum(r["lag"] for r in rows), "max_lag": top["lag"] if top else 0,
                "max_lag_topic_name": top["topic_name"] if top else None,
                "max_lag_partition_id": top["partition_id"] if top else None}



def _reset_ops(api: Api, gw: Gateway, cluster_path: dict) -> None:
    group_path = {**cluster_path, "group_name": {"$ref": "#/components/schemas/GroupName"}}
    reset_schema = {"type": "object", "required": ["topic_name", "to"], "properties": {
        "topic_name": {"$ref": "#/components/schemas/TopicName"},
        "to": {"type": "string", "enum": ["earliest", "latest", "offset", "timestamp", "shift"]},
        "offset": {"type": "integer", "minimum": 0, "maximum": 2 ** 62},
        "timestamp_ms": {"type": "integer", "minimum": 0, "maximum": 2 ** 62},
        "shift_by": {"type": "integer", "minimum": -2 ** 62, "maximum": 2 ** 62},
        "execute": {"type": "boolean"}},
        "allOf": [{"if": {"properties": {"to": {"const": t}}}, "then": {"required": [f]}}
                  for t, f in (("offset", "offset"), ("timestamp", "timestamp_ms"), ("shift", "shift_by"))]}

    @api.op("POST", C + "/consumer-groups/{group_name}/reset-offsets", role="admin", tag="v3",
            summary="Reset a group's committed offsets for a topic (dry run unless execute is true)",
            description="Like `loom group reset-offsets`: new offsets are clamped to each partition's log start and "
                        "end; executing needs a group without active members (409, 40903). `shift` moves committed "
                        "offsets: when a partition of the topic has none the whole reset is refused, nothing changed, "
                        "with the partitions named (422, 42205), as Kafka's tool refuses it.",
            path_params=group_path, errors=(40401, 40903, 42205),
            body={JSON: api.schema("ResetOffsetsV3", reset_schema)},
            response={"type": "object", "required": ["executed", "data"], "properties": {
                "executed": {"type": "boolean"}, "data": {"type": "array", "items": {"type": "object", "properties": {
                    "topic_name": {"type": "string"}, "partition_id": {"type": "integer"},
                    "current_offset": {"type": "integer", "description": "-1: the group has no committed offset"},
                    "new_offset": {"type": "integer"}}}}}})
    def reset(cluster_id: str, group_name: str, body: dict, content_type: str) -> dict:
        _check_cluster(gw, cluster_id)
        to = body["to"]
        target = {"earliest": {"to_earliest": True}, "latest": {"to_latest": True},
                  "offset": {"to_offset": body.get("offset")}, "timestamp": {"to_datetime_ms": body.get("timestamp_ms")},
                  "shift": {"shift_by": body.get("shift_by")}}[to]
        plan = gw.agent.reset_offsets(group_name, body["topic_name"], bool(body.get("execute")), **target)
        return {"executed": bool(body.get("execute")),
                "data": [{"topic_name": t, "partition_id": p, "current_offset": cur, "new_offset": new}
                         for (t, p), (cur, new) in sorted(plan.items())]}
