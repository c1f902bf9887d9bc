"""One consumer-group member hosted by a consumer service (``nodes.consumer``): an
``Instance`` is a ``fabric.client.group.GroupConsumer`` and the thread that drives it, taking
the service's requests from a bounded queue and answering through the service's callback; and
the checks of an instance request's header that the service makes on its reactor before it
queues one (``check_op_header``). The requests and the auto-commit rules are described in
``nodes.consumer``.
"""

from __future__ import annotations

import logging
import operator
import os
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, NamedTuple

import zmq

from fabric import protocol as P
from fabric.client.group import GroupConsumer
from fabric.client.services import pack_rows
from fabric.errors import CodedError, FabricError, LoomError, RemoteError, SubscriptionConflictError

log = logging.getLogger(__name__)

# fields of a fabric.records.Record
_TOPIC_PARTITION, _OFFSET = operator.itemgetter(0, 1), operator.itemgetter(2)
COMMANDS_PER_INSTANCE_MAX = 64
FETCH_TIMEOUT_MS_MAX = 30_000
FETCH_RECORDS_MAX = 10_000
FETCH_BYTES_MAX = 16 * 1024 * 1024
MAINTAIN_INTERVAL_S = 0.1          # an idle instance still joins, rebalances and auto-commits
JOIN_MAINTAIN_INTERVAL_S = 0.01    # ... and while it joins, its join's answers are taken up this often


class Framed(NamedTuple):
    """An answer whose records travel in payload frames (CONSUMER_FETCH with ``frame``)."""

    header: dict
    payloads: list[bytes]


Answer = Callable[[dict | Framed | None, RemoteError | None], None]


@dataclass(frozen=True)
class _FetchUndo:
    """What undoes one fetch whose answer may be lost (``Instance._undo_lost_fetch``)."""

    fetch_id: int
    generation: int                                  # of the membership the records came from
    first_offsets: dict[tuple[str, int], int]        # where it began, per partition it returned records of
    auto_commit_bounds: dict[tuple[str, int], int]   # as they were before it


@dataclass(frozen=True)
class InstanceHost:
    """What an instance needs of the service hosting it."""

    node_name: str                # answered to CONSUMER_CREATE
    bootstrap: list[str]          # where its GroupConsumer finds the cluster
    idle_timeout_ms: int          # the default of the instance's idle_timeout_ms
    fail: Callable[[BaseException], None]  # a programmer error on the instance's thread
    # the GroupConsumer's fetch bounds: its share of the service's buffer budget
    # (``nodes.consumer.fetch_limits``)
    fetch_limits: dict[str, int] = field(default_factory=dict)


