"""The ``/ws/consume`` stream (webui/ws.py routes it, after auth and a slot): records pushed as
they come, each message numbered (``seq``), ``{"ready": ...}`` once the stream's consumer is
positioned, and the client's commits -- ``{"commit": "all"}``, ``{"commit": "all", "through": N}``
or ``{"commit": [{topic, partition, offset}]}`` -- with the auto-commit for a named group.

Commits cover only what went out to the client (``Delivered``), never what the instance fetched
and still queues: see docs/gateway.md. Runs on the route's thread; the Outbox's thread sends.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from werkzeug.wrappers import Request

from fabric import protocol as P
from fabric.errors import RemoteError
from webui.context import Gateway
from webui.errors import ApiError, ClusterError
from webui.routes_v2 import records_json
from webui.schemas import NAME_RULE, NAME_RULES, OFFSET, PARTITION
from webui.json_text import loads_json
from webui.spec import NOT_UTF8_NAME, invalid_name, is_utf8
from webui.ws_outbox import POLICY, Closed, Outbox

log = logging.getLogger(__name__)

FETCH_TIMEOUT_MS = 500
# /ws/consume: a fetch's wait while the stream's consumer is not positioned, so that "ready"
# goes out at most this long after it is (a 500 ms wait held it back with nothing to send)
UNPOSITIONED_FETCH_TIMEOUT_MS = 50
FETCH_BYTES_MAX = 2 * 1024 * 1024   # keys and values per consumer-service fetch (one message)
FETCH_RECORDS_MAX = 5000
# /ws/consume: a commit of explicit offsets refused for these is answered {"committed": false, ...}
# (the client may commit again); others close the stream as a bad request
RETRIABLE_COMMIT_ERRORS = ("rebalance", "unavailable", "timeout")
# /ws/consume: marks of messages sent and not yet committed kept one by one (more are merged)
PENDING_MARKS_MAX = 1024
AUTO_COMMIT_INTERVAL_S = 5.0  # /ws/consume: what went out to the client is committed this often
ANONYMOUS_COMMIT_MESSAGE = ("this stream has no group= and commits nothing (its generated group is never joined "
                            "again): open the stream with group=NAME to commit")


def query_param(q: dict, name: str, allowed: tuple[str, ...] | None = None, default: str | None = None) -> str:
    """The WebSocket's query parameter ``name`` (``default`` when absent), one of ``allowed``
    when given. Raises ApiError 42206."""
    value = q.get(name, default)
    if value is None or value == "" or (allowed and value not in allowed):
        raise ApiError(42206, f"query parameter {name} must be " + (" or ".join(allowed) if allowed else "given"))
    return value


def query_args(environ: dict) -> dict[str, str]:
    """The WebSocket's query parameters (the first value of each), as ``request.args`` reads
    them. Raises ApiError 40002 when the query's percent-escapes are not UTF-8: read so,
    group=%FF named the group "%FF" -- another group than the client's."""
    if not is_utf8(environ, "query"):
        raise ApiError(40002, NOT_UTF8_NAME)
    return dict(Request(environ).args)


def name_param(q: dict, name: str) -> str:
    """The WebSocket's query parameter ``name``, a topic or group name. Raises ApiError 42206
    when it is absent, 40002 when it breaks its naming rule (as a REST path's name: a group's is
    GROUP_NAME_RULE)."""
    value = query_param(q, name)
    rule = NAME_RULES.get(name, NAME_RULE)
    if not rule.regex.fullmatch(value):
        raise ApiError(40002, invalid_name(name, value, rule))
    return value


