"""Finding the cluster: bootstrap endpoints and metadata fetched from them.

``--bootstrap host:port[,host:port…]`` names any nodes that answer METADATA (the coordinator
or a broker); ``-c CONFIG`` uses the config's coordinator and brokers. Which endpoint is asked
first, and for how long, follows the coordinator-silence rules when a ``CoordinatorSilence`` is
given (fabric/client/coordinator_silence.py). Thread-safety: the functions are thread-safe; a
``BlockingClient`` is not.
"""

from __future__ import annotations

import time

import zmq

from fabric import protocol as P
from fabric.blocking_client import BlockingClient
from fabric.client.coordinator_silence import CoordinatorSilence
from fabric.config import load_config
from fabric.errors import (CodedError, ConnectFailed, ConnectionRefused, FabricError, MalformedFrame, PeerUnreachable,
                           RequestTimeout)
from fabric.metadata import ClusterMetadata, read_answer


def parse_bootstrap(bootstrap: str | list[str] | None = None, config_path: str | None = None) -> list[str]:
    """Endpoints (tcp://host:port) to ask for metadata. Without ``bootstrap`` the config file
    (``config_path``, $LOOM_CONFIG, config/cluster.yaml) is read."""
    if bootstrap:
        items = bootstrap.split(",") if isinstance(bootstrap, str) else list(bootstrap)
        out = []
        for item in (i.strip() for i in items):
            if not item:
                continue
            if item.startswith("tcp://"):
                out.append(item)
            else:
                host, sep, port = item.rpartition(":")
                if not sep or not port.isdigit():
                    raise FabricError(f"bad bootstrap address {item!r}: expected host:port")
                out.append(f"tcp://{host}:{port}")
        if not out:
            raise FabricError("empty bootstrap list")
        return out
    return load_config(config_path).bootstrap()


def bootstrap_target(bootstrap: str | list[str] | None, config_path: str | None) -> tuple[list[str], str | None]:
    """``parse_bootstrap``'s endpoints and the cluster name a client that finds its nodes through
    a config expects (the config's ``cluster.name``; None with ``bootstrap`` endpoints, which name
    no cluster): the config read once."""
    if bootstrap:
        return parse_bootstrap(bootstrap), None
    cfg = load_config(config_path)
    return cfg.bootstrap(), cfg.cluster.name


def check_cluster(answered: str, expected: str | None, where: str) -> None:
    """Raise when ``where`` serves a cluster other than the config's: the shipped configs
    share ports, and a command must not list, make or write another cluster's topics."""
    if expected and answered and answered != expected:
        raise FabricError(f"{where} serves cluster {answered!r}, not {expected!r} as the config says: another "
                          "cluster runs on the config's ports (stop it, or name its own config)")


# fetch_metadata: any ask but the round's last (a live node answers in ms; the leader killed just
# before the coordinator, which the metadata taken last still said alive, held the whole timeout)
NOT_LAST_ASK_TIMEOUT_MS = 1000
LATE_ANSWER_LOOK_MS = 50  # a round's asks all failed: each cut short is looked at this long in turn


