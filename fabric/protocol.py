"""Every wire constant of Loom in one place: version, commands, error codes, limits.

A request on a DEALER socket is ``[b"", VERSION, command, header, payload...]``; a ROUTER sees
the peer identity in front. ``header`` is a msgpack map that always has ``id`` (the request
id, unique per client socket). The reply is ``[b"", VERSION, REPLY, header, payload...]`` with
the same ``id`` and either the result fields or ``error`` (a code below) and ``message``.
Payload frames (record batches) travel as raw bytes, never inside msgpack.

PUB/SUB messages are ``[topic-prefix, VERSION, kind, header, payload...]``.
"""

from __future__ import annotations

VERSION = b"\x01"

# -- request commands (ROUTER/DEALER) --------------------------------------------------------
REPLY = b"REPLY"
PING = b"PING"                    # any node: liveness + role + stats
METADATA = b"METADATA"            # coordinator or broker: cluster metadata
CREATE_TOPIC = b"CREATE_TOPIC"    # coordinator
DELETE_TOPIC = b"DELETE_TOPIC"    # coordinator
ALTER_TOPIC = b"ALTER_TOPIC"      # coordinator: add partitions, change configs
# leader -> coordinator: shrink/expand the ISRs of many partitions in one request (Kafka's
# AlterPartition); header {broker_id, parts: [{topic, partition, leader_epoch, partition_epoch,
# isr}]}, reply {parts: [{topic, partition, error, message, leader, leader_epoch,
# partition_epoch, isr}]}: see nodes/coordinator/alter_isr.py
ALTER_ISR = b"ALTER_ISR"
BROKER_REGISTER = b"REGISTER"     # broker -> coordinator at start: my id and process incarnation
PRODUCE = b"PRODUCE"              # broker; header {acks, timeout_ms, parts, topic_ids?, internal?}
# a PRODUCE part is [topic, partition, leader_epoch, flags] (nodes/broker/messages.py); its flags:
PART_POSSIBLY_WRITTEN = 1  # an earlier send of the batch may be in a log
PART_FOLLOWS = 2           # the batch follows another of its partition the client has had no answer
                           # for: a broker that does not know its producer refuses it out of order
FETCH = b"FETCH"                  # broker: consumers and follower replicas
LIST_OFFSETS = b"LIST_OFFSETS"    # broker
INIT_PRODUCER_ID = b"INIT_PID"    # coordinator: allocate an idempotent producer id
STATS = b"STATS"                  # any node: metrics snapshot
# consumer groups (coordinator); see nodes/coordinator/groups.py for the header shapes
JOIN_GROUP = b"JOIN_GROUP"
SYNC_GROUP = b"SYNC_GROUP"
HEARTBEAT = b"HEARTBEAT"
LEAVE_GROUP = b"LEAVE_GROUP"
OFFSET_COMMIT = b"OFFSET_COMMIT"
OFFSET_FETCH = b"OFFSET_FETCH"
LIST_GROUPS = b"LIST_GROUPS"
DESCRIBE_GROUPS = b"DESCRIBE_GROUPS"
DELETE_GROUP = b"DELETE_GROUP"
# producer service (nodes/producer.py)
SERVICE_PRODUCE = b"SVC_PRODUCE"
# consumer services (nodes/consumer.py): instances hosted for the gateway
CONSUMER_CREATE = b"CI_CREATE"
CONSUMER_SUBSCRIBE = b"CI_SUBSCRIBE"
CONSUMER_SUBSCRIPTION = b"CI_SUBSCRIPTION"
CONSUMER_FETCH = b"CI_FETCH"
CONSUMER_COMMIT = b"CI_COMMIT"
CONSUMER_COMMITTED = b"CI_COMMITTED"
CONSUMER_SEEK = b"CI_SEEK"
CONSUMER_ASSIGNMENT = b"CI_ASSIGNMENT"
CONSUMER_ASSIGN = b"CI_ASSIGN"    # explicit partitions instead of a subscription
CONSUMER_DELETE = b"CI_DELETE"
CONSUMER_LIST = b"CI_LIST"
REPLICA_ACK = b"REPLICA_ACK"      # follower -> leader, one-way (no reply): my log end offset
FAULTS = b"FAULTS"                # any node, test configs only: set fault-injection rules
# monitor (nodes/monitor/): health, history, alerts, events, Prometheus text
MONITOR_STATUS = b"MON_STATUS"
MONITOR_HISTORY = b"MON_HISTORY"
MONITOR_ALERTS = b"MON_ALERTS"
MONITOR_EVENTS = b"MON_EVENTS"
MONITOR_METRICS = b"MON_METRICS"  # reply payload: the Prometheus text exposition
# supervisor control socket (nodes/launcher.py), ipc:// under the data dir: local only
SUPERVISOR_STATUS = b"SUP_STATUS"
SUPERVISOR_RESTART = b"SUP_RESTART"
SUPERVISOR_START = b"SUP_START"