class Delivered:
    """What of a /ws/consume stream went out to the client, and what the client said it read.
    Commits cover only that -- the instance's own positions are past records fetched and still
    queued, or dropped when the socket closed, which a commit of them would have the group skip.

    Every records message is numbered (``seq``); the marks of those that went out (message
    number, the offset after its records per partition) wait in ``pending`` until a commit
    covers them: ``{"commit": "all"}`` every one, ``{"commit": "all", "through": N}`` those up
    to message N -- what the client has read, where messages after it may be on their way and
    never arrive (the connection breaks). Once a client has named ``through``, the auto-commit
    adds nothing past it. ``pending`` is bounded: past PENDING_MARKS_MAX its older half is merged
    into one mark (each partition's highest offset in it), which only a ``through`` at or past
    its last message covers. Not thread-safe: the stream's route thread."""

    def __init__(self, out: Outbox, gw: Gateway, group: str, name: str, named: bool) -> None:
        self.out, self.gw, self.group, self.name, self.named = out, gw, group, name, named
        self.seq = 0  # of the last records message numbered
        self.pending: list[tuple[int, dict[tuple[str, int], int]]] = []  # went out, not yet covered
        self.client_confirms = False  # the client names what it read (through): no auto-commit past it
        self.sent: dict[tuple[str, int], int] = {}
        self.committed: dict[tuple[str, int], int] = {}
        self.last_commit_s = time.monotonic()
        # the membership generation the last fetch reported, and the partitions whose committed
        # offsets were looked up in it (each is, before its first commit of every generation)
        self.generation: int | None = None
        self.baselined: set[tuple[str, int]] = set()
        # the topic ids the instance's positions were of at the last fetch, and the first message
        # whose mark counts: those numbered before the topic was deleted and made again are of
        # the old topic, also when they go out (and come back from the outbox) after it
        self.topic_ids: dict[str, str] = {}
        self.marks_from_seq = 1

    def note_generation(self, generation: int) -> None:
        """A fetch reported ``generation``: after a rebalance, marks sent before it may be below
        what another member committed meanwhile (it held a partition that came back)."""
        if generation != self.generation:
            self.generation, self.baselined = generation, set()

    def note_topic_ids(self, topic_ids: dict[str, str]) -> None:
        """A fetch said which topics (by id) its instance's positions are of: a topic deleted and
        made again since the last one ends the marks of every message numbered before it -- and
        so does the first id heard of a topic once messages were numbered without one (a fetch
        whose poll took records and then reset the partition, its topic made again: those
        records may be of the topic before, and their marks would pass the new topic's records
        still in the outbox)."""
        unnamed_marks = self.seq >= self.marks_from_seq and any(t not in self.topic_ids for t in topic_ids)
        if unnamed_marks or any(self.topic_ids.get(t, i) != i for t, i in topic_ids.items()):
            self.forget_marks()
        self.topic_ids.update(topic_ids)

    def number(self, records: list) -> tuple[int, dict[tuple[str, int], int]]:
        """The next message's number and its mark: the offsets after its records, per partition
        (a partition's records ascend)."""
        self.seq += 1
        return self.seq, {(r.topic, r.partition): r.offset + 1 for r in records}

    def collect(self) -> None:
        """Take the marks of the messages that went out since the last call (bounded)."""
        self.pending += [m for m in self.out.take_sent_marks() if m[0] >= self.marks_from_seq]
        if len(self.pending) > PENDING_MARKS_MAX:
            half = len(self.pending) // 2
            merged: dict[tuple[str, int], int] = {}
            for _, after in self.pending[:half]:
                _keep_highest(merged, after)
            self.pending[:half] = [(self.pending[half - 1][0], merged)]

    def commit(self, through: int | None = None, auto: bool = False) -> None:
        """Commit what went out up to message ``through`` (every message when None) and was not
        committed yet; ``auto``: the auto-commit's, nothing once the client names ``through``."""
        self.collect()
        self.last_commit_s = time.monotonic()
        if through is not None:
            self.client_confirms = True
        elif auto and self.client_confirms:
            return
        covered = [after for seq, after in self.pending if through is None or seq <= through]
        self.pending = [m for m in self.pending if through is not None and m[0] > through]
        for after in covered:
            _keep_highest(self.sent, after)
        wanted = {tp: o for tp, o in self.sent.items() if o > self.committed.get(tp, -1)}
        if wanted:
            self.gw.agent.call_instance(self.group, self.name, lambda h: self._commit_owned(h, wanted))

    def _commit_owned(self, handle: Any, wanted: dict[tuple[str, int], int]) -> None:
        """Commit ``wanted`` for the partitions the instance still owns: one a rebalance gave to
        another member is its to commit now (and would have the whole commit refused). Raises
        ClusterError(rebalance) while the instance joins its group, keeping ``sent``: it owns
        nothing until the join completes, and what it held may come back to it."""
        held = handle.owned()
        if held is None:
            raise ClusterError("rebalance", "a rebalance is under way: commit again once the stream says ready")
        owned = set(held)
        for tp in [tp for tp in self.sent if tp not in owned]:
            del self.sent[tp]
            self.committed.pop(tp, None)
        wanted = {tp: o for tp, o in wanted.items() if tp in owned}
        unknown = sorted(tp for tp in wanted if tp not in self.baselined)
        if unknown:
            # marks sent before a rebalance below what the group holds now: the coordinator
            # refuses a commit that moves an offset backward, and the whole commit with it -- every
            # later one too, for as long as that partition brings nothing new. Each partition is
            # looked up, not only those of the generation's first commit: a client reading behind
            # confirms a mark of another partition later
            for tp, o in handle.committed(unknown).items():
                if o > self.committed.get(tp, -1):
                    self.committed[tp] = o
            self.baselined.update(unknown)
            wanted = {tp: o for tp, o in wanted.items() if o > self.committed.get(tp, -1)}
        if wanted:
            try:
                handle.commit(wanted)
            except RemoteError as e:
                if e.code == P.UNKNOWN_TOPIC_ID:
                    self.forget_marks()
                raise
            self.committed.update(wanted)

    def forget_marks(self) -> None:
        """The topic was deleted and made again (a fetch says its instance's positions are of
        another topic id, or a commit was refused unknown_topic_id): the marks of every message
        numbered so far -- of the old topic, most of them, also those still on their way -- are
        dropped, and so is what the group was known to hold. Kept, an old offset above the new
        topic's was committed for it past records that had not gone out, or refused at every
        commit until the new topic's records passed it; records of the new topic dropped with
        them are covered by the next mark of their partition, or read again by the group."""
        self.pending, self.sent, self.committed, self.baselined = [], {}, {}, set()
        self.marks_from_seq = self.seq + 1

    def past_what_went_out(self, wanted: dict[tuple[str, int], int]) -> list[tuple[str, int]]:
        """Once the topic was made again (``forget_marks``), the partitions of an explicit commit
        ``wanted`` whose offset is past every record that went out since: the client got that
        record from the topic before. Committed, it passed records of the new topic the instance
        read (its position is past them: nothing refuses it) that may still be on their way."""
        if self.marks_from_seq == 1:
            return []
        self.collect()
        went_out = dict(self.sent)
        for _, after in self.pending:
            _keep_highest(went_out, after)
        return sorted(tp for tp, o in wanted.items() if o > went_out.get(tp, -1))

    def note_committed(self, offsets: dict[tuple[str, int], int]) -> None:
        """The client committed ``offsets`` itself (of records it got): never commit below them."""
        for tp, o in offsets.items():
            self.committed[tp] = max(o, self.committed.get(tp, -1))


