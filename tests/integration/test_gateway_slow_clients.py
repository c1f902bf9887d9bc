"""Clients that stop sending in the middle of a request, against a real gateway
(webui/read_deadline.py, nodes/gateway/worker.py). Each such request used to hold one of the
gateway's request threads until its client closed the connection: as many as there are
threads (8 here) and the gateway stopped answering anything, ``/health/live`` included, so the
monitor restarted it. Now each is cut at ``gateway.request_read_timeout_ms`` (1 s here): a body
that stopped coming is answered 408 (40802) and nothing of it is written; headers that never
ended close the connection; the threads answer everyone else meanwhile. A body that comes
slowly but steadily, and a long poll that waits longer than the deadline, are not cut."""

from __future__ import annotations

import base64
import json
import socket
import time

import pytest
import websocket

from tests.gateway_client import GATEWAY_NODES, ROLE_KEYS, Http, gateway_overrides
from tests.harness import Cluster, wait_until

pytestmark = pytest.mark.timeout(120)
THREADS = 8
DEADLINE_MS = 1000
CLUSTER_OPTIONS = {"brokers": 1, "extra_nodes": GATEWAY_NODES,
                   "overrides": gateway_overrides(worker_threads=THREADS, websockets_max=2,
                                                  request_read_timeout_ms=DEADLINE_MS)}
TOPIC = "slow-clients"


@pytest.fixture(scope="module")
def http(module_cluster: Cluster) -> Http:
    h = Http(module_cluster.raw["nodes"]["gateway"]["port"])
    h.ok("POST", "/v3/clusters/test/topics", {"topic_name": TOPIC, "partitions_count": 1})
    wait_until(lambda: h.ok("GET", f"/v3/clusters/test/topics/{TOPIC}/partitions")["data"][0]["leader"] is not None,
               20, what="the topic led")
    return h


def port_of(http: Http) -> int:
    return int(http.base.rsplit(":", 1)[1])