class Instance(threading.Thread):
    """One hosted group member and the thread that drives it."""

    def __init__(self, host: InstanceHost, group: str, name: str, config: dict, now_ms: int) -> None:
        super().__init__(name=f"loom-instance-{group}-{name}", daemon=True)
        self.host, self.group, self.instance_name, self.config = host, group, name, config
        self.idle_timeout_ms = config.pop("idle_timeout_ms", host.idle_timeout_ms)
        self.owner = config.pop("owner", "")
        self.last_used_ms = now_ms
        self.commands: queue.Queue[tuple[str, dict, Answer] | None] = queue.Queue(COMMANDS_PER_INSTANCE_MAX)
        self.consumer: GroupConsumer | None = None
        self._stop_requested = threading.Event()
        # what a request still queued when the instance stops is answered
        self._refusal = RemoteError(P.UNKNOWN_CONSUMER_INSTANCE, f"instance {name} was closed")
        self._maintain_error: tuple[int, str] | None = None  # the last one logged, until maintain succeeds
        self._last_fetch_id = 0                 # of the last numbered fetch run (``fetch_id``)
        self._undo: _FetchUndo | None = None    # of the last fetch run, until a request settles it

    def submit(self, op: str, header: dict, answer: Answer) -> None:
        try:
            self.commands.put_nowait((op, header, answer))
        except queue.Full:
            raise RemoteError(P.BUFFER_FULL, f"instance {self.instance_name} has {COMMANDS_PER_INSTANCE_MAX} requests waiting") from None

    def run(self) -> None:
        next_maintain = time.monotonic()
        while not self._stop_requested.is_set():
            if time.monotonic() >= next_maintain:  # also when requests keep coming
                self._maintain()
                next_maintain = time.monotonic() + self._maintain_interval_s()
            try:
                item = self.commands.get(timeout=max(0.0, next_maintain - time.monotonic()))
            except queue.Empty:
                continue
            if item is None:
                break
            try:
                if not self._serve(*item):
                    break
            except Exception as e:  # a bug (the headers were checked on the reactor): stop the node
                self.host.fail(e)   # unanswered, and the consumer left as it is: nothing committed
                return
        self._close()
        self._refuse_waiting()

    def _serve(self, op: str, header: dict, answer: Answer) -> bool:
        """Do one request and answer it; False when the thread is to stop (a delete). A bug
        raises."""
        fetch_id = header.get("fetch_id") if op == "fetch" else None
        if fetch_id is not None and fetch_id <= self._last_fetch_id:
            # sent before the last fetch run and taken late (from a connection its caller closed
            # at its timeout): it confirms no answer, and run it would move the positions past
            # records whose answer nobody reads -- the caller, answered for the later one,
            # would never say it was lost
            answer(None, RemoteError(P.REQUEST_TIMED_OUT, f"fetch {fetch_id} came after fetch {self._last_fetch_id}"))
            return True
        if self.consumer is not None and (op != "delete" or "owner" not in header) \
                and header.get("answered", self._last_fetch_id) >= self._last_fetch_id:
            # the client came back, so it has read the answers before this request: auto-commits
            # may now cover their records, as a Kafka consumer's next poll commits what earlier
            # polls returned. (A delete naming its owner is not the client's: it is a gateway
            # reclaiming the instances of a process of its that died, maybe mid-answer. A
            # request whose gateway had no answer to the last fetch run -- lost, or on its way
            # while another thread sent this one -- confirms nothing of it.)
            self.consumer.auto_commit_bounds = {}
        if self.consumer is not None and "lost" in header:  # the gateway's caller lost an answer
            self._undo_lost_fetch(self.consumer, header["answered"], header["lost"])
        budget_ms = header.get("budget_ms") if op == "fetch" else None
        if budget_ms is not None and _waited_ms(header) > budget_ms / 2:
            # the client has given up (or soon will): a fetch now moves the positions past
            # records whose answer nobody reads
            answer(None, RemoteError(P.REQUEST_TIMED_OUT, "the fetch waited too long behind other work"))
            return True
        try:
            answer(self._do(op, header), None)
        except CodedError as e:  # a node's answer, or the client library's own condition
            answer(None, e if isinstance(e, RemoteError) else RemoteError(e.code, e.message))
        except FabricError as e:
            answer(None, RemoteError(P.INVALID_CONFIG, str(e)))
        except LoomError as e:  # an operating error (a corrupt batch…): answered, logged
            log.exception("instance %s/%s: %s failed", self.group, self.instance_name, op)
            answer(None, RemoteError(P.UNKNOWN, f"{type(e).__name__}: {e}"))
        return op != "delete"

    def _refuse_waiting(self) -> None:
        """Answer what was still queued when the instance stopped (instead of never)."""
        while True:
            try:
                item = self.commands.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[2](None, self._refusal)

    def _maintain_interval_s(self) -> float:
        """Until the next ``maintain``: short while the consumer joins (the join goes on
        across calls, each of its steps taken up by one -- JOIN_GROUP twice, SYNC_GROUP, the
        committed offsets, the log start or end: at MAINTAIN_INTERVAL_S an idle instance
        took a second to its first records)."""
        c = self.consumer
        return JOIN_MAINTAIN_INTERVAL_S if c is not None and c.joining else MAINTAIN_INTERVAL_S

    def _maintain(self) -> None:
        if self.consumer is None:
            return
        try:
            self.consumer.maintain()
        except CodedError as e:  # raised by every call until it is cured: logged when it changes
            said = (e.code, str(e))
            if said != self._maintain_error:
                log.warning("instance %s/%s: %s", self.group, self.instance_name, e)
            self._maintain_error = said
        else:
            self._maintain_error = None

    def _close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close()
            except (LoomError, zmq.ZMQError) as e:  # best effort: the session timeout covers the rest
                log.warning("instance %s/%s close: %s", self.group, self.instance_name, e)
            self.consumer = None

    def _do(self, op: str, h: dict) -> dict | Framed:
        if op == "create":
            self.consumer = GroupConsumer(self.host.bootstrap, group_id=self.group, **self.host.fetch_limits,
                                          **self.config)
            # the pid tells the gateway whether a later "unknown instance" comes from a restarted
            # service (another process: make it again) or this one (expired or deleted)
            return {"group": self.group, "instance": self.instance_name, "node": self.host.node_name,
                    "pid": os.getpid()}
        c = self.consumer
        if c is None:
            raise RemoteError(P.UNKNOWN_CONSUMER_INSTANCE, f"instance {self.instance_name} did not start")
        if op == "subscribe":
            topics = h.get("topics")
            if not isinstance(topics, list) or not all(isinstance(t, str) and t for t in topics):
                raise RemoteError(P.MALFORMED_REQUEST, "topics must be a list of topic names")
            c.unsubscribe() if not topics else c.subscribe(topics)
            return {}
        if op == "subscription":
            return {"topics": list(c.subscription)}
        if op == "fetch":
            return self._fetch_answer(c, h)
        if op == "commit":
            offsets = h.get("offsets")
            c.commit({(o[0], o[1]): o[2] for o in offsets} if offsets else None)
            return {}
        if op == "committed":
            tps = [(t, p) for t, p in h.get("partitions") or c.assignment()]
            found, ids = c.committed_with_topic_ids(tps)
            return {"offsets": [[t, p, -1 if found[(t, p)] is None else found[(t, p)]] for t, p in tps],
                    "topic_ids": ids}
        if op == "seek":
            self._seek(c, h)
            self._keep_undo_off(_sought(c, h))
            return {}
        if op == "assignment":
            # joining: a member in a rebalance holds no partition until its join completes -- an
            # empty assignment then is not one that gave its partitions to other members
            return {"partitions": [list(tp) for tp in c.assignment()],
                    "positions": [[t, p, -1 if c.position((t, p)) is None else c.position((t, p))] for t, p in c.assignment()],
                    "joining": c.joining}
        if op == "assign":
            return self._assign(c, h)
        if op == "delete":
            return {}
        raise RemoteError(P.UNKNOWN_COMMAND, f"unknown instance operation {op}")

    def _fetch_answer(self, c: GroupConsumer, h: dict) -> dict | Framed:
        """The answer to a fetch. A numbered one (``fetch_id``, above the last one run:
        ``_serve``) is remembered until a request says whether its answer arrived
        (``_undo_lost_fetch``)."""
        fetch_id = h.get("fetch_id")
        if fetch_id is not None:
            self._last_fetch_id = fetch_id
        self._undo = None  # any fetch moves the positions on from where the last one left them
        bounds = dict(c.auto_commit_bounds)
        records = self._fetch(c, h)
        if records:
            first_offsets = _first_offsets(records)
            if fetch_id is not None:
                self._undo = _FetchUndo(fetch_id, c.generation, first_offsets, bounds)
            if c.enable_auto_commit:  # until the client's next request confirms them
                c.auto_commit_bounds = dict(first_offsets)
        header = {"count": len(records)} if h.get("frame") else {"records": records}
        if h.get("positions"):
            header.update(positions=_positions(c), generation=c.generation, topic_ids=c.position_topic_ids())
        return Framed(header, [pack_rows(records)]) if h.get("frame") else header

    def _undo_lost_fetch(self, c: GroupConsumer, answered: int, lost: int) -> None:
        """The caller's last answered fetch is ``answered``, and fetches up to ``lost`` ended
        without their answer (``fabric.client.fetch_ledger``): if the last fetch run is
        one of those in between, its answer was lost -- seek its partitions back to where it
        began and put the auto-commit bounds back as they were before it, so that its records
        go out again (at-least-once), once. A request sent before that fetch ended (a fetch the
        caller gave up on, taken late) names a lower ``lost``: it undoes nothing. Only within
        the membership it ran in: after a rebalance the positions came from the committed
        offsets (which its bounds kept before its records), and a partition no longer held is
        not touched (``GroupConsumer.give_back``)."""
        undo = self._undo
        if undo is None or not answered < undo.fetch_id <= lost:
            return
        self._undo = None
        if c.generation != undo.generation:
            return
        c.give_back(undo.first_offsets.items())
        held = set(c.assignment())
        c.auto_commit_bounds = {tp: o for tp, o in undo.auto_commit_bounds.items() if tp in held}

    def _keep_undo_off(self, sought: set[tuple[str, int]]) -> None:
        """The client sought these partitions after the last fetch ran (another thread's seek,
        served before that fetch's call ended): undoing the fetch, if its answer turns out
        lost, must not move them back under where the client put them."""
        undo = self._undo
        if undo is not None and sought & undo.first_offsets.keys():
            kept = {tp: o for tp, o in undo.first_offsets.items() if tp not in sought}
            self._undo = replace(undo, first_offsets=kept) if kept else None

    @staticmethod
    def _fetch(c: GroupConsumer, h: dict) -> list:
        """Records (``fabric.records.Record`` rows) of one poll, at most ``max_bytes`` of keys
        and values (at least one record)."""
        timeout_ms = min(max(int(h.get("timeout_ms", 1000)), 0), FETCH_TIMEOUT_MS_MAX)
        max_records = min(max(int(h.get("max_records", 500)), 1), FETCH_RECORDS_MAX)
        max_bytes = min(max(int(h.get("max_bytes", 1024 * 1024)), 1), FETCH_BYTES_MAX)
        records = c.poll(timeout_ms, max_records=max_records, max_bytes=max_bytes)
        budget_ms = h.get("budget_ms")
        if records and budget_ms is not None and _waited_ms(h) > timeout_ms + budget_ms / 2:
            # the poll itself outlasted the caller (a rejoin inside it): give the records back
            c.give_back(_first_offsets(records).items())
            raise RemoteError(P.REQUEST_TIMED_OUT, "the fetch outlasted its caller's patience (a rebalance)")
        return records

    @staticmethod
    def _assign(c: GroupConsumer, h: dict) -> dict:
        parts = h.get("partitions")
        if not isinstance(parts, list) or not all(
                isinstance(tp, (list, tuple)) and len(tp) == 2 and isinstance(tp[0], str) and isinstance(tp[1], int)
                for tp in parts):
            raise RemoteError(P.MALFORMED_REQUEST, "partitions must be a list of [topic, partition]")
        if c.subscription:  # before the lookups: refused whatever the coordinator would say
            raise SubscriptionConflictError("the instance is subscribed: unsubscribe before assigning partitions")
        held = set(c.assignment())
        # as Kafka's assign(): a new partition starts at the group's committed offset, if any;
        # an assigned one keeps its position. Looked up before anything changes: a lookup that
        # fails leaves the instance as it was -- assigned first, the partitions still without a
        # position would start at auto_offset_reset (latest: past records nobody got)
        committed, ids, newer, epochs = c.committed_starts([(t, p) for t, p in parts if (t, p) not in held])
        c.assign([(t, p) for t, p in parts])
        for tp, offset in committed.items():
            if offset is not None:  # of that topic: one deleted meanwhile starts at the new one's log start
                c.seek(tp, offset, topic_id=ids.get(tp[0], ""), committed=True, leader_epoch=epochs.get(tp, -1))
        # nothing committed: reset at once (the consumer would look them up again) -- to the log
        # start of one newer than the group's reading of its topic (the coordinator's judgement)
        # or that appeared while the instance read its topic, else auto_offset_reset (sought to
        # the log end, latest skipped what was written to a partition added meanwhile)
        uncommitted = [tp for tp, offset in committed.items() if offset is None]
        if newer.intersection(uncommitted):  # (never seek_to_beginning([]): that is every partition)
            c.seek_to_beginning([tp for tp in uncommitted if tp in newer])
        c.reset_positions([tp for tp in uncommitted if tp not in newer])
        return {}

    @staticmethod
    def _seek(c: GroupConsumer, h: dict) -> dict:
        to = h.get("to")
        tps = [(t, p) for t, p in h.get("partitions") or []] or None
        try:
            if to == "beginning":
                c.seek_to_beginning(tps)
            elif to == "end":
                c.seek_to_end(tps)
            elif to == "offsets":
                # a partition named twice takes its last entry whole (offset and topic id), as the
                # REST route does: an earlier entry's id neither refuses the seek nor goes with it
                entries = list({(e[0], e[1]): e for e in h.get("offsets") or []}.values())
                _check_topic_ids(c, entries)
                # every partition checked before any is sought: a refusal leaves every position as it was
                assigned = set(c.assignment())
                missing = sorted({(e[0], e[1]) for e in entries} - assigned)
                if missing:
                    raise RemoteError(P.PARTITION_NOT_ASSIGNED, f"{', '.join(f'{t}-{p}' for t, p in missing)} not "
                                                                f"assigned; nothing was sought")
                for t, p, o, *topic_id in entries:  # [topic, partition, offset(, topic id)]
                    c.seek((t, p), o, topic_id=topic_id[0] if topic_id else "")
            else:
                raise RemoteError(P.MALFORMED_REQUEST, "to must be beginning, end or offsets")
        except FabricError as e:
            if isinstance(e, CodedError):
                raise
            raise RemoteError(P.PARTITION_NOT_ASSIGNED, str(e)) from e
        return {}

    def stop(self, refusal: RemoteError | None = None) -> None:
        """Ask the thread to close the instance: the request it serves ends (a fetch's poll
        returns what it has, ``GroupConsumer.wakeup``) and is answered, the consumer closes
        (commits with auto-commit, leaves its group), and the requests still queued are answered
        ``refusal`` (default: unknown_consumer_instance). Never blocks (the caller is the
        reactor): the event is seen even when the command queue is full; the None only wakes
        the thread."""
        if refusal is not None:
            self._refusal = refusal
        self._stop_requested.set()
        consumer = self.consumer  # set by the thread: read once
        if consumer is not None:
            consumer.wakeup()
        try:
            self.commands.put_nowait(None)
        except queue.Full:
            pass  # the thread takes a queued command within MAINTAIN_INTERVAL_S and sees the event


