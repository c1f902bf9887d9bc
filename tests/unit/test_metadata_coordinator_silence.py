"""Metadata asks with the coordinator's process dead: every refresh asked it first and waited
its whole timeout (3 s) before a broker's copy was asked -- a producer service whose
coordinator was SIGKILLed acknowledged nothing for 15 s (test_faults_gateway_produce). A
coordinator that went silent (a metadata ask timed out, or its connection was lost) is asked
after the brokers for a backoff (``CoordinatorSilence``: 1 s, doubled while it stays silent, up
to 10 s), then again; anything it answers ends that at once, and so does metadata naming
another coordinator. Both paths: ``metadata_endpoint`` (a producer's sender, a consumer) and
``fetch_metadata`` (``Admin.metadata``: the gateway, the CLI)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterator

import pytest
import zmq

from fabric import protocol as P
from fabric.client.bootstrap import fetch_metadata, metadata_endpoint
from fabric.client.coordinator_silence import (COORDINATOR_ASK_TIMEOUT_MS, COORDINATOR_PROBE_TIMEOUT_MS,
                                               COORDINATOR_SILENT_BACKOFF_MS_MAX, COORDINATOR_SILENT_BACKOFF_MS_MIN,
                                               CoordinatorSilence)
from fabric.errors import ConnectionLost, RemoteError, RequestTimeout
from fabric.metadata import BrokerInfo, ClusterMetadata
from fabric.client.consumer import Consumer
from fabric.clock import ManualClock
from tests.unit.fakes import RecordingClient

COORDINATOR = "tcp://127.0.0.1:19004"
BROKERS = ["tcp://127.0.0.1:19001", "tcp://127.0.0.1:19002", "tcp://127.0.0.1:19003"]
MD = dataclasses.replace(ClusterMetadata.empty(), version=7, coordinator=COORDINATOR, state_id="s1")


def _broker(broker_id: int, alive: bool) -> BrokerInfo:
    return BrokerInfo(broker_id, "127.0.0.1", 19000 + broker_id, 19100 + broker_id, alive)


def _silent_since(now_ms: int, md: ClusterMetadata = MD) -> CoordinatorSilence:
    silence = CoordinatorSilence()
    silence.seen(md)
    silence.heard(md.coordinator, RequestTimeout("no reply"), now_ms)
    return silence


def _asked(silence: CoordinatorSilence | None, now_ms: int, tries: int,
           endpoints: list[str] | None = None) -> list[str]:
    return [metadata_endpoint(MD, endpoints or [COORDINATOR, *BROKERS], a, silence, now_ms) for a in range(tries)]


def test_a_coordinator_that_timed_out_is_asked_after_the_brokers_until_its_backoff_ends() -> None:
    silence = _silent_since(1000)
    within = 1000 + COORDINATOR_SILENT_BACKOFF_MS_MIN - 1
    assert _asked(silence, within, 4) == [*BROKERS, BROKERS[0]]  # no turn of the coordinator's
    assert _asked(silence, 1000 + COORDINATOR_SILENT_BACKOFF_MS_MIN, 2) == [COORDINATOR] * 2  # asked again


def test_a_lost_connection_is_silence_too_and_an_ask_sent_before_it_does_not_lengthen_it() -> None:
    silence = CoordinatorSilence()
    silence.seen(MD)
    silence.heard(COORDINATOR, ConnectionLost("lost"), 0)
    silence.heard(COORDINATOR, RequestTimeout("no reply"), 10)  # sent before: the backoff stays
    assert silence.skips(COORDINATOR, COORDINATOR_SILENT_BACKOFF_MS_MIN - 1)
    assert not silence.skips(COORDINATOR, COORDINATOR_SILENT_BACKOFF_MS_MIN)


def test_the_backoff_grows_while_the_coordinator_stays_silent_up_to_its_bound() -> None:
    now, silence, lengths = 0, _silent_since(0), []
    for _ in range(8):
        backoff = next(ms for ms in range(0, 10 * COORDINATOR_SILENT_BACKOFF_MS_MAX, 250)
                       if not silence.skips(COORDINATOR, now + ms))
        lengths.append(backoff)
        now += backoff  # the backoff is over: asked again, silent again
        silence.heard(COORDINATOR, RequestTimeout("no reply"), now)
    assert lengths[0] == COORDINATOR_SILENT_BACKOFF_MS_MIN
    assert lengths == sorted(lengths) and lengths[1] > lengths[0], lengths
    assert max(lengths) == COORDINATOR_SILENT_BACKOFF_MS_MAX, lengths


@pytest.mark.parametrize("answer", [None, RemoteError(P.NOT_LEADER, "an error is an answer")], ids=["reply", "error"])
def test_an_answer_of_the_coordinator_ends_its_backoff_at_once(answer: Exception | None) -> None:
    silence = _silent_since(0)
    silence.heard(COORDINATOR, answer, 10)
    assert _asked(silence, 10, 4)[0::2] == [COORDINATOR] * 2  # its every other turn again


def test_a_brokers_answer_or_the_clients_own_errors_do_not_end_the_backoff() -> None:
    silence = _silent_since(0)
    silence.heard(BROKERS[0], None, 10)
    silence.seen(MD)  # a broker's copy naming the same coordinator process
    silence.heard(COORDINATOR, ConnectionRefusedError(), 20)
    assert silence.skips(COORDINATOR, 30)


@pytest.mark.parametrize("changed", [{"state_id": "s2"}, {"coordinator": "tcp://127.0.0.1:19005"}],
                         ids=["restarted", "moved"])
def test_metadata_naming_another_coordinator_ends_the_backoff(changed: dict) -> None:
    silence = _silent_since(0)
    new = dataclasses.replace(MD, version=8, **changed)
    silence.seen(new)
    assert metadata_endpoint(new, [COORDINATOR, *BROKERS], 0, silence, 10) == new.coordinator


def test_a_bootstrap_list_of_the_coordinator_alone_asks_it_while_silent_too() -> None:
    assert _asked(_silent_since(0), 10, 3, [COORDINATOR]) == [COORDINATOR] * 3


def test_a_broker_that_times_out_is_not_taken_for_the_coordinator() -> None:
    silence = CoordinatorSilence()
    silence.seen(MD)
    silence.heard(BROKERS[0], RequestTimeout("no reply"), 0)
    assert not silence.silent(COORDINATOR) and _asked(silence, 10, 2) == [COORDINATOR, BROKERS[0]]


# -- the paths that ask: a consumer (as a producer's sender), fetch_metadata (Admin) ------------

def test_a_consumer_asks_the_brokers_while_its_coordinator_is_silent_then_the_coordinator_again() -> None:
    clock, clients = ManualClock(), {}
    consumer = Consumer([COORDINATOR, *BROKERS], clock=clock,
                        client_factory=lambda endpoint: clients.setdefault(endpoint, RecordingClient()))

    def ask(answer: Exception | None) -> str:
        consumer._request_metadata()
        [asked] = [ep for ep, c in clients.items() if c.unanswered]
        client = clients[asked]
        _, _, _, callback = client.sent[client.unanswered.pop()]
        callback(None, [], answer) if answer else callback({"metadata": MD.to_wire()}, [], None)
        return asked
    try:
        consumer.metadata = MD
        assert ask(RequestTimeout("no reply")) == COORDINATOR
        asked = [ask(RequestTimeout("no reply")), ask(None), ask(None)]  # a broker silent too, the next answers
        # the unchanged code asked the coordinator second; the ask that made it silent takes no
        # broker's turn (metadata_attempt_after_failure): the first broker is next
        assert asked == [BROKERS[0], BROKERS[1], BROKERS[1]], asked
        clock.advance(COORDINATOR_SILENT_BACKOFF_MS_MIN)
        assert ask(None) == COORDINATOR  # the backoff is over: asked again, and it answers
        assert not consumer._md_silence.silent(COORDINATOR)
    finally:
        consumer.close()


def _muted(name: str) -> Iterator[tuple[str, Callable[[], int]]]:
    """A node's socket that takes requests and answers none (a hung or dead one); yields
    (endpoint, a count of the requests it got so far)."""
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.bind(f"inproc://{name}-{id(sock)}")
    got = [0]

    def asked() -> int:
        while sock.poll(0):
            sock.recv_multipart()
            got[0] += 1
        return got[0]
    yield sock.getsockopt_string(zmq.LAST_ENDPOINT), asked
    sock.close(0)


@pytest.fixture
def mute() -> Iterator[tuple[str, Callable[[], int]]]:
    """The coordinator, silent (``_muted``)."""
    yield from _muted("silent-coordinator")


@pytest.fixture
def mute_broker() -> Iterator[tuple[str, Callable[[], int]]]:
    """A broker, silent (``_muted``): killed while the metadata says it is alive."""
    yield from _muted("silent-broker")


def test_fetch_metadata_asks_a_coordinator_that_went_silent_after_the_brokers(scripted: Any, mute: Any) -> None:
    coordinator, asked = mute
    md = dataclasses.replace(MD, coordinator=coordinator)
    broker = scripted(lambda req: ({"metadata": md.to_wire()}, []))
    silence = CoordinatorSilence()
    silence.seen(md)
    for _ in range(3):  # the first ask waits for the coordinator; the others ask the broker first
        got, endpoint = fetch_metadata(zmq.Context.instance(), [coordinator, broker], 300, coordinator,
                                       silence=silence)
        assert (got.version, endpoint) == (md.version, broker)
    assert asked() == 1, f"the silent coordinator was asked {asked()} times"


def test_a_silent_coordinator_asked_again_after_its_backoff_is_waited_for_briefly(scripted: Any, mute: Any) -> None:
    """Asked for the whole timeout again, a dead coordinator held the refresh (and a gateway's
    produce requests behind it) as long as before its backoff."""
    coordinator, asked = mute
    md = dataclasses.replace(MD, coordinator=coordinator)
    broker = scripted(lambda req: ({"metadata": md.to_wire()}, []))
    silence = CoordinatorSilence()
    silence.seen(md)
    began_ms = int(time.monotonic() * 1000) - COORDINATOR_SILENT_BACKOFF_MS_MIN
    silence.heard(coordinator, RequestTimeout("no reply"), began_ms)  # its backoff is over
    assert silence.timeout_ms(coordinator, 20_000) == COORDINATOR_PROBE_TIMEOUT_MS
    assert silence.timeout_ms(broker, 20_000) == 20_000
    start = time.monotonic()
    got, endpoint = fetch_metadata(zmq.Context.instance(), [coordinator, broker], 20_000, coordinator, silence=silence)
    assert (endpoint, asked()) == (broker, 1)  # the backoff was over: the coordinator asked first, again
    assert time.monotonic() - start < 10, "the silent coordinator was waited for the whole timeout"
    assert silence.skips(coordinator, int(time.monotonic() * 1000))  # silent again: a longer backoff


def _answering_broker(scripted: Any, coordinator: str) -> tuple[str, CoordinatorSilence]:
    """A broker answering metadata that names ``coordinator``, and a silence that has seen it."""
    md = dataclasses.replace(MD, coordinator=coordinator)
    silence = CoordinatorSilence()
    silence.seen(md)
    return scripted(lambda req: ({"metadata": md.to_wire()}, [])), silence


def test_fetch_metadata_asks_first_the_broker_that_answered_last(scripted: Any, mute: Any, mute_broker: Any) -> None:
    """The bootstrap list's first broker dead as well (a leader killed, then the coordinator):
    asked first at every refresh, it held each for the whole timeout after the coordinator's."""
    (coordinator, asked), (dead_broker, dead_asked) = mute, mute_broker
    broker, silence = _answering_broker(scripted, coordinator)
    for _ in range(3):
        got, endpoint = fetch_metadata(zmq.Context.instance(), [coordinator, dead_broker, broker], 300, coordinator,
                                       silence=silence)
        assert endpoint == broker
    assert (asked(), dead_asked()) == (1, 1), "a silent endpoint asked again while a broker answers"


