"""The fabric's errors and the typed errors clients see.

Every error here derives from ``LoomError`` (``engines.errors``), the one root of Loom's
operating errors; ``ConfigError``, ``EngineError`` and ``BatchError`` sit under it too.

``RemoteError`` carries a code from ``fabric.protocol``'s error table; ``retriable`` says
whether a client may refresh metadata and try again. Constructing ``RemoteError(code, …)``
gives the subclass registered for that code (``NotLeaderError`` for ``NOT_LEADER``, …), so
callers can catch the common cases by type and everything else by ``.code``.

``ClientError`` is the other kind of coded error: a condition the client library finds itself,
without a node's answer (its buffer is full, a record is over its limit, a request got no reply
in time or its peer is down, a delivery or a flush timed out, a topic is not in its metadata). It is not a ``RemoteError``; it carries the
protocol code of the condition so that a service hosting the client (the producer and consumer
services) relays it to its own caller unchanged on the wire. ``CodedError`` is the common base
of both: catch it to relay any error that has a code.
"""

from __future__ import annotations

import errno
import os
from typing import Any, ClassVar

from engines.errors import LoomError
from fabric import protocol as P

__all__ = ["LoomError", "FabricError", "MalformedFrame", "CodedError", "RemoteError", "RequestTimeout",
           "ClientError", "BufferExhaustedError", "RecordSizeExceededError", "ClientTimeoutError",
           "DeliveryTimeoutError", "TopicNotInMetadataError", "RequestQueueFullError", "SubscriptionConflictError",
           "ConnectionLost", "ConnectFailed", "ConnectionRefused", "PeerUnreachable", "connect_failed",
           "NoCommittedOffsetError", "MAY_HAVE_BEEN_WRITTEN"]


class FabricError(LoomError):
    """Root of every error raised by the fabric and the client library."""


# said after the message of a record's failure when a send of it may be in a log
MAY_HAVE_BEEN_WRITTEN = "; an earlier send of it may have been written"


class ProducerClosedError(FabricError):
    """The producer was closed before the batch was acknowledged. ``possibly_written``: an
    earlier send of it may be in the log (a request in flight, or one whose outcome was never
    known), so sending the records again may store them twice."""

    def __init__(self, possibly_written: bool = False) -> None:
        super().__init__("producer closed" + (MAY_HAVE_BEEN_WRITTEN if possibly_written else ""))
        self.possibly_written = possibly_written


class NoCommittedOffsetError(FabricError):
    """A reset by shift asked of partitions where the group has no committed offset to shift
    from (Kafka's tool refuses it too). ``partitions``: those (topic, partition), sorted; no
    offset was changed, of them or of any other partition."""

    def __init__(self, group: str, partitions: list[tuple[str, int]]) -> None:
        self.group = group
        self.partitions = sorted(partitions)
        names = ", ".join(f"{t}-{p}" for t, p in self.partitions)
        super().__init__(f"cannot shift the offsets of group {group!r}: no committed offset for partition"
                         f"{'s' * (len(self.partitions) != 1)} {names} (give those a committed offset first, "
                         "with a reset to the earliest, the latest, an offset or a time)")