def _keep_highest(into: dict[tuple[str, int], int], after: dict[tuple[str, int], int]) -> None:
    """Raise each partition's offset in ``into`` to its offset in ``after`` where that is higher:
    a partition's offsets need not ascend from message to message (its position moved back
    between fetches: a rebalance handed it back at a lower committed offset, a seek)."""
    for tp, offset in after.items():
        if offset > into.get(tp, -1):
            into[tp] = offset


class Ready:
    """Tells a /ws/consume client when the stream's consumer is positioned: it has its
    assignment and a position in every partition of it, so every record produced from then on
    is delivered (a new group's member joins and looks up the log end, ~100 ms, after the
    socket opens: a tail "from the end" that counted from the open missed what came
    meanwhile). ``{"ready": true, "assignment": [{topic, partition, offset}]}`` (offset: the
    next one the stream sends from that partition) goes out after the records of the fetch
    that found it positioned, and again after every rebalance (a new generation) or position
    looked up anew; ``{"ready": false}`` when a fetch finds it no longer positioned after a
    ready (a rebalance under way). Not thread-safe: owned by the stream's route thread."""

    def __init__(self, out: Outbox) -> None:
        self.out = out
        self.generation: int | None = None  # the membership announced ready, None while not

    def note(self, fetched: Any) -> None:
        """Announce what ``fetched`` (``fabric.client.services.Fetched``) says, if it changed."""
        if fetched.positions is None:
            if self.generation is not None:
                self.generation = None
                self.out.put({"ready": False})
            return
        if fetched.generation != self.generation:
            self.generation = fetched.generation
            self.out.put({"ready": True, "assignment": [{"topic": t, "partition": p, "offset": o}
                                                        for (t, p), o in sorted(fetched.positions.items())]})