def test_the_brokers_the_metadata_says_are_dead_are_asked_after_the_others() -> None:
    """The leader killed just before the coordinator, first in the bootstrap list, held the
    first refresh after the coordinator's timeout for a timeout of its own."""
    md = dataclasses.replace(MD, brokers={1: _broker(1, False), 2: _broker(2, True), 3: _broker(3, True)})
    silence = CoordinatorSilence()
    silence.seen(md)
    assert silence.order([COORDINATOR, *BROKERS], COORDINATOR, 0) == [COORDINATOR, *BROKERS[1:], BROKERS[0]]
    silence.heard(COORDINATOR, RequestTimeout("no reply"), 0)
    assert silence.order([COORDINATOR, *BROKERS], COORDINATOR, 10) == [*BROKERS[1:], BROKERS[0], COORDINATOR]


def test_a_producer_or_consumer_asks_the_brokers_the_metadata_says_are_dead_after_the_live_ones() -> None:
    """Live ones first: a refresh a live broker answers never waits on a dead one (the turn moves
    on only after a failed ask); but asked all the same -- "dead" may be out of date
    (tests/unit/test_metadata_asks_brokers_marked_dead.py)."""
    md = dataclasses.replace(MD, brokers={1: _broker(1, False), 2: _broker(2, True), 3: _broker(3, True)})
    asked = [metadata_endpoint(md, [COORDINATOR, *BROKERS], a, _silent_since(0, md), 10) for a in range(4)]
    assert asked == [BROKERS[1], BROKERS[2], BROKERS[0], BROKERS[1]], asked
    assert [metadata_endpoint(md, [COORDINATOR, *BROKERS], a) for a in range(6)] == \
        [COORDINATOR, BROKERS[1], COORDINATOR, BROKERS[2], COORDINATOR, BROKERS[0]]  # the coordinator answering
    all_dead = dataclasses.replace(MD, brokers={i: _broker(i, False) for i in (1, 2, 3)})
    assert metadata_endpoint(all_dead, [COORDINATOR, *BROKERS], 1) == BROKERS[0]  # none left: asked anyway