# -- PUB/SUB kinds ---------------------------------------------------------------------------
PUB_HEARTBEAT = b"HB"           # topic b"hb"; header {node, role, ts_ms, ...}
PUB_METADATA = b"MD"            # topic b"md"; header = full metadata (coordinator)
# topic b"md"; header = a MetadataDelta (fabric/metadata.py) from base_version to version,
# published at every commit; a subscriber not at base_version asks for a snapshot (METADATA)
PUB_METADATA_DELTA = b"MDD"
# topic b"md"; header {version}: published periodically so that a subscriber that missed a
# delta notices the gap and asks for a snapshot
PUB_METADATA_VERSION = b"MDV"
PUB_REPLICA = b"RB"             # topic b"r/<topic>/<partition>"; payload = batches
# topic REPLICA_HEARTBEAT_TOPIC; header {node, parts: [[topic, partition, leader_epoch, hw, leo],
# ...]}: a leader's idle heartbeat for many partitions at once (those whose state changed since
# the last one, and every partition it leads once per REPLICA_HEARTBEAT_FULL_INTERVAL_MS)
PUB_REPLICA_HEARTBEAT = b"RH"
REPLICA_HEARTBEAT_TOPIC = b"rh|"
TOPIC_HEARTBEAT = b"hb"
TOPIC_METADATA = b"md"
PUB_EVENT = b"EV"               # topic b"ev" (monitor): an alert, health or recovery event
PUB_STATUS = b"ST"              # topic b"st" (monitor): the cluster's health, once per check
TOPIC_EVENT = b"ev"
TOPIC_STATUS = b"st"


def replica_topic(topic: str, partition: int) -> bytes:
    """PUB prefix for one partition's replication stream (terminated so p1 != p10)."""
    return f"r/{topic}/{partition}|".encode()