class MalformedFrame(FabricError):
    """A peer sent frames that do not follow the wire rules (dropped and counted)."""

    def __init__(self, code: int, message: str, request: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.request = request  # the decoded request when the fault was found after decoding


class CodedError(FabricError):
    """An error with a code from the protocol's error table (``.code``, ``.message``), found by
    a node (``RemoteError``) or by the client library itself (``ClientError``)."""

    code: int
    message: str
    # whether the request this error ends may have reached the peer (and been carried out):
    # False only for a request refused before it was sent (RequestQueueFullError)
    may_have_arrived: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return P.error_name(self.code)

    @property
    def retriable(self) -> bool:
        return self.code in P.RETRIABLE


class RemoteError(CodedError):
    """A node answered a request with an error (``code`` from the protocol's error table)."""

    _by_code: ClassVar[dict[int, type["RemoteError"]]] = {}
    code_for_class: ClassVar[int | None] = None  # set on the subclasses registered per code

    def __new__(cls, code: int = P.UNKNOWN, message: str = "", **details: Any) -> "RemoteError":
        if cls is RemoteError:
            cls = RemoteError._by_code.get(code, RemoteError)
        return super().__new__(cls)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.code_for_class is not None:
            RemoteError._by_code[cls.code_for_class] = cls

    def __init__(self, code: int = P.UNKNOWN, message: str = "", **details: Any) -> None:
        self.code = code
        self.message = message or P.error_name(code)
        self.details = details
        super().__init__(f"{P.error_name(code)}: {self.message}")

    def __reduce__(self) -> tuple:
        return (type(self), (self.code, self.message), {"details": self.details})


def _coded(name: str, code: int, doc: str) -> type[RemoteError]:
    return type(name, (RemoteError,), {"code_for_class": code, "__doc__": doc, "__module__": __name__})


# The codes an application most often handles by type; the rest are RemoteError with .code.
NotLeaderError = _coded("NotLeaderError", P.NOT_LEADER, "The broker does not lead that partition (refresh metadata and retry).")
NotEnoughReplicasError = _coded("NotEnoughReplicasError", P.NOT_ENOUGH_REPLICAS,
                                "acks=all and the ISR is smaller than min.insync.replicas; nothing was written.")
FencedLeaderEpochError = _coded("FencedLeaderEpochError", P.FENCED_LEADER_EPOCH, "A leader epoch older than the peer's.")
UnknownTopicOrPartitionError = _coded("UnknownTopicOrPartitionError", P.UNKNOWN_TOPIC_OR_PARTITION,
                                      "No such topic or partition (or not on that broker).")
TopicAlreadyExistsError = _coded("TopicAlreadyExistsError", P.TOPIC_ALREADY_EXISTS, "A topic of that name exists.")
RecordTooLargeError = _coded("RecordTooLargeError", P.RECORD_TOO_LARGE, "A record or batch over the size limit.")
OffsetOutOfRangeError = _coded("OffsetOutOfRangeError", P.OFFSET_OUT_OF_RANGE, "The offset is outside the log.")
OutOfOrderSequenceError = _coded("OutOfOrderSequenceError", P.OUT_OF_ORDER_SEQUENCE,
                                 "An idempotent producer's sequence skipped ahead.")
UnknownProducerIdError = _coded("UnknownProducerIdError", P.UNKNOWN_PRODUCER_ID,
                                "A retried batch reached a broker that no longer holds the idempotent producer's "
                                "state: it may or may not have been written before, and was not written again.")
BufferFullError = _coded("BufferFullError", P.BUFFER_FULL, "The producer's buffer stayed full past max_block_ms.")
IllegalGenerationError = _coded("IllegalGenerationError", P.ILLEGAL_GENERATION, "A consumer-group generation that is not current.")
UnknownMemberError = _coded("UnknownMemberError", P.UNKNOWN_MEMBER, "The group does not know that member.")
RebalanceInProgressError = _coded("RebalanceInProgressError", P.REBALANCE_IN_PROGRESS, "The group is rebalancing.")

__all__ += [c.__name__ for c in RemoteError._by_code.values()]


class ClientError(CodedError):
    """A condition the client library found itself (nothing was asked of a node). Subclasses
    fix ``code_for_class``; ``message`` says what happened."""

    code_for_class: ClassVar[int] = P.UNKNOWN

    def __init__(self, message: str, code: int | None = None) -> None:
        self.code = self.code_for_class if code is None else code
        self.message = message
        super().__init__(f"{P.error_name(self.code)}: {message}")

    def __reduce__(self) -> tuple:
        return (type(self), (self.message, self.code))


class BufferExhaustedError(ClientError):
    """The producer's buffer stayed full for ``max_block_ms`` (code ``buffer_full``)."""

    code_for_class = P.BUFFER_FULL


class RecordSizeExceededError(ClientError):
    """A record is over the producer's ``record_bytes_max`` (code ``record_too_large``)."""

    code_for_class = P.RECORD_TOO_LARGE


class ClientTimeoutError(ClientError, TimeoutError):
    """A wait in the client (``flush``, a future's ``result``, ``exception`` or ``outcomes``)
    ended before the outcome was known; the records may still be delivered (code
    ``request_timed_out``). Also a ``TimeoutError``, which ``concurrent.futures`` futures raise
    for the same wait, so ``except TimeoutError`` catches either."""

    code_for_class = P.REQUEST_TIMED_OUT


class DeliveryTimeoutError(ClientError):
    """A batch was not acknowledged within ``delivery_timeout_ms``. ``code`` is that of the last
    retriable error it got (``not_enough_replicas``, ``not_leader``…), else ``request_timed_out``;
    ``last_error`` is that error, if any; ``possibly_written``: an earlier send of it may be in
    the log (it was sent and its outcome never known, or it was written and then refused), so
    sending the records again may store them twice."""

    code_for_class = P.REQUEST_TIMED_OUT

    def __init__(self, message: str, code: int | None = None, last_error: RemoteError | None = None,
                 possibly_written: bool = False) -> None:
        super().__init__(message, code)
        self.last_error = last_error
        self.possibly_written = possibly_written


class LeadershipMoved(ClientError):
    """A request in flight ended by the producer itself: newer metadata names another leader
    for one of its partitions (or the same at a newer epoch), so its answer would not be useful
    (code ``not_leader``, retriable). Nothing refused it: its batches go again at once, not
    after a retry backoff. It may have been carried out (its retries are recognised by their
    sequence numbers)."""

    code_for_class = P.NOT_LEADER


class RequestTimeout(ClientError):
    """No reply arrived before the deadline, or the caller gave up waiting because the peer is
    down (code ``request_timed_out``, retriable). Found by the client, not answered by a node:
    the request may or may not have been carried out. Catch ``CodedError`` to handle it with
    the nodes' answers."""

    code_for_class = P.REQUEST_TIMED_OUT

    def __init__(self, message: str = "request timed out", code: int | None = None) -> None:
        super().__init__(message, code)


class ConnectionLost(RequestTimeout):
    """The connection the request went out on ended before its reply came (the peer was
    killed with the request, which it took along): found at once, not at the deadline. Like
    any ``RequestTimeout``, the request may or may not have been carried out."""


class ConnectFailed(RequestTimeout):
    """No connection to the peer could be made while the request waited for one: the last
    connect failed with ``reason`` (the errno's name: ECONNREFUSED, EHOSTUNREACH...). Found at
    once, not at the deadline; it says nothing of how long the peer stays out of reach. Like any
    ``RequestTimeout``, retriable; the request was most likely never delivered (it may still go
    out on the next connection), so a caller treats it as any other "no answer". The two kinds,
    told apart by type and in the message: ``ConnectionRefused`` and ``PeerUnreachable``."""

    def __init__(self, message: str = "connect failed", code: int | None = None, reason: str = "") -> None:
        super().__init__(message, code)
        self.reason = reason

    def __reduce__(self) -> tuple:
        return (type(self), (self.message, self.code, self.reason))


class ConnectionRefused(ConnectFailed):
    """The peer's port refused the connect (ECONNREFUSED: its host is up and nothing listens
    there: the node is dead or not yet started)."""


class PeerUnreachable(ConnectFailed):
    """The peer's host could not be reached (EHOSTUNREACH, ENETUNREACH, ETIMEDOUT: the
    kernel's connect timeout, ...): down, cut off, or no route to it now -- whether a node
    listens there is unknown."""


# connect errnos that say the host (not only its port) is out of reach now
UNREACHABLE_ERRNOS = frozenset(getattr(errno, name) for name in (
    "EHOSTUNREACH", "ENETUNREACH", "ETIMEDOUT", "EHOSTDOWN", "ENETDOWN", "EADDRNOTAVAIL") if hasattr(errno, name))


def connect_failed(endpoint: str, code: int) -> ConnectFailed:
    """The error of a request that waited for a connect to ``endpoint`` that failed with errno
    ``code``: ``ConnectionRefused`` for ECONNREFUSED, ``PeerUnreachable`` for the errnos of a
    host out of reach (``UNREACHABLE_ERRNOS``), else a ``ConnectFailed``; the message names
    the errno either way."""
    reason = errno.errorcode.get(code, f"errno {code}")
    why = f"{reason}: {os.strerror(code)}" if code in errno.errorcode else reason
    if code == errno.ECONNREFUSED:
        return ConnectionRefused(f"{endpoint} refused the connection ({why}): nothing listens there", reason=reason)
    if code in UNREACHABLE_ERRNOS:
        return PeerUnreachable(f"{endpoint} cannot be reached ({why})", reason=reason)
    return ConnectFailed(f"cannot connect to {endpoint} ({why})", reason=reason)


class GaveUp(RequestTimeout):
    """The caller stopped waiting before the deadline because its ``give_up()`` said the peer
    is down (a health watcher's view, which may be wrong for a moment: a lost health PING):
    unlike a deadline's timeout, nothing says the peer is slow, and it may answer again at once.
    Like any ``RequestTimeout``, the request may or may not have been carried out."""


class RequestQueueFullError(ClientError):
    """A request was not sent: too many in flight on one connection, or its send queue is full
    (code ``buffer_full``, retriable)."""

    code_for_class = P.BUFFER_FULL
    may_have_arrived = False


class TopicNotInMetadataError(ClientError):
    """The topic (or the partition) is not in the client's metadata, even after a refresh
    (code ``unknown_topic_or_partition``)."""

    code_for_class = P.UNKNOWN_TOPIC_OR_PARTITION


class SubscriptionConflictError(ClientError):
    """A group consumer asked to ``subscribe`` while it has partitions ``assign``ed, or the
    other way round (code ``subscription_conflict``): as Kafka's consumer, it reads one way at
    a time, and ``unsubscribe()`` ends either. Nothing changed."""

    code_for_class = P.SUBSCRIPTION_CONFLICT