OPS = {
    P.CONSUMER_SUBSCRIBE: "subscribe", P.CONSUMER_SUBSCRIPTION: "subscription", P.CONSUMER_FETCH: "fetch",
    P.CONSUMER_COMMIT: "commit", P.CONSUMER_COMMITTED: "committed", P.CONSUMER_SEEK: "seek",
    P.CONSUMER_ASSIGNMENT: "assignment", P.CONSUMER_DELETE: "delete", P.CONSUMER_ASSIGN: "assign",
}


def _first_offsets(records: list) -> dict[tuple[str, int], int]:
    """The offset of the first record of each partition in ``records`` (``fabric.records.Record``
    rows, in offset order per partition), without a Python-level loop: read backward, each
    partition's first record is the last one the dict keeps."""
    backward = records[::-1]
    return dict(zip(map(_TOPIC_PARTITION, backward), map(_OFFSET, backward)))


def _sought(c: GroupConsumer, h: dict) -> set[tuple[str, int]]:
    """The partitions a seek of header ``h`` moved: those named, all assigned when none is."""
    if h.get("to") == "offsets":
        return {(e[0], e[1]) for e in h.get("offsets") or []}  # [topic, partition, offset(, topic id)]
    return {(t, p) for t, p in h.get("partitions") or []} or set(c.assignment())