# -- error codes: one table --------------------------------------------------------------------
NONE = 0
UNKNOWN = 1
MALFORMED_REQUEST = 2
UNSUPPORTED_VERSION = 3
UNKNOWN_COMMAND = 4
REQUEST_TOO_LARGE = 5
UNKNOWN_TOPIC_OR_PARTITION = 10
TOPIC_ALREADY_EXISTS = 11
INVALID_TOPIC = 12
INVALID_PARTITIONS = 13
INVALID_REPLICATION_FACTOR = 14
INVALID_CONFIG = 15
NOT_LEADER = 20
NOT_ENOUGH_REPLICAS = 21
NOT_ENOUGH_REPLICAS_AFTER_APPEND = 22
FENCED_LEADER_EPOCH = 23
UNKNOWN_LEADER_EPOCH = 24
NOT_COORDINATOR = 25
LEADER_NOT_AVAILABLE = 26
STALE_ISR = 27                   # ALTER_ISR computed from an older partition state: refresh, recompute
INVALID_ISR = 28                 # ALTER_ISR leaves out the leader or adds a broker that is not alive
UNKNOWN_BROKER = 29              # a broker id that is not in the cluster config
RECORD_TOO_LARGE = 30
CORRUPT_MESSAGE = 31
OFFSET_OUT_OF_RANGE = 32
INVALID_RECORD = 33
OFFSET_NOT_AVAILABLE = 34           # a new leader whose HW has not reached its epoch start yet (KIP-207)
OUT_OF_ORDER_SEQUENCE = 40
DUPLICATE_SEQUENCE = 41
INVALID_PRODUCER_EPOCH = 42
UNKNOWN_PRODUCER_ID = 43
REQUEST_TIMED_OUT = 50
STORAGE_ERROR = 51
BUFFER_FULL = 52
THROTTLED = 53
UNKNOWN_GROUP = 60
ILLEGAL_GENERATION = 61
UNKNOWN_MEMBER = 62
REBALANCE_IN_PROGRESS = 63
INVALID_COMMIT_OFFSET = 64
PARTITION_NOT_ASSIGNED = 65      # a commit for a partition the member does not own
NON_EMPTY_GROUP = 66             # reset/delete needs a group without active members
INCONSISTENT_GROUP_PROTOCOL = 67  # a member asks for another assignor than the group's
UNKNOWN_CONSUMER_INSTANCE = 68   # consumer service: no such instance (expired or never made)
CONSUMER_INSTANCE_EXISTS = 69
UNSTABLE_OFFSET_COMMIT = 70      # OFFSET_FETCH while a commit of that partition is being written
SUBSCRIPTION_CONFLICT = 71       # a consumer subscribed and assigned at once (Kafka's IllegalStateException)
INCONSISTENT_CLUSTER_ID = 80     # a broker that belongs to another cluster (its meta.properties)
STALE_BROKER_EPOCH = 84          # a broker process that a restart of the same broker replaced
DUPLICATE_BROKER_REGISTRATION = 85  # another live process is this broker (from another data directory)
                                 # (81-83 are the supervisor's, below)
# a request names a topic by an id that is not its topic's now (Kafka's code, KIP-516): the topic
# was deleted (and perhaps made again under its name) since the id was learned. An OFFSET_COMMIT
# so refused is refused for good: its offsets were read in a topic that is gone
UNKNOWN_TOPIC_ID = 100