def test_a_coordinator_is_waited_for_briefly_while_a_broker_could_answer_instead(scripted: Any, mute: Any) -> None:
    """Just killed, the coordinator held the first refresh of every client the whole timeout
    (3 s), the producer service's and then the gateway's, before it counted as silent."""
    coordinator, asked = mute
    md = dataclasses.replace(MD, coordinator=coordinator)
    broker = scripted(lambda req: ({"metadata": md.to_wire()}, []))
    silence = CoordinatorSilence()
    silence.seen(md)
    assert silence.timeout_ms(coordinator, 20_000) == COORDINATOR_ASK_TIMEOUT_MS
    assert silence.timeout_ms(coordinator, 20_000, brokers_left=False) == 20_000  # the only endpoint
    start = time.monotonic()
    got, endpoint = fetch_metadata(zmq.Context.instance(), [coordinator, broker], 20_000, coordinator, silence=silence)
    assert (endpoint, asked()) == (broker, 1)
    assert time.monotonic() - start < 10, "the coordinator was waited for the whole timeout"


def test_a_silent_coordinator_that_is_the_only_endpoint_is_waited_for_the_whole_timeout() -> None:
    """With nothing else to ask, a short probe only failed again: a coordinator back but slower
    than the probe (a loaded machine) was never heard, every refresh a timeout."""
    md = dataclasses.replace(MD, coordinator="tcp://127.0.0.1:9")
    silence = CoordinatorSilence()
    silence.seen(md)
    silence.heard(md.coordinator, RequestTimeout("no reply"), 0)
    assert silence.timeout_ms(md.coordinator, 3000, brokers_left=False) == 3000
    assert silence.timeout_ms(md.coordinator, 3000) == COORDINATOR_PROBE_TIMEOUT_MS