def _positions(c: GroupConsumer) -> list[list] | None:
    """``[[topic, partition, offset], ...]``: every assigned partition's next offset to fetch,
    or None while the consumer is not positioned -- a join is due or under way (its assignment
    is not known), or a partition's position is being looked up (the log start or end)."""
    if c.joining:
        return None
    positions = [[t, p, c.position((t, p))] for t, p in c.assignment()]
    return None if any(o is None for _t, _p, o in positions) else positions


def _check_topic_ids(c: GroupConsumer, entries: list) -> None:
    """Raise RemoteError(unknown_topic_id), before anything is sought, when an entry of a seek
    names a topic id that is not its topic's as the instance's metadata names it. One listed as
    deleted is of a topic made again under its name since (a committed offset looked up before):
    taken, the new topic's records below it were skipped. Any other (the instance's metadata
    older than a topic just made again, or an id that never was) is refused too -- taken, the
    partition waited for the coordinator's metadata, and for an id that never was the client's
    next fetch failed -- and the metadata is asked for, so that a client whose topic was just
    made again can seek again."""
    deleted = set(c.metadata.deleted_topic_ids)
    for t, p, _o, *topic_id in entries:
        named = topic_id[0] if topic_id else ""
        now = c.metadata.topic_ids_of([t]).get(t, "")
        if not named or named == now:
            continue
        if named in deleted:
            raise RemoteError(P.UNKNOWN_TOPIC_ID, f"{t}-{p}: topic id {named} was deleted (the topic was made again "
                                                  f"under its name since?): its offsets are not the new topic's; "
                                                  f"nothing was sought")
        c._refresh_metadata()
        raise RemoteError(P.UNKNOWN_TOPIC_ID, f"{t}-{p}: topic id {named} is not the id of topic {t!r} as this "
                                              f"instance knows it ({now or 'no such topic'}); nothing was sought "
                                              f"(a topic just made again: seek again in a moment)")