ERROR_NAMES: dict[int, str] = {
    NONE: "none", UNKNOWN: "unknown", MALFORMED_REQUEST: "malformed_request",
    UNSUPPORTED_VERSION: "unsupported_version", UNKNOWN_COMMAND: "unknown_command",
    REQUEST_TOO_LARGE: "request_too_large",
    UNKNOWN_TOPIC_OR_PARTITION: "unknown_topic_or_partition",
    TOPIC_ALREADY_EXISTS: "topic_already_exists", INVALID_TOPIC: "invalid_topic",
    INVALID_PARTITIONS: "invalid_partitions",
    INVALID_REPLICATION_FACTOR: "invalid_replication_factor", INVALID_CONFIG: "invalid_config",
    NOT_LEADER: "not_leader", NOT_ENOUGH_REPLICAS: "not_enough_replicas",
    NOT_ENOUGH_REPLICAS_AFTER_APPEND: "not_enough_replicas_after_append",
    FENCED_LEADER_EPOCH: "fenced_leader_epoch", UNKNOWN_LEADER_EPOCH: "unknown_leader_epoch",
    NOT_COORDINATOR: "not_coordinator", LEADER_NOT_AVAILABLE: "leader_not_available",
    STALE_ISR: "stale_isr",
    INVALID_ISR: "invalid_isr", UNKNOWN_BROKER: "unknown_broker",
    RECORD_TOO_LARGE: "record_too_large", CORRUPT_MESSAGE: "corrupt_message",
    OFFSET_OUT_OF_RANGE: "offset_out_of_range", INVALID_RECORD: "invalid_record",
    OFFSET_NOT_AVAILABLE: "offset_not_available",
    OUT_OF_ORDER_SEQUENCE: "out_of_order_sequence", DUPLICATE_SEQUENCE: "duplicate_sequence",
    INVALID_PRODUCER_EPOCH: "invalid_producer_epoch", UNKNOWN_PRODUCER_ID: "unknown_producer_id",
    REQUEST_TIMED_OUT: "request_timed_out", STORAGE_ERROR: "storage_error",
    BUFFER_FULL: "buffer_full", THROTTLED: "throttled",
    UNKNOWN_GROUP: "unknown_group", ILLEGAL_GENERATION: "illegal_generation",
    UNKNOWN_MEMBER: "unknown_member", REBALANCE_IN_PROGRESS: "rebalance_in_progress",
    INVALID_COMMIT_OFFSET: "invalid_commit_offset",
    PARTITION_NOT_ASSIGNED: "partition_not_assigned", NON_EMPTY_GROUP: "non_empty_group",
    INCONSISTENT_GROUP_PROTOCOL: "inconsistent_group_protocol",
    UNKNOWN_CONSUMER_INSTANCE: "unknown_consumer_instance",
    CONSUMER_INSTANCE_EXISTS: "consumer_instance_exists",
    UNSTABLE_OFFSET_COMMIT: "unstable_offset_commit", SUBSCRIPTION_CONFLICT: "subscription_conflict",
}
ERROR_NAMES[INCONSISTENT_CLUSTER_ID] = "inconsistent_cluster_id"
ERROR_NAMES[STALE_BROKER_EPOCH] = "stale_broker_epoch"
ERROR_NAMES[DUPLICATE_BROKER_REGISTRATION] = "duplicate_broker_registration"
ERROR_NAMES[UNKNOWN_TOPIC_ID] = "unknown_topic_id"
# the supervisor's control socket (SUPERVISOR_RESTART): why it restarts nothing
UNKNOWN_NODE = 81                # no such node among the supervisor's children
NODE_GIVEN_UP = 82               # the supervisor gave up on the node (crash loop)
NODE_NOT_RUNNING = 83            # not running (or not as the pid asked about): nothing to restart
NODE_RUNNING = 86                # SUPERVISOR_START of a node that runs: nothing to start
ERROR_NAMES.update({UNKNOWN_NODE: "unknown_node", NODE_GIVEN_UP: "node_given_up",
                    NODE_NOT_RUNNING: "node_not_running", NODE_RUNNING: "node_running"})

# Errors after which a client refreshes metadata and retries (the write was not applied).
RETRIABLE = frozenset({
    NOT_LEADER, LEADER_NOT_AVAILABLE, NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT,
    FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH, NOT_COORDINATOR, UNKNOWN_TOPIC_OR_PARTITION,
    NOT_ENOUGH_REPLICAS_AFTER_APPEND, BUFFER_FULL, THROTTLED, UNSTABLE_OFFSET_COMMIT, OFFSET_NOT_AVAILABLE,
})