def metadata_endpoint(metadata: ClusterMetadata, endpoints: list[str], attempt: int,
                      silence: CoordinatorSilence | None = None, now_ms: int = 0) -> str:
    """Where to ask for metadata on the ``attempt``-th try (``now_ms``: the clock ``silence``
    is told). The coordinator is the source of truth (a broker cut off from it serves a stale
    copy), so once it is known it gets every other try; the other bootstrap endpoints take the
    rest in turn (the list usually names the coordinator too: with it down, its turns there
    were more timeouts before a broker was asked). A coordinator gone silent (``silence``, told
    of ``metadata`` here) gets no turn within its backoff, and the next try once the backoff is
    over. Brokers ``metadata`` says are dead take their turns after the live ones (the leader
    killed just before the coordinator held a refresh the whole timeout after the
    coordinator's; a turn moves on only after a failed ask, so a refresh a live broker answers
    never waits on a dead one) -- but they do get turns: a broker restarted and elected since
    is told apart from a dead one only by asking it, and with the live ones and the coordinator
    silent, a producer that never asked it wrote nothing for as long as they stayed so. A
    failed ask of the coordinator that leaves it silent takes no broker's turn (the caller's
    next ``attempt``: ``metadata_attempt_after_failure``). A list of the coordinator alone
    asks it every time. Without metadata naming
    a coordinator the endpoints take turns, but for one ``silence`` skips (another client's
    coordinator gone silent)."""
    if silence is not None:
        silence.seen(metadata)
    coordinator = metadata.coordinator
    if not coordinator:
        if silence is not None:
            endpoints = [e for e in endpoints if not silence.skips(e, now_ms)] or endpoints
        return endpoints[attempt % len(endpoints)]
    others = [e for e in endpoints if e != coordinator]
    if not others:
        return coordinator
    # the dead after the live ones, not left out: "dead" is the copy's, perhaps long out of date
    # (a broker restarted and elected since, while the coordinator that would say so is silent)
    dead = metadata.dead_endpoints()
    others = [e for e in others if e not in dead] + [e for e in others if e in dead]
    if silence is not None and silence.silent(coordinator):
        return others[attempt % len(others)] if silence.skips(coordinator, now_ms) else coordinator
    return coordinator if attempt % 2 == 0 else others[attempt // 2 % len(others)]


def metadata_attempt_after_failure(attempt: int, endpoint: str, silence: CoordinatorSilence, now_ms: int) -> int:
    """``metadata_endpoint``'s ``attempt`` after an ask of ``endpoint`` failed (``silence`` told
    of it first): the next -- but the same when ``endpoint`` is the coordinator, silent and
    within its backoff now: its probe (or the ask that made it silent) takes no broker's turn,
    and the next try is the broker whose turn it was. Else a probe at each backoff's end took
    the turn after it, the same broker's whenever the asks between two probes were as many as
    the brokers (one held by a stopped broker for its whole timeout, the others refused at
    once): a broker restarted and elected there was never asked."""
    return attempt if silence.skips(endpoint, now_ms) else attempt + 1


def fetch_metadata(ctx: zmq.Context, endpoints: list[str], timeout_ms: int = 3000,
                   prefer: str | None = None, *, deadline_s: float | None = None,
                   silence: CoordinatorSilence | None = None) -> tuple[ClusterMetadata, str]:
    """Ask ``prefer`` (the coordinator, once known) and then each endpoint in turn, each for at
    most ``timeout_ms``; return (metadata, endpoint that answered). ``deadline_s`` (monotonic
    s): an ask gets at most an even share of what is left until then among the endpoints still
    to ask, and none begins after it -- a caller's bound holds when a node does not answer (a
    stopped coordinator took ``timeout_ms`` before the next endpoint was asked), and a silent
    first one leaves the others time to answer (given all that was left, it failed a call a
    broker's copy answers). ``silence``: told of the asks' outcomes, it orders them
    (``CoordinatorSilence.order``: ``prefer`` last within its backoff, the others from the one
    that answered last), and a coordinator gone silent is waited for no longer than
    ``silence.timeout_ms`` says -- also one that did not answer before the metadata that
    answered showed it the coordinator (a first fetch: the next would wait for it again). Any
    ask but the last waits at most ``NOT_LAST_ASK_TIMEOUT_MS``. An ask whose connection is
    refused (``ConnectionRefused``: the node's process is dead, its host up), or whose host is
    out of reach (``PeerUnreachable``: EHOSTUNREACH, ENETUNREACH...), ends at once, and the next
    endpoint is asked; a node that takes the connection and does not answer, or a host that
    does not answer the connect, is waited for as above. An ask cut short so (or by
    ``silence``) still has its answer taken while the later asks are made, and when none of
    them answers, for as long as the cut took off it (by ``deadline_s``): a node slower than the
    cut but within ``timeout_ms`` (a loaded coordinator, the brokers dead) answered every fetch
    before the cuts, and none after. Raises ``RequestTimeout`` (``request_timed_out``,
    retriable) when none answers with metadata in time: the cluster is down, unreachable or
    starting -- at once when no endpoint could be connected to, as a ``ConnectFailed``
    (``ConnectionRefused`` when every one refused) naming each endpoint's errno."""
    asks = _Asks(silence)
    if silence is not None:
        order = silence.order(endpoints, prefer, int(time.monotonic() * 1000))
    else:
        order = ([prefer] if prefer else []) + [e for e in endpoints if e != prefer]
    try:
        for i, ep in enumerate(order):
            full_ms = timeout_ms if deadline_s is None else \
                min(timeout_ms, int((deadline_s - time.monotonic()) * 1000) // (len(order) - i))
            if full_ms <= 0:
                asks.last = asks.last or RequestTimeout(f"no time left to ask {ep}")
                break
            try_ms = full_ms if silence is None else silence.timeout_ms(ep, full_ms, len(order) > 1)
            if i < len(order) - 1:
                try_ms = min(try_ms, NOT_LAST_ASK_TIMEOUT_MS)
            got = asks.ask(ctx, ep, try_ms, full_ms - try_ms) or asks.late(0)
            if got is not None:
                return got
        left_ms = asks.saved_ms if deadline_s is None else \
            min(asks.saved_ms, int((deadline_s - time.monotonic()) * 1000))
        got = asks.late(max(0, left_ms))
        if got is not None:
            return got
    finally:
        asks.close()
    if asks.refusals and set(asks.refusals) >= set(order):
        raise _none_connected(asks.refusals)
    why = getattr(asks.last, "message", None) or str(asks.last)  # its text: the code is this error's own
    raise RequestTimeout(f"no node answered at {', '.join(endpoints)}: {why}")


def _none_connected(refusals: dict[str, ConnectFailed]) -> ConnectFailed:
    """The error of a round whose every ask failed to connect: each endpoint with its errno's
    name; ``ConnectionRefused`` when every one refused (the nodes' processes are down, their
    hosts up), ``PeerUnreachable`` when every one was out of reach, else ``ConnectFailed``."""
    kinds = {type(e) for e in refusals.values()}
    kind = kinds.pop() if len(kinds) == 1 else ConnectFailed
    what = {ConnectionRefused: "every one refused the connection (nothing listens there: the nodes are down)",
            PeerUnreachable: "none could be reached (their hosts are down, or cut off)"}.get(
        kind, "none could be connected to")
    each = ", ".join(f"{ep} ({e.reason})" for ep, e in refusals.items())
    return kind(f"no node answered at {each}: {what}", reason="/".join(sorted({e.reason for e in refusals.values()})))


class _Asks:
    """One ``fetch_metadata`` round's asks: what they told ``silence``, and the clients of
    those cut short, whose late answers are still taken. Not thread-safe: the round's own."""

    def __init__(self, silence: CoordinatorSilence | None) -> None:
        self.silence = silence
        self.last: Exception | None = None  # the last ask's error
        self.refusals: dict[str, ConnectFailed] = {}  # endpoint -> how its connect failed, this round
        self.saved_ms = 0  # the most an ask cut short had taken off its timeout
        self._cut: list[tuple[BlockingClient, int]] = []  # (client, sent ms) of the asks cut short
        self._unanswered: list[tuple[str, CodedError, int, int]] = []  # (endpoint, error, sent ms, ended ms)

    def ask(self, ctx: zmq.Context, ep: str, try_ms: int, cut_ms: int) -> tuple[ClusterMetadata, str] | None:
        """Ask ``ep`` for at most ``try_ms``, ``cut_ms`` less than it would have had: the
        metadata and ``ep``, or None (kept for its late answer when it timed out cut short)."""
        # a failed connect (refused: the node's process dead, its host up; or its host out of
        # reach) ends the ask at once: the next endpoint is asked, not after the timeout
        # libzmq's retries of the connect took
        client = BlockingClient(ctx, ep, fail_on_refused=True)
        kept = False
        sent_ms = int(time.monotonic() * 1000)
        try:
            header, _ = client.call(P.METADATA, {}, timeout_ms=try_ms)
        except CodedError as e:
            self.last = _untraced(e)
            if isinstance(e, ConnectFailed):
                self.refusals[ep] = e
            self._heard(ep, e, sent_ms)
            # no connection (refused, or the host out of reach): the node cannot answer now, and
            # the round's end does not wait for its answer
            if isinstance(e, RequestTimeout) and not isinstance(e, ConnectFailed) and cut_ms > 0:
                self._cut.append((client, sent_ms))
                self.saved_ms, kept = max(self.saved_ms, cut_ms), True
            return None
        finally:
            if not kept:
                client.close()
        return self._answered(header, ep, sent_ms)

    def late(self, wait_ms: int) -> tuple[ClusterMetadata, str] | None:
        """A late answer of an ask cut short that comes within ``wait_ms`` (0: one already
        here): the metadata and its endpoint, or None. The clients are looked at in turn, each
        for at most ``LATE_ANSWER_LOOK_MS`` (a round that failed, the cut asks few)."""
        deadline_s = time.monotonic() + wait_ms / 1000
        while self._cut:
            for client, sent_ms in list(self._cut):
                look_ms = max(0, min(LATE_ANSWER_LOOK_MS, int((deadline_s - time.monotonic()) * 1000)))
                try:
                    header, _ = client.late_reply(look_ms)
                except ConnectFailed:  # the node is gone (or out of reach), and the ask with it: no answer comes
                    self._drop(client, sent_ms)
                    continue
                except RequestTimeout:
                    continue  # not yet: it may still come
                except CodedError as e:  # an answer, but no metadata
                    self._drop(client, sent_ms)
                    self.last = _untraced(e)
                    self._heard(client.endpoint, e, sent_ms)
                    continue
                got = self._answered(header, client.endpoint, sent_ms)
                if got is not None:
                    return got
                self._drop(client, sent_ms)
            if time.monotonic() >= deadline_s:
                return None
        return None

    def _drop(self, client: BlockingClient, sent_ms: int) -> None:
        """An ask cut short whose answer came, or can no longer come: not looked at again."""
        self._cut.remove((client, sent_ms))
        client.close()

    def _answered(self, header: dict, ep: str, sent_ms: int) -> tuple[ClusterMetadata, str] | None:
        md = read_answer(header, ep)
        if md is None:
            self.last = MalformedFrame(P.MALFORMED_REQUEST, f"unreadable metadata from {ep}")
        elif md.version >= 0 and self.silence is not None:
            self.silence.seen(md)  # before heard: the coordinator it names is known when its answer is heard
            for asked, error, asked_ms, ended_ms in self._unanswered:
                if asked == md.coordinator != ep:
                    self.silence.heard(asked, error, ended_ms, asked_ms)
        self._heard(ep, None, sent_ms)
        return (md, ep) if md is not None and md.version >= 0 else None

    def _heard(self, ep: str, error: CodedError | None, sent_ms: int) -> None:
        if self.silence is None:
            return
        ended_ms = int(time.monotonic() * 1000)
        self.silence.heard(ep, error, ended_ms, sent_ms)
        if error is not None:
            self._unanswered.append((ep, error, sent_ms, ended_ms))

    def close(self) -> None:
        for client, _ in self._cut:
            client.close()
        self._cut.clear()


def _untraced(error: CodedError) -> CodedError:
    """``error`` without its traceback, which holds the frame that caught it: an ask's, whose
    ``self`` -- the asks -- keeps the error (``last``, ``refusals``), a reference cycle. Kept
    for its type and text only (the error the fetch raises is a new one), never raised again."""
    return error.with_traceback(None)