# -- one silence shared by several clients (a gateway's request threads) ---------------------

def test_a_client_with_no_metadata_yet_neither_ends_a_shared_silence_nor_asks_the_silent_coordinator() -> None:
    """A gateway's request threads share one silence: a thread's records-browser consumer,
    with no metadata of its own yet, ended it for every thread (its empty metadata names no
    coordinator) and asked the silent coordinator first."""
    silence = _silent_since(0)
    empty = ClusterMetadata.empty()
    asked = [metadata_endpoint(empty, [COORDINATOR, *BROKERS], a, silence, 10) for a in range(4)]
    assert silence.skips(COORDINATOR, 10), "metadata naming no coordinator ended the silence"
    assert COORDINATOR not in asked, asked
    assert silence.order([COORDINATOR, *BROKERS], None, 10)[-1] == COORDINATOR  # an Admin with none yet


def test_an_ask_sent_before_the_silence_began_does_not_lengthen_it_however_late_it_ends() -> None:
    """Shared, the silence hears asks of other threads sent before it began that time out after
    its backoff is over (a longer timeout): that is no further silence."""
    silence = _silent_since(1000)
    silence.heard(COORDINATOR, RequestTimeout("no reply"), 1000 + COORDINATOR_SILENT_BACKOFF_MS_MIN + 500, sent_ms=0)
    assert not silence.skips(COORDINATOR, 1000 + COORDINATOR_SILENT_BACKOFF_MS_MIN)
    probe_ms = 1000 + COORDINATOR_SILENT_BACKOFF_MS_MIN + 600
    silence.heard(COORDINATOR, RequestTimeout("no reply"), probe_ms + 500, sent_ms=probe_ms)  # a probe: silent again
    assert silence.skips(COORDINATOR, probe_ms + 500 + 2 * COORDINATOR_SILENT_BACKOFF_MS_MIN - 1)