def partial_produce(port: int, body: bytes, length: int) -> socket.socket:
    """A produce whose headers promise ``length`` bytes of body and that sent only ``body``."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /topics/" + TOPIC.encode() + b" HTTP/1.1\r\nHost: gw\r\nContent-Type: application/vnd.kafka.binary.v2+json\r\n"
              b"Authorization: Bearer " + ROLE_KEYS["admin"].encode() + b"\r\nContent-Length: " + str(length).encode()
              + b"\r\n\r\n" + body)
    return s


def read_to_end(s: socket.socket, timeout_s: float) -> bytes:
    s.settimeout(timeout_s)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def log_end(http: Http) -> int:
    return http.ok("GET", f"/topics/{TOPIC}/partitions/0/offsets")["end_offset"]


def cuts(cluster: Cluster, phase: str) -> float:
    return sum(m[2] for m in cluster.stats("gateway")["metrics"]
               if m[0] == "loom_gateway_requests_cut_total" and m[1] == [phase])


def test_bodies_that_stop_coming_are_answered_408_and_hold_no_thread(cluster: Cluster, http: Http) -> None:
    end_before, cut_before = log_end(http), cuts(cluster, "body")
    record = json.dumps({"records": [{"value": base64.b64encode(b"never whole").decode()}]}).encode()
    stalled = [partial_produce(port_of(http), record, len(record) + 10) for _ in range(2 * THREADS)]
    try:
        started = time.monotonic()
        assert http("GET", "/health/live", timeout_s=15).status_code == 200, "served while they stall"
        assert time.monotonic() - started < 10
        for s in stalled:
            head = assert_408_and_closed(s, "a stalled produce")  # the answer, then the end of the connection
            assert b"\r\nconnection: close\r\n" in head.lower() + b"\r\n", "it says so, and closes"
    finally:
        for s in stalled:
            s.close()
    assert log_end(http) == end_before, "nothing of a cut request was written"
    assert cuts(cluster, "body") - cut_before == 2 * THREADS


def test_headers_that_never_end_close_the_connection(cluster: Cluster, http: Http) -> None:
    before = cuts(cluster, "headers")
    s = socket.create_connection(("127.0.0.1", port_of(http)))
    try:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n")  # no blank line: the headers go on, and stop
        started = time.monotonic()
        assert read_to_end(s, 15) == b"", "closed without an answer: there is no request to answer"
        assert DEADLINE_MS / 1000 * 0.9 <= time.monotonic() - started
    finally:
        s.close()
    assert cuts(cluster, "headers") - before == 1


def test_a_slow_steady_body_and_a_long_poll_are_not_cut(cluster: Cluster, http: Http) -> None:
    """Twice the deadline to send a body at ~128 KiB/s (each 64 KiB buys 1 s more), and a long
    poll that waits 2.5 s for records: both served."""
    values = [base64.b64encode(bytes([i]) * 12_000).decode() for i in range(16)]
    body = json.dumps({"records": [{"value": v} for v in values]}).encode()  # ~256 KB
    s = partial_produce(port_of(http), b"", len(body))
    try:
        piece = len(body) // 10 + 1
        for i in range(0, len(body), piece):
            s.sendall(body[i:i + piece])
            time.sleep(DEADLINE_MS / 1000 / 5)  # the scenario: 2 deadlines for the whole body
        head, _, answer = read_until_answer(s)
    finally:
        s.close()
    assert head.startswith(b"HTTP/1.1 200"), head
    assert [o["error_code"] for o in json.loads(answer)["offsets"]] == [None] * 16
    started = time.monotonic()
    r = http("GET", f"/topics/{TOPIC}/partitions/0/records", offset=log_end(http), timeout=2500)
    assert r.status_code == 200 and r.json() == [], r.text
    assert time.monotonic() - started >= 2.0, "it waited past the deadline"


def read_until_answer(s: socket.socket) -> tuple[bytes, bytes, bytes]:
    """The head and body of one answer on a kept-alive connection (its Content-Length)."""
    s.settimeout(15)
    data = b""
    while b"\r\n\r\n" not in data:
        data += recv_some(s)
    head, sep, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += recv_some(s)
    return head, sep, body


def recv_some(s: socket.socket) -> bytes:
    data = s.recv(65536)
    assert data, "the gateway closed the connection without an answer"
    return data


HEALTH_LIVE = b"GET /health/live HTTP/1.1\r\nHost: gw\r\n\r\n"


def test_a_connection_with_nothing_sent_yet_is_not_cut(cluster: Cluster, http: Http) -> None:
    """A connection opened ahead of its first request (a browser's preconnect, a client's
    pool) has no request whose bytes stopped: gunicorn parks it until its first byte. It is
    neither closed at the deadline nor counted as cut, and its request, sent later, is served."""
    before = cuts(cluster, "headers")
    s = socket.create_connection(("127.0.0.1", port_of(http)))
    try:
        time.sleep(DEADLINE_MS / 1000 * 1.5)  # the scenario: the first request comes after the deadline
        s.sendall(HEALTH_LIVE)
        head, _, _ = read_until_answer(s)
    finally:
        s.close()
    assert head.startswith(b"HTTP/1.1 200"), head
    assert cuts(cluster, "headers") == before


def test_a_kept_alive_connection_idle_past_the_deadline_serves_its_next_request(cluster: Cluster, http: Http) -> None:
    before = cuts(cluster, "headers") + cuts(cluster, "body")
    s = socket.create_connection(("127.0.0.1", port_of(http)))
    try:
        s.sendall(HEALTH_LIVE)
        assert read_until_answer(s)[0].startswith(b"HTTP/1.1 200")
        time.sleep(DEADLINE_MS / 1000 * 1.5)  # the scenario: idle between requests, within keep-alive
        s.sendall(HEALTH_LIVE)
        head, _, _ = read_until_answer(s)
    finally:
        s.close()
    assert head.startswith(b"HTTP/1.1 200"), head
    assert cuts(cluster, "headers") + cuts(cluster, "body") == before


STALLED_ROUTES = [  # every route that reads a body, each with a body that stops coming
    ("POST", "/v3/clusters/test/topics", b'{"topic_name": "never-'),
    ("PATCH", f"/v3/clusters/test/topics/{TOPIC}", b'{"partitions_'),
    ("POST", "/v3/clusters/test/consumer-groups/g/reset-offsets", b'{"to'),
    ("POST", "/consumers/g", b'{"name": "i'),
    ("POST", "/consumers/g/instances/i/subscription", b'{"topics": ['),
    ("POST", "/consumers/g/instances/i/assignments", b'{"partitions'),
    ("POST", "/consumers/g/instances/i/offsets", b'{"offsets'),
    ("POST", "/consumers/g/instances/i/positions", b'{"offsets'),
    ("POST", "/consumers/g/instances/i/positions/beginning", b'{"partitions'),
    ("POST", f"/topics/{TOPIC}/partitions/0", b'{"records'),  # the fast path
]


def stalled_request(port: int, method: str, path: str, head: bytes, body: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(method.encode() + b" " + path.encode() + b" HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
              b"Authorization: Bearer " + ROLE_KEYS["admin"].encode() + b"\r\n" + head + b"\r\n" + body)
    return s


def assert_408_and_closed(s: socket.socket, what: str) -> bytes:
    """Read ``s`` to its end: one 408 / 40802 answer. Returns its head."""
    answer = read_to_end(s, 15)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), (what, answer[:300])
    assert json.loads(body)["error_code"] == 40802, (what, body)
    return head


def test_every_route_that_reads_a_body_answers_a_stalled_one_408(cluster: Cluster, http: Http) -> None:
    """Flask's routes (the body read through werkzeug's stream, Content-Length or chunked) and
    the produce fast path: 408 / 40802 each, never a 400 or a 500, nothing in the log."""
    log = cluster.log_dir / "gateway.log"
    log_before = len(log.read_bytes())
    end_before = log_end(http)
    stalled = [(f"{m} {p}", stalled_request(port_of(http), m, p, b"Content-Length: %d\r\n" % (len(b) + 10), b))
               for m, p, b in STALLED_ROUTES]
    stalled += [(f"chunked {m} {p}", stalled_request(port_of(http), m, p, b"Transfer-Encoding: chunked\r\n",
                                                     b"%x\r\n%s\r\n" % (len(b), b)))
                for m, p, b in STALLED_ROUTES[::3]]
    try:
        for what, s in stalled:
            assert_408_and_closed(s, what)
    finally:
        for _, s in stalled:
            s.close()
    assert log_end(http) == end_before
    written = log.read_bytes()[log_before:].decode(errors="replace")
    assert "Traceback" not in written and "50001" not in written, written[-3000:]


def test_a_chunked_body_broken_or_left_is_answered_400_and_the_worker_goes_on(cluster: Cluster, http: Http) -> None:
    """A chunk size that is no number, or a client that closes its sending side inside a chunk:
    the client's error (400 / 40001), not a bug's 500 that stops the worker."""
    log = cluster.log_dir / "gateway.log"
    log_before = len(log.read_bytes())
    for body in (b"zz\r\n{}\r\n0\r\n\r\n", b"50\r\n{\"records"):
        s = stalled_request(port_of(http), "POST", "/consumers/g", b"Transfer-Encoding: chunked\r\n", body)
        try:
            s.shutdown(socket.SHUT_WR)
            answer = read_to_end(s, 15)
        finally:
            s.close()
        head, _, answer_body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), answer[:300]
        assert json.loads(answer_body)["error_code"] == 40001, answer_body
    written = log.read_bytes()[log_before:].decode(errors="replace")
    assert "Traceback" not in written and "stopping worker" not in written, written[-3000:]


def test_a_websocket_open_past_the_deadline_is_not_cut(cluster: Cluster, http: Http) -> None:
    before = cuts(cluster, "headers") + cuts(cluster, "body")
    ws = websocket.create_connection(f"ws://127.0.0.1:{port_of(http)}/ws/produce?topic={TOPIC}",
                                     header=[f"Authorization: Bearer {ROLE_KEYS['produce']}"], timeout=10)
    try:
        time.sleep(DEADLINE_MS / 1000 * 1.5)  # the scenario: the stream idles past the deadline
        ws.send(json.dumps({"id": 1, "value": {"n": 1}}))
        answer = json.loads(ws.recv())
    finally:
        ws.close()
    assert answer["id"] == 1 and answer["offsets"][0]["error_code"] is None, answer
    assert cuts(cluster, "headers") + cuts(cluster, "body") == before


def test_a_long_poll_sent_with_a_body_is_not_cut(cluster: Cluster, http: Http) -> None:
    """Some clients send every request with a JSON body, a GET's ``{}`` included. The route
    never reads it: its wait for records is its own, not a body that stopped coming."""
    before = cuts(cluster, "headers") + cuts(cluster, "body")
    s = socket.create_connection(("127.0.0.1", port_of(http)))
    try:
        s.sendall(f"GET /topics/{TOPIC}/partitions/0/records?offset={log_end(http)}&timeout=2500 HTTP/1.1\r\n"
                  f"Host: gw\r\nAuthorization: Bearer {ROLE_KEYS['admin']}\r\nContent-Type: application/json\r\n"
                  "Content-Length: 2\r\n\r\n{}".encode())
        head, _, answer = read_until_answer(s)
        assert head.startswith(b"HTTP/1.1 200") and json.loads(answer) == [], head + answer
        s.sendall(HEALTH_LIVE)  # the connection is kept alive
        assert read_until_answer(s)[0].startswith(b"HTTP/1.1 200")
    finally:
        s.close()
    assert cuts(cluster, "headers") + cuts(cluster, "body") == before