# -- limits: every bound of the fabric, named once -------------------------------------------
FRAMES_MAX = 4 + 1024                 # identity + delimiter + version/command/header + payloads
HEADER_BYTES_MAX = 1024 * 1024        # msgpack header frame
MSGPACK_ARRAY_LEN_MAX = 100_000
MSGPACK_MAP_LEN_MAX = 100_000
REQUEST_BYTES_MAX = 64 * 1024 * 1024  # sum of all frames of one request
DRAIN_MESSAGES_MAX = 512              # messages read from one socket per reactor pass
# replication-stream messages a follower appends per reactor pass: each is an engine append
# (up to ~1 MB); between them the broker answers its own clients and runs its per-pass hooks
REPLICATION_DRAIN_MESSAGES_MAX = 8
TIMERS_MAX = 10_000
# per broker, its latest processes that restarts replaced, kept by the coordinator (stored, and
# listed in the metadata) and by each leader: a dead process's messages are late by seconds, so a
# few restarts' worth is plenty
REPLACED_PROCESSES_KEPT = 8
IN_FLIGHT_REQUESTS_MAX = 1024         # per RPC client socket
PARKED_REQUESTS_MAX = 10_000          # long-poll fetches / acks=all produces waiting on a broker
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 5000
SNDHWM = 10_000
RCVHWM = 10_000
# Frames smaller than this are copied on send; larger ones go zero-copy. pyzmq's default (64 KiB)
# sends every ~100 KB record batch zero-copy, and each such frame costs a round trip through
# pyzmq's Python garbage-collector thread (GIL time) that is dearer than the copy.
ZERO_COPY_BYTES_MIN = 4 * 1024 * 1024
# The request port assembles each frame at least this large in a buffer of its own and hands
# that buffer on (fabric/buffers.py's OwnedFrame): no copy after reassembly, and the leader
# stamps a produced batch in place. Smaller frames (commands, headers) are bytes.
OWNED_FRAME_BYTES_MIN = 1024
# On a request port (ZMTP over a STREAM socket, fabric.zmtp) a reply frame this large (a
# fetch's batches, up to a partition's 4 MiB) is written as it is, zero-copy, not joined with
# the rest of the reply: one such round trip per reply, not per batch.
REPLY_ZERO_COPY_BYTES_MIN = 256 * 1024
TOPIC_NAME_LEN_MAX = 249
# Topics named so are the cluster's own (``__consumer_offsets``): made by the coordinator, never
# over the wire, and written only by it -- a PRODUCE to one is refused (``invalid_topic``) unless
# its header says ``internal: true``, which only the coordinator's offsets client sends (Kafka's
# "cannot append to internal topic"); reading one is allowed
INTERNAL_TOPIC_PREFIX = "__"
PARTITIONS_MAX = 10_000
LEADER_EPOCH_MAX = 2 ** 31 - 1        # a record batch header's leader epoch is a signed 32-bit field
NO_LEADER_EPOCH = -1                  # a committed offset whose record before it is of an epoch not known
ALTER_ISR_PARTITIONS_MAX = 2000       # ISR changes in one ALTER_ISR request
REPLICA_HEARTBEAT_PARTITIONS_MAX = 5000  # partitions in one replica heartbeat message
HEARTBEATS_DRAIN_MAX = 4096           # heartbeats the coordinator reads before a liveness verdict
GROUPS_MAX = 10_000                   # consumer groups one coordinator holds
GROUP_MEMBERS_MAX = 1000              # members of one group
MEMBERS_MAX = 100_000                 # members (and member ids handed out) of all groups together
SUBSCRIBED_TOPICS_MAX = 1_000_000     # topic names all members subscribe to, together (~250 MB at most)
GROUP_ID_LEN_MAX = 249
PENDING_COMMITS_MAX = 10_000          # offset commits waiting for their replicated append
PENDING_COMMIT_BYTES_MAX = 64 * 1024 * 1024  # their entries' bytes (topic, metadata and a fixed cost)
SERVICE_RECORDS_PER_REQUEST_MAX = 10_000
HISTORY_POINTS_MAX = 1000             # monitor history: one point per second, 16.7 minutes
HISTORY_SERIES_MAX = 2000             # series the monitor keeps history for
EVENTS_MAX = 1000                     # monitor and supervisor event logs (oldest dropped)
ALERT_HISTORY_MAX = 1000              # resolved alerts kept (and persisted) by the monitor
WEBHOOK_QUEUE_MAX = 1000              # alert notifications waiting per webhook (oldest dropped)
MONITORED_GROUPS_MAX = 1000           # consumer groups whose lag the monitor tracks


def error_name(code: int) -> str:
    return ERROR_NAMES.get(code, f"error_{code}")