def test_a_broker_not_yet_known_dead_is_waited_for_briefly_while_another_endpoint_is_left(
        scripted: Any, mute: Any, mute_broker: Any) -> None:
    """The leader killed just before the coordinator, while the metadata taken last still said
    it was alive: the first refresh after the coordinator's second asked it next and waited its
    whole timeout (3 s) -- a gateway acknowledged no produce for 4 s."""
    (coordinator, _), (dead_broker, dead_asked) = mute, mute_broker
    broker, silence = _answering_broker(scripted, coordinator)
    start = time.monotonic()
    got, endpoint = fetch_metadata(zmq.Context.instance(), [coordinator, dead_broker, broker], 20_000, coordinator,
                                   silence=silence)
    assert (endpoint, dead_asked()) == (broker, 1)
    assert time.monotonic() - start < 10, "the broker that does not answer was waited for the whole timeout"


def test_endpoints_another_watcher_sees_down_are_asked_last() -> None:
    """A gateway's health watcher PINGs every node: the leader it saw down 0.2 s before a fetch,
    still alive in the metadata taken last, was asked right after the coordinator; and a
    coordinator it sees down was probed at every backoff's end, holding produce 0.5 s. A
    coordinator it sees down that no ask found silent is asked first all the same, briefly
    (``test_a_coordinator_the_health_watcher_wrongly_sees_down_still_answers_a_look_for_a_topic_just_made``)."""
    down = {BROKERS[0]}
    silence = CoordinatorSilence(down=down.__contains__)
    silence.seen(MD)
    assert silence.order([COORDINATOR, *BROKERS], COORDINATOR, 0) == [COORDINATOR, *BROKERS[1:], BROKERS[0]]
    down.add(COORDINATOR)
    # not found silent, it is still asked first (the source of truth; the watcher takes a busy
    # node for down too), only briefly
    assert silence.order([COORDINATOR, *BROKERS], COORDINATOR, 0)[0] == COORDINATOR
    assert silence.timeout_ms(COORDINATOR, 3000) == COORDINATOR_PROBE_TIMEOUT_MS
    silence.heard(COORDINATOR, RequestTimeout("no reply"), 0)
    over_ms = COORDINATOR_SILENT_BACKOFF_MS_MIN  # its backoff is over: no probe while seen down
    assert silence.order([COORDINATOR, *BROKERS], COORDINATOR, over_ms)[-2:] == [BROKERS[0], COORDINATOR]
    down.clear()  # seen up again: probed first again
    assert silence.order([COORDINATOR, *BROKERS], COORDINATOR, over_ms) == [COORDINATOR, *BROKERS]


# -- a slow but live node, every other endpoint dead ----------------------------------------

def _slow(scripted: Any, delay_s: float, md: ClusterMetadata = MD) -> str:
    """A node answering metadata ``delay_s`` after each ask (a loaded machine)."""
    def answer(req: Any) -> tuple[dict, list]:
        time.sleep(delay_s)
        return {"metadata": md.to_wire()}, []
    return scripted(answer)


def test_a_slow_first_endpoint_is_heard_when_the_endpoints_after_it_do_not_answer(scripted: Any,
                                                                                    mute_broker: Any) -> None:
    """[coordinator, broker], the broker dead and the coordinator answering in 1.2 s: waited
    for the whole timeout it answered; cut to NOT_LAST_ASK_TIMEOUT_MS as not the round's last,
    every fetch failed -- the dead broker, asked last, was the one given the whole timeout."""
    dead, _ = mute_broker
    slow = _slow(scripted, 1.2)
    got, endpoint = fetch_metadata(zmq.Context.instance(), [slow, dead], 1500)
    assert (got.version, endpoint) == (MD.version, slow)


def test_a_silent_coordinator_asked_last_is_heard_when_it_answers_within_the_whole_timeout(
        scripted: Any, mute_broker: Any) -> None:
    """Within its backoff the coordinator is asked last: with every broker dead it is the one
    node left, yet it was probed for COORDINATOR_PROBE_TIMEOUT_MS -- a coordinator back but
    slower than that (0.8 s) never answered a fetch (the backoff grew, the probe stayed short)."""
    dead, _ = mute_broker
    slow = _slow(scripted, 0.8)
    md = dataclasses.replace(MD, coordinator=slow)
    silence = CoordinatorSilence()
    silence.seen(md)
    silence.heard(slow, RequestTimeout("no reply"), int(time.monotonic() * 1000))
    assert silence.order([slow, dead], slow, int(time.monotonic() * 1000)) == [dead, slow]
    got, endpoint = fetch_metadata(zmq.Context.instance(), [slow, dead], 1500, slow, silence=silence)
    assert endpoint == slow
    assert not silence.silent(slow), "its answer did not end its silence"