def consume(ws: Any, out: Outbox, gw: Gateway, q: dict, limit: Callable[[], dict | None] = lambda: None) -> None:
    topic = name_param(q, "topic")
    fmt = query_param(q, "format", ("json", "binary"), "json")
    start = query_param(q, "from", ("beginning", "end"), "end")
    asked_auto_commit = query_param(q, "auto_commit", ("true", "false"), "true") == "true"
    named = bool(q.get("group"))
    group = name_param(q, "group") if named else f"ws-{time.monotonic_ns():x}"
    gw.agent.topic(topic)
    # a generated group is never joined again: committing would only leave it on the
    # coordinator for good (one group per stream, up to GROUPS_MAX). A named group's commits are
    # the stream's own (Delivered): the instance does not auto-commit
    auto_commit = named and asked_auto_commit
    config = {"auto_offset_reset": "earliest" if start == "beginning" else "latest", "enable_auto_commit": False}
    entry = gw.agent.create_instance(group, None, config, fmt)
    delivered = Delivered(out, gw, group, entry.name, named)
    ready = Ready(out)
    try:
        gw.agent.subscribe(group, entry.name, [topic])
        while ws.connected and not out.done.is_set():
            consume_commands(ws, out, gw, delivered, limit)
            wait_ms = FETCH_TIMEOUT_MS if ready.generation is not None else UNPOSITIONED_FETCH_TIMEOUT_MS
            fetched = gw.agent.call_instance(group, entry.name, lambda h: h.fetch_with_positions(
                timeout_ms=wait_ms, max_bytes=FETCH_BYTES_MAX, max_records=FETCH_RECORDS_MAX))
            records = fetched.records
            delivered.note_generation(fetched.generation)
            delivered.note_topic_ids(fetched.topic_ids)
            if records:
                mark = delivered.number(records)
                # an anonymous stream commits nothing: no mark to keep
                out.put({"records": records_json(records, fmt), "seq": mark[0]}, mark=mark if named else None)
            ready.note(fetched)
            delivered.collect()
            if auto_commit and time.monotonic() - delivered.last_commit_s >= AUTO_COMMIT_INTERVAL_S:
                try:
                    delivered.commit(auto=True)
                except ClusterError as e:  # a rebalance meanwhile: the next one, or the new owner, goes on
                    log.info("ws consume %s: auto-commit failed: %s", group, e)
    finally:
        try:
            if auto_commit:
                delivered.commit(auto=True)  # what went out, before the instance leaves the group
        except ClusterError:
            pass
        finally:
            try:
                gw.agent.delete_instance(group, entry.name)  # leaves the group at once
            except ClusterError:
                pass


def _integer(v: Any) -> Any:
    """``v``, or the int it is when it is a float with no fraction (4.0, 4e0: JSON Schema's
    integers, which REST's commit reads as integers: webui.spec.integers_read)."""
    return int(v) if type(v) is float and v.is_integer() else v


