"""Seeded bad input to every REST operation of the gateway (and to the routes around them), through
the real app and agent over a scripted cluster (tests/unit/builders_gateway_fuzz.py): no request
a client can craft may be answered 500 -- a programmer error there stops the gateway's worker
(tests/unit/test_gateway_programmer_errors.py), so such a request is a denial of service. Every
refusal is JSON ``{error_code, message}`` with error_code = status * 100 + n.

The seed and the count are fixed, so a failure names its case and repeats; a longer run with
many seeds is ``tests/fuzz_gateway.py``."""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import simple_websocket

from tests.unit.builders_bad_input import (WS_QUERIES, Case, rest_cases, ws_commit_frames, ws_first_frames,
                                           ws_produce_frames)
from tests.unit.builders_gateway_fuzz import ADMIN_KEY, fuzz_gateway
from tests.unit.fakes import served_wsgi
from webui.ws import MESSAGE_BYTES_MAX

SEED = 20261205
CASES_PER_OP = 12


def problem_of(case: Case, status: int, content_type: str, body: bytes) -> str | None:
    """What is wrong with the answer to ``case`` (None: nothing)."""
    if status >= 500:
        return f"{status}: {body[:300]!r}"
    if status >= 400:
        if not content_type.startswith("application/json"):
            return f"{status} answered as {content_type!r}, not a JSON error"
        try:
            err = json.loads(body)
        except ValueError:
            return f"{status} with a body that is not JSON: {body[:200]!r}"
        if not (isinstance(err, dict) and type(err.get("error_code")) is int and isinstance(err.get("message"), str)
                and err["error_code"] // 100 == status):
            return f"{status} with an error body out of shape: {err!r:.300}"
    return None


def send(client: Any, case: Case) -> tuple[int, str, bytes]:
    r = client.open(case.path, method=case.method, query_string=case.query, headers=case.headers, data=case.body)
    try:
        return r.status_code, r.headers.get("Content-Type", ""), r.get_data()
    finally:
        r.close()


def test_no_bad_request_to_any_route_is_answered_500(tmp_path: Path) -> None:
    app, agent, bugs, _ = fuzz_gateway(tmp_path)
    client = app.test_client()
    api = app.extensions["loom.api"]
    rng = random.Random(SEED)
    failures = []
    ran = 0
    for op, case in rest_cases(api, rng, CASES_PER_OP):
        agent.ensure_instance()
        status, content_type, body = send(client, case)
        ran += 1
        problem = problem_of(case, status, content_type, body)
        if problem is None and bugs:
            problem = "the worker was stopped"
        if problem:
            failures.append(f"{op.endpoint}: {case}: {problem}")
            bugs.clear()
    assert ran == len(api.ops) * CASES_PER_OP
    assert not failures, f"{len(failures)} of {ran} cases:\n" + "\n".join(failures[:20])


# -- WebSockets ------------------------------------------------------------------------------
WS_FRAMES_PER_STREAM = 60
DEADLINE_S = 10.0
EVENTS_WAIT_S = 0.2
# done, a bad message or query, a message too big -- never 1011, a server's error. 1005 and 1006:
# the client saw no close frame, when the gateway closed (1008) while a frame of the client's was on
# its way: the kernel answers a socket closed with unread data with a reset, dropping the close
# frame queued at the client. A programmer error is told by the worker's stop (``bugs``), not here
CLEAN_CLOSES = {1000, 1005, 1006, 1008, 1009}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Any, list[int]]]:
    app, _, bugs, gw = fuzz_gateway(tmp_path)
    with served_wsgi(app) as port:
        yield f"ws://127.0.0.1:{port}", gw, bugs


def connect(url: str) -> Any:
    return simple_websocket.Client.connect(url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})


def reconnect(url: str, gw: Any) -> Any:
    """A new socket once the closed one's route has ended (until then it holds a slot of the
    key's ``websockets_per_key_max``)."""
    assert gw.websockets.wait_closed(DEADLINE_S) == 0, "a stream did not end when its socket closed"
    return connect(url)


def answer_problem(text: Any, key: str) -> str | None:
    """What is wrong with a socket's answer to a client message (None: nothing); ``key``: what a
    success holds ("offsets", "committed")."""
    try:
        a = json.loads(text)
    except (TypeError, ValueError):
        return f"an answer that is not JSON: {text!r:.200}"
    if not isinstance(a, dict):
        return f"an answer that is no object: {a!r:.200}"
    if key in a and "error_code" not in a:
        return None
    if type(a.get("error_code")) is int and isinstance(a.get("message"), str) or a.get("committed") is False:
        return None
    return f"an answer out of shape: {a!r:.300}"


def closed_problem(c: Any, frame: Any) -> str | None:
    """What is wrong with how client ``c``'s socket was closed, after it sent ``frame``."""
    if c.close_reason in CLEAN_CLOSES:
        return None
    return f"closed {c.close_reason} {c.close_message!r} after {frame!r:.200}"