def test_a_client_holding_older_metadata_neither_ends_a_shared_silence_nor_asks_the_silent_coordinator() -> None:
    """A gateway request thread's records-browser consumer keeps the metadata of its last read:
    one from before the coordinator's restart (another ``state_id``) ended the silence of every
    thread when it asked for metadata (``seen`` took it for the newest), and was sent to the
    silent coordinator; the next fetch of every thread waited for it again (1 s) and its backoff
    started over from the least."""
    old = dataclasses.replace(MD, version=5, state_id="s0")
    silence = _silent_since(0, MD)  # MD: version 7 of the restarted coordinator, silent now
    asked = [metadata_endpoint(old, [COORDINATOR, *BROKERS], a, silence, 10) for a in range(4)]
    assert silence.skips(COORDINATOR, 10), "metadata older than the latest seen ended the silence"
    assert COORDINATOR not in asked, asked
    assert silence.order([COORDINATOR, *BROKERS], COORDINATOR, 10)[-1] == COORDINATOR


def test_a_timeout_of_an_ask_sent_before_the_coordinators_last_answer_begins_no_silence() -> None:
    """Shared, the silence hears the asks of several threads: one sent before another thread's
    ask that the coordinator answered, and timing out after it (the coordinator slow for a
    moment), silenced a coordinator that had just answered -- every thread asked the brokers
    first for the backoff, and a gateway's /health said it unreachable."""
    silence = CoordinatorSilence()
    silence.seen(MD)
    silence.heard(COORDINATOR, None, 600, sent_ms=500)  # another thread's ask, answered
    silence.heard(COORDINATOR, RequestTimeout("no reply"), 1000, sent_ms=0)  # sent before it
    assert not silence.silent(COORDINATOR), "an answer newer than the ask that timed out was ignored"
    silence.heard(COORDINATOR, RequestTimeout("no reply"), 1700, sent_ms=700)  # sent after it: silence
    assert silence.skips(COORDINATOR, 1700)


def test_a_first_fetch_answered_by_the_coordinator_counts_as_its_answer(scripted: Any) -> None:
    """The first fetch of a client names the coordinator only in its answer: that answer is
    the coordinator's all the same, and an ask of another thread sent before it does not
    silence it."""
    coordinator = scripted(lambda req: ({"metadata": dataclasses.replace(MD, coordinator=endpoint[0]).to_wire()}, []))
    endpoint = [coordinator]
    silence = CoordinatorSilence()
    sent_ms = int(time.monotonic() * 1000) - 1
    got, asked = fetch_metadata(zmq.Context.instance(), [coordinator], 1000, silence=silence)
    assert asked == coordinator
    silence.heard(coordinator, RequestTimeout("no reply"), int(time.monotonic() * 1000) + 1, sent_ms)
    assert not silence.silent(coordinator)


def test_a_consumer_whose_brokers_are_all_dead_waits_for_its_silent_coordinators_answer_the_whole_timeout() -> None:
    """With every broker dead (the metadata says so) the coordinator is the only node that can
    answer, yet its ask at each backoff's end was a probe of COORDINATOR_PROBE_TIMEOUT_MS: a
    coordinator back but slower than that (a loaded machine) was never heard again, and the
    consumer (or a producer's sender) never got metadata."""
    from fabric.client.consumer_failover import METADATA_TIMEOUT_MS
    all_dead = dataclasses.replace(MD, brokers={i: _broker(i, False) for i in (1, 2, 3)})
    clock, clients, timeouts = ManualClock(), {}, []

    class Timed(RecordingClient):
        def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                    timeout_ms: int = 0) -> int:
            timeouts.append(timeout_ms)
            return super().request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)
    consumer = Consumer([COORDINATOR, *BROKERS], clock=clock,
                        client_factory=lambda endpoint: clients.setdefault(endpoint, Timed()))
    try:
        consumer.metadata = all_dead
        consumer._md_silence.seen(all_dead)
        consumer._md_silence.heard(COORDINATOR, RequestTimeout("no reply"), clock.now_ms())
        clock.advance(COORDINATOR_SILENT_BACKOFF_MS_MIN)  # its backoff is over: asked again
        consumer._request_metadata()
        assert [ep for ep, c in clients.items() if c.unanswered] == [COORDINATOR]
        assert timeouts == [METADATA_TIMEOUT_MS], timeouts
    finally:
        consumer.close()