def commit_entries(commit: Any) -> dict[tuple[str, int], int] | None:
    """An explicit commit's entries [{topic, partition, offset}] as (topic, partition) -> the
    next offset to read, or None unless each is what REST's commit takes, integers only
    (``int()`` made an offset 5.9 offset 5 and a partition ``true`` partition 1): anything
    else failed past the route (sorting mixed topics, packing an offset beyond 64 bits) as a
    programmer error, stopping the worker."""
    if not isinstance(commit, list):
        return None
    wanted = {}
    for c in commit:
        if not isinstance(c, dict):
            return None
        t, p, o = c.get("topic"), _integer(c.get("partition")), _integer(c.get("offset"))
        if not (type(t) is str and type(p) is int and type(o) is int
                and 0 <= p <= PARTITION["maximum"] and 0 <= o <= OFFSET["maximum"]):
            return None
        wanted[(t, p)] = o + 1
    return wanted


def partition_taken(e: ClusterError) -> bool:
    """Whether the coordinator refused a commit because it names a partition the member no
    longer owns: a rebalance gave it to another member after the client read its records -- a
    race the client cannot avoid, not a broken protocol (it closed the stream with 1008)."""
    return e.code == P.PARTITION_NOT_ASSIGNED


def topic_made_again(e: ClusterError) -> bool:
    """Whether the coordinator refused a commit because the topic it was read in was deleted
    (and perhaps made again under its name) since: a race with an administrator the client
    cannot avoid either; answered, the stream goes on with the new topic."""
    return e.code == P.UNKNOWN_TOPIC_ID


def consume_commands(ws: Any, out: Outbox, gw: Gateway, delivered: Delivered,
                      limit: Callable[[], dict | None]) -> None:
    """Handle what the client sent: {"commit": "all", "through"?: N} or {"commit": [{topic,
    partition, offset}]}; on an anonymous stream each is answered {"committed": false, "error":
    "no_group"} and commits nothing."""
    while True:
        text = ws.receive(timeout=0)
        if text is None:
            return
        limited = limit()
        if limited is not None:
            out.put({"committed": False, **limited})
            continue
        try:
            msg = loads_json(text)
            commit = msg["commit"]
        except (ValueError, TypeError, KeyError):
            out.close(POLICY, 'expected {"commit": "all"} or {"commit": [{"topic", "partition", "offset"}]}')
            raise Closed() from None
        if not delivered.named:  # a generated group nobody joins again: a commit would only keep it for good
            out.put({"committed": False, "error": "no_group", "message": ANONYMOUS_COMMIT_MESSAGE})
            continue
        if commit == "all":
            through = msg.get("through")
            if through is not None and not (type(through) is int and through > 0):
                out.close(POLICY, '"through" is the seq of a records message (1, 2, ...)')
                raise Closed() from None
            try:
                delivered.commit(through)  # what went out to the client, not what is still queued for it
            except ClusterError as e:  # a rebalance under way: the client may ask again
                out.put({"committed": False, "error": e.kind, "message": e.message})
                continue
        else:
            wanted = commit_entries(commit)
            if wanted is None:
                out.close(POLICY, "commit entries need topic, partition and offset")
                raise Closed() from None
            past = delivered.past_what_went_out(wanted)
            if past:
                t, p = past[0]
                out.put({"committed": False, "error": "topic_not_found",
                         "message": f"topic {t!r} was deleted and made again: the offset for {t}-{p} is past what this "
                                    "stream sent of the new topic (a record of the topic before): nothing was committed"})
                continue
            try:
                gw.agent.call_instance(delivered.group, delivered.name, lambda h: h.commit(wanted))
            except ClusterError as e:
                taken = partition_taken(e)
                if e.kind not in RETRIABLE_COMMIT_ERRORS and not taken and not topic_made_again(e):
                    raise
                out.put({"committed": False, "error": "rebalance" if taken else e.kind, "message": e.message})
                continue
            delivered.note_committed(wanted)
        out.put({"committed": True})