def _waited_ms(h: dict) -> float:
    """How long ago the service received the fetch of header ``h`` (``_on_op`` stamps it)."""
    return (time.monotonic() - h["_received"]) * 1000


def check_op_header(op: str, h: dict) -> None:
    """Refuse, on the reactor, an instance op whose header fields the instance thread could not
    read. Raises RemoteError(malformed_request) naming the field."""
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def partition_list(name: str, width: int, topic_id: bool = False) -> None:
        """[[topic, partition(, offset)(, topic id: with ``topic_id``)], ...] or null."""
        v = h.get(name)
        if v is None:
            return

        def fits(e: Any) -> bool:
            if not isinstance(e, (list, tuple)):
                return False
            if topic_id and len(e) == width + 1 and isinstance(e[-1], str):
                e = e[:-1]
            return len(e) == width and isinstance(e[0], str) and all(is_int(n) and n >= 0 for n in e[1:])
        if not isinstance(v, list) or not all(map(fits, v)):
            fields = "topic, partition" + (", offset" if width == 3 else "") + ("(, topic id)" if topic_id else "")
            raise RemoteError(P.MALFORMED_REQUEST, f"{name} must be a list of [{fields}], numbers of 0 or more")
    if ("lost" in h or "answered" in h) and not all(is_int(h.get(n)) and h[n] >= 0 for n in ("lost", "answered")):
        raise RemoteError(P.MALFORMED_REQUEST, "lost and answered must both be ints of 0 or more")
    if op == "delete" and not isinstance(h.get("owner", ""), str):
        raise RemoteError(P.MALFORMED_REQUEST, "owner must be a string")
    if op == "fetch":
        for name in ("timeout_ms", "max_records", "max_bytes", "budget_ms", "fetch_id"):
            if name in h and not is_int(h[name]):
                raise RemoteError(P.MALFORMED_REQUEST, f"{name} must be int")
        if "fetch_id" in h and h["fetch_id"] < 1:
            raise RemoteError(P.MALFORMED_REQUEST, "fetch_id must be 1 or more")
        for name in ("frame", "positions"):
            if not isinstance(h.get(name, False), bool):
                raise RemoteError(P.MALFORMED_REQUEST, f"{name} must be a boolean")
    elif op == "commit":
        partition_list("offsets", 3)
    elif op == "committed":
        partition_list("partitions", 2)
    elif op == "seek":
        partition_list("partitions", 2)
        partition_list("offsets", 3, topic_id=True)
