"""The gateway's errors: ``{"error_code": status*100+n, "message": ...}`` as Confluent's REST
Proxy answers them, and the error the cluster agent raises (``ClusterError``).

Thread-safe (constants and exception classes).
"""

from __future__ import annotations

import json
from typing import Any

from fabric.errors import LoomError

# error_code -> (HTTP status, what it means); status*100+n as Confluent's REST Proxy
CODES: dict[int, str] = {
    40001: "malformed request (the body is not JSON)",
    40002: "invalid name in the path (too long, or characters outside [A-Za-z0-9._-]; a group's: any but '/', not '.' or '..', in UTF-8)",
    40101: "no valid API key",
    40301: "the API key lacks the role this route needs",
    40401: "topic not found",
    40402: "partition not found",
    40403: "consumer instance not found",
    40404: "not found",
    40405: "consumer group not found",
    40501: "method not allowed",
    40801: "the cluster did not answer in time",
    40802: "the request did not arrive in time (nothing of it was carried out)",
    40901: "consumer instance already exists",
    40902: "topic already exists",
    40903: "the consumer group has active members",
    40904: "the consumer instance is subscribed or assigned: unsubscribe first",
    40905: "the consumer group rebalanced: fetch records again, then commit",
    41301: "request body too large",
    41501: "unsupported content type",
    42201: "invalid key",
    42202: "invalid value",
    42203: "invalid consumer configuration",
    42204: "invalid request body",
    42205: "invalid partition or offset",
    42206: "invalid parameter",
    42901: "rate limit exceeded",
    50001: "internal error",
    50002: "error in the cluster",
    50301: "a cluster service is unavailable",
    # a produce the producer service took and did not answer (it died, restarted, hung): its
    # records may be in the log; 50301 means nothing was sent (503 either way: a 408 is one
    # that browsers send again by themselves)
    50302: "the cluster did not answer: the request may have been carried out",
}


class ApiError(LoomError):
    """An HTTP error answered as JSON. ``headers`` are added to the response."""

    def __init__(self, error_code: int, message: str | None = None, headers: dict[str, str] | None = None) -> None:
        assert error_code in CODES, error_code
        self.error_code = error_code
        self.status = error_code // 100
        self.message = message or CODES[error_code]
        self.headers = headers or {}
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return {"error_code": self.error_code, "message": self.message}

    def body_bytes(self) -> bytes:
        """The answer's body, as every route writes it."""
        return json.dumps(self.body()).encode()


# ClusterError.kind -> error_code
KIND_CODES: dict[str, int] = {
    "topic_not_found": 40401, "partition_not_found": 40402, "instance_not_found": 40403,
    "group_not_found": 40405, "instance_exists": 40901, "topic_exists": 40902, "group_not_empty": 40903,
    "subscription_conflict": 40904, "rebalance": 40905,
    "invalid": 42204, "invalid_config": 42203, "invalid_offset": 42205, "timeout": 40801,
    "unavailable": 50301, "outcome_unknown": 50302, "cluster": 50002,
}


class ClusterError(LoomError):
    """What the cluster agent raises: a ``kind`` of KIND_CODES and a message for the client;
    ``code``: the protocol error code (``fabric.protocol``) of the node's answer it stands for
    (several codes share a kind), None when no node answered with one."""

    def __init__(self, kind: str, message: str, code: int | None = None) -> None:
        assert kind in KIND_CODES, kind
        self.kind = kind
        self.message = message
        self.code = code
        super().__init__(f"{kind}: {message}")

    def to_api(self) -> ApiError:
        return ApiError(KIND_CODES[self.kind], self.message)