def quietly_closed(c: Any) -> None:
    with contextlib.suppress(simple_websocket.ConnectionClosed):
        c.close()


def stream_problems(url: str, gw: Any, frames: Iterator[str | bytes], answer: Callable[[Any], Any],
                    key: str) -> list[str]:
    """Send each of ``frames`` on a socket to ``url`` and read its ``answer`` (a success holds
    ``key``); a socket closed is opened again. What was wrong, per frame."""
    problems = []
    c = connect(url)
    try:
        for frame in frames:
            try:
                c.send(frame)
                problem = answer_problem(answer(c), key)
            except simple_websocket.ConnectionClosed:
                problem = closed_problem(c, frame)
                c = reconnect(url, gw)
            if problem:
                problems.append(f"{frame!r:.300}: {problem}")
    finally:
        quietly_closed(c)
    return problems


@pytest.mark.parametrize("fmt", ["json", "binary"])
def test_no_bad_message_to_ws_produce_is_a_programmer_error(served: Any, fmt: str) -> None:
    url, gw, bugs = served
    problems = stream_problems(f"{url}/ws/produce?topic=t&format={fmt}", gw,
                               ws_produce_frames(random.Random(SEED), fmt, WS_FRAMES_PER_STREAM),
                               lambda c: c.receive(timeout=DEADLINE_S), "offsets")
    assert not problems and not bugs, "\n".join(problems[:20])


def next_commit_answer(c: Any) -> Any:
    """The next answer to a commit, past the records and ready messages the stream pushes."""
    while True:
        text = c.receive(timeout=DEADLINE_S)
        if text is None or "committed" in json.loads(text):
            return text


def test_no_bad_message_to_ws_consume_is_a_programmer_error(served: Any) -> None:
    url, gw, bugs = served
    problems = stream_problems(f"{url}/ws/consume?topic=t&group=g", gw,
                               ws_commit_frames(random.Random(SEED), WS_FRAMES_PER_STREAM), next_commit_answer,
                               "committed")
    assert not problems and not bugs, "\n".join(problems[:20])


@pytest.mark.parametrize("path", ["/ws/produce", "/ws/consume", "/ws/events"])
def test_no_odd_query_or_frame_stops_a_websocket_route(served: Any, path: str) -> None:
    """Odd query strings open the stream or close it cleanly; a frame over the size limit, a
    binary frame that is no UTF-8 and a message to /ws/events close it or are ignored."""
    url, gw, bugs = served
    problems = []
    wait_s = EVENTS_WAIT_S if path == "/ws/events" else DEADLINE_S  # it answers nothing: its first event, if any
    message = {"/ws/produce": '{"id": 1, "value": "x"}', "/ws/consume": '{"commit": "all"}'}.get(path, "x")
    frames = [("topic=t", frame) for frame in (b"\xff\xfe" * 10, "x" * (MESSAGE_BYTES_MAX + 1), b"\x00" * 100)]
    # /ws/events reads no query, and its route ends up to a second after its client left: its
    # three sockets are within the key's cap without waiting for them
    sends = frames if path == "/ws/events" else [(query, message) for query in WS_QUERIES] + frames
    for query, frame in sends:
        c = connect(f"{url}{path}?{query}")
        try:
            c.send(frame)
            c.receive(timeout=wait_s)
        except (simple_websocket.ConnectionClosed, OSError):  # OSError: closed while a large frame went out
            problem = closed_problem(c, f"{query} {frame!r:.60}")
            if problem:
                problems.append(f"{path}?{query}: {problem}")
        finally:
            quietly_closed(c)
        if path != "/ws/events":  # each stream holds a slot of its key until its route has ended
            assert gw.websockets.wait_closed(DEADLINE_S) == 0, "a stream did not end when its socket closed"
    assert not problems and not bugs, "\n".join(problems[:20])


FIRST_MESSAGES_PER_ROUTE = 12


@pytest.mark.parametrize("path", ["/ws/produce?topic=t", "/ws/consume?topic=t", "/ws/events"])
def test_no_first_message_stops_a_websocket_route(served: Any, path: str) -> None:
    """A browser's key comes as the socket's first message, before anything is known of the
    client: whatever it holds, the socket is refused with 1008 (or served, with a good key)."""
    url, gw, bugs = served
    rng = random.Random(SEED)
    problems = []
    for frame in ws_first_frames(rng, FIRST_MESSAGES_PER_ROUTE):
        c = simple_websocket.Client.connect(f"{url}{path}")
        try:
            c.send(frame)
            c.receive(timeout=DEADLINE_S)
        except (simple_websocket.ConnectionClosed, OSError):
            problem = closed_problem(c, frame)
            if problem:
                problems.append(problem)
        finally:
            quietly_closed(c)
        assert gw.websockets.wait_closed(DEADLINE_S) == 0, "a socket's route did not end when it closed"
    assert not problems and not bugs, "\n".join(problems[:20])
