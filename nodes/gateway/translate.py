"""Fabric errors as the gateway's ``webui.errors.ClusterError``: the error codes the cluster
answers (``fabric.protocol``) mapped to the kinds the app turns into HTTP answers
(``webui.errors.KIND_CODES``), and ``translated``, the one place that maps them.

Pure; thread-safe.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from fabric import protocol as P
from fabric.errors import FabricError, NoCommittedOffsetError, RemoteError, RequestTimeout
from webui.errors import ClusterError

KINDS = {
    P.UNKNOWN_TOPIC_OR_PARTITION: "topic_not_found", P.TOPIC_ALREADY_EXISTS: "topic_exists",
    # a commit of positions read in a topic deleted (and perhaps made again under its name) since
    P.UNKNOWN_TOPIC_ID: "topic_not_found",
    P.INVALID_TOPIC: "invalid", P.INVALID_PARTITIONS: "invalid", P.INVALID_REPLICATION_FACTOR: "invalid",
    P.INVALID_CONFIG: "invalid", P.MALFORMED_REQUEST: "invalid", P.INVALID_RECORD: "invalid",
    P.RECORD_TOO_LARGE: "invalid", P.NON_EMPTY_GROUP: "group_not_empty",
    P.UNKNOWN_CONSUMER_INSTANCE: "instance_not_found", P.CONSUMER_INSTANCE_EXISTS: "instance_exists",
    P.PARTITION_NOT_ASSIGNED: "invalid_offset", P.OFFSET_OUT_OF_RANGE: "invalid_offset",
    P.REQUEST_TIMED_OUT: "timeout", P.BUFFER_FULL: "unavailable", P.UNKNOWN_GROUP: "group_not_found",
    # a moment's state of the cluster (a leader being elected, moving, or learning its end)
    P.OFFSET_NOT_AVAILABLE: "unavailable", P.LEADER_NOT_AVAILABLE: "unavailable", P.NOT_LEADER: "unavailable",
    P.SUBSCRIPTION_CONFLICT: "subscription_conflict",
    P.UNKNOWN_MEMBER: "rebalance", P.ILLEGAL_GENERATION: "rebalance", P.REBALANCE_IN_PROGRESS: "rebalance",
}

# a commit the group refused because it moved on: said for a REST client (the library's own
# message tells an application to poll)
REBALANCE_MESSAGE = ("the consumer instance is not a member of its group's current generation (a rebalance, or "
                     "its consumer service restarted): fetch records again, which rejoins, then commit what was "
                     "processed")


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Fabric errors as ClusterError, with ``what`` (the service asked) in timeouts."""
    try:
        yield
    except RequestTimeout as e:
        raise ClusterError("unavailable", f"{what} did not answer: {e.message}") from e
    except RemoteError as e:
        kind = KINDS.get(e.code, "cluster")
        raise ClusterError(kind, f"{e.name}: {REBALANCE_MESSAGE if kind == 'rebalance' else e.message}", e.code) from e
    except NoCommittedOffsetError as e:  # the request's fault, not the cluster's
        raise ClusterError("invalid_offset", str(e)) from e
    except FabricError as e:
        raise ClusterError("unavailable", f"{what}: {e}") from e
