"""The gateway's WebSockets with a real client library (websocket-client): produce and
consume, resume from the committed offset, "ready" from the end and every record after it,
first-message auth, node health on /ws/events, and a deliberately slow consumer that is closed
with 1013 while the gateway's RSS stays flat. This cluster also has
``gateway.auto_create_topics`` on, and serves the dashboard port's page."""

from __future__ import annotations

import array
import fcntl
import json
import signal
import socket
import struct
import termios
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import websocket

from nodes.gateway import GRACEFUL_TIMEOUT_S
from nodes.gateway.control import HEALTH_INTERVAL_MS, PING_TIMEOUT_MS
from tests.gateway_client import GATEWAY_NODES, ROLE_KEYS, Http, gateway_overrides
from tests.harness import Cluster, wait_until
from webui.ws_guard import LINGER_S

pytestmark = pytest.mark.timeout(120)
QUEUE_MAX = 4
SLOW_TIMEOUT_MS = 1000
RECORDS_UNREAD_BYTES = 4096  # unread bytes that are records: a control frame (a ping) is at most 127

# one cluster for the module (tests/conftest.py)
CLUSTER_OPTIONS = {"brokers": 3, "extra_nodes": GATEWAY_NODES,
                   "overrides": gateway_overrides(ws_send_queue_max=QUEUE_MAX, auto_create_topics=True,
                                                  ws_slow_client_timeout_ms=SLOW_TIMEOUT_MS)}


@pytest.fixture(scope="module", autouse=True)
def _prepared(module_cluster: Cluster) -> None:
    c = module_cluster
    http = Http(c.raw["nodes"]["gateway"]["port"])
    for name, parts in (("ws", 3), ("big", 1), ("tail", 3), ("late", 1)):
        http.ok("POST", "/v3/clusters/test/topics", {"topic_name": name, "partitions_count": parts})
        wait_until(lambda: all(p["leader"] for p in http.ok("GET", f"/v3/clusters/test/topics/{name}/partitions")["data"]),
                   20, what="leaders")


def gateway_worker(cluster: Cluster) -> Path:
    """/proc of the gateway's (one) worker process."""
    master = cluster.procs["gateway"].pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return Path(f"/proc/{children[0]}")


def gateway_threads(cluster: Cluster) -> list[Path]:
    return list((gateway_worker(cluster) / "task").iterdir())


def gateway_fds(cluster: Cluster) -> list[Path]:
    return list((gateway_worker(cluster) / "fd").iterdir())


def settled(count: Callable[[], int]) -> int:
    """``count()`` once it is the same twice in a row, half a second apart."""
    last = [-1]

    def same() -> bool:
        n = count()
        held = n == last[0]
        last[0] = n
        return held
    wait_until(same, 10, interval_s=0.5, what="a count that holds")
    return last[0]


def url(cluster: Cluster, path: str) -> str:
    return f"ws://127.0.0.1:{cluster.raw['nodes']['gateway']['port']}{path}"


def connect(cluster: Cluster, path: str, role: str | None = "admin", **kw: Any) -> websocket.WebSocket:
    header = [f"Authorization: Bearer {ROLE_KEYS[role]}"] if role else []
    return websocket.create_connection(url(cluster, path), header=header, timeout=10, **kw)


def recv_json(ws: websocket.WebSocket) -> dict:
    return json.loads(ws.recv())


def close_code(ws: websocket.WebSocket, timeout_s: float = 20) -> tuple[int, str]:
    """Read until the server's close frame; its (code, reason). Fails once ``timeout_s`` has
    passed in all: the gateway's pings, read as frames too, renewed a timeout of each read, so a
    close that never came held the test until pytest's own timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no close frame within {timeout_s} s"
        ws.settimeout(left)
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return struct.unpack("!H", data[:2])[0], data[2:].decode()


def unread_bytes(ws: websocket.WebSocket) -> int:
    """Bytes in the client's socket that it has not read (FIONREAD)."""
    n = array.array("i", [0])
    fcntl.ioctl(ws.sock.fileno(), termios.FIONREAD, n)
    return n[0]


def stop_reading(ws: websocket.WebSocket, timeout_s: float = 20) -> None:
    """Be a client too slow for its stream: read nothing, from when its records begin to come
    (within ``timeout_s`` of now) for twice the gateway's patience with a full queue. Counted from
    the connect, the pause could end before the queue had been full that long -- the records
    come once the stream's consumer is positioned, over a second after the connect while its
    group's offsets partition changes leader -- and the client then read everything, unclosed."""
    wait_until(lambda: unread_bytes(ws) >= RECORDS_UNREAD_BYTES, timeout_s, what="the stream's records coming")
    time.sleep(SLOW_TIMEOUT_MS / 1000 * 2)  # not reading: the queue fills and stays full


def consume(ws: websocket.WebSocket, n: int, timeout_s: float = 20) -> list[dict]:
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    ws.settimeout(timeout_s)
    while len(out) < n and time.monotonic() < deadline:
        msg = recv_json(ws)
        out += msg.get("records", [])
    return out


def test_produce_and_consume_resuming_from_the_committed_offset(cluster: Cluster) -> None:
    prod = connect(cluster, "/ws/produce?topic=ws", role="produce")
    try:
        for i in range(20):
            prod.send(json.dumps({"id": i, "key": f"k{i}", "value": {"n": i}}))
        answers = [recv_json(prod) for _ in range(20)]
        assert [a["id"] for a in answers] == list(range(20))
        assert all(a["offsets"][0]["error_code"] is None and a["offsets"][0]["offset"] >= 0 for a in answers)
        prod.send(json.dumps({"records": [{"value": {"n": 20 + i}} for i in range(10)]}))
        assert len(recv_json(prod)["offsets"]) == 10
        prod.send("not json")
        assert recv_json(prod)["error_code"] == 42204, "a bad message is answered, the stream goes on"
    finally:
        prod.close()

    cons = connect(cluster, "/ws/consume?topic=ws&group=g-ws&from=beginning&auto_commit=false", role="consume")
    first = consume(cons, 15)
    assert len(first) >= 15
    done = sorted(first, key=lambda r: (r["partition"], r["offset"]))
    cons.send(json.dumps({"commit": [{"topic": "ws", "partition": r["partition"], "offset": r["offset"]} for r in done]}))
    while "committed" not in (msg := recv_json(cons)):
        pass
    cons.close()
    seen = {(r["partition"], r["offset"]) for r in first}
    again = connect(cluster, "/ws/consume?topic=ws&group=g-ws&from=beginning", role="consume")
    rest = consume(again, 30 - len(first))
    again.close()
    assert not seen & {(r["partition"], r["offset"]) for r in rest}, "resumes after the committed offsets"
    assert sorted(r["value"]["n"] for r in first + rest) == list(range(30))


def test_consume_from_the_end_says_ready_then_gets_every_record_produced_after_it(cluster: Cluster) -> None:
    """``{"ready": true, "assignment"}`` comes once the stream's consumer has joined its group
    and holds a position in every partition -- the log end, for ``from=end`` -- and every record
    produced from then on arrives. The socket opens ~100 ms before that (a new group's join and
    the log-end lookups), and a client that counted from the open missed what came meanwhile."""
    http = Http(cluster.raw["nodes"]["gateway"]["port"])
    http.ok("POST", "/topics/tail", {"records": [{"key": f"before-{i}", "value": {"n": -1}} for i in range(6)]})
    ws = connect(cluster, "/ws/consume?topic=tail&from=end", role="consume")
    try:
        ws.settimeout(20)
        early = []
        while "ready" not in (msg := recv_json(ws)):
            early.append(msg)
        assert early == [], "nothing is produced meanwhile: no records before ready"
        ends = [http.ok("GET", f"/topics/tail/partitions/{p}/offsets")["end_offset"] for p in range(3)]
        assert msg == {"ready": True, "assignment": [{"topic": "tail", "partition": p, "offset": ends[p]}
                                                     for p in range(3)]}, (msg, ends)
        http.ok("POST", "/topics/tail", {"records": [{"key": f"k{i}", "value": {"n": i}} for i in range(30)]})
        got = consume(ws, 30)
        assert sorted(r["value"]["n"] for r in got) == list(range(30)), got
        assert {r["partition"] for r in got} == {0, 1, 2}
    finally:
        ws.close()


def test_browsers_authenticate_with_a_first_message(cluster: Cluster) -> None:
    ws = connect(cluster, "/ws/events", role=None)
    ws.send(json.dumps({"api_key": ROLE_KEYS["read"]}))
    assert recv_json(ws) == {"authenticated": True, "key": "read", "roles": ["read"]}
    ws.close()
    ws = connect(cluster, "/ws/events", role=None)
    ws.send(json.dumps({"hello": 1}))
    code, reason = close_code(ws)
    assert code == 1008 and "api_key" in reason
    ws = connect(cluster, "/ws/produce?topic=ws", role=None)
    ws.send(json.dumps({"api_key": ROLE_KEYS["read"]}))
    assert close_code(ws) == (1008, "this stream needs the 'produce' role")
    ws = connect(cluster, "/ws/consume?topic=ws", role="read")
    assert close_code(ws)[0] == 1008


def test_a_client_still_sending_when_refused_reads_the_close_frame_and_its_reason(cluster: Cluster) -> None:
    """A socket closed with bytes of its client unread makes the kernel answer with a reset, and
    the close frame, already in the client's receive buffer, was lost with it: a client that sent
    on while the gateway refused it (here: 200 messages, no key) mostly saw a broken pipe or 1006,
    never the reason. The gateway now drains the client's bytes for a while before it closes."""
    for _ in range(10):
        ws = connect(cluster, "/ws/produce?topic=ws", role=None)
        try:
            for _ in range(200):
                ws.send(json.dumps({"records": [{"value": "x" * 2000}]}))
            code, reason = close_code(ws)
        finally:
            ws.close()
        assert code == 1008 and "api_key" in reason, (code, reason)


REFUSED_PATHS = ["/ws/produce?topic=ws", "/ws/consume?topic=ws&group=refused", "/ws/events"]


def send_unkeyed_then_close(cluster: Cluster, path: str, messages: int = 200) -> tuple[int, str]:
    """A browser's socket that sends ``messages`` messages without its key: the close it read."""
    ws = connect(cluster, path, role=None)
    try:
        for _ in range(messages):
            ws.send(json.dumps({"records": [{"value": "x" * 2000}]}))
        return close_code(ws)
    finally:
        ws.close()


@pytest.mark.parametrize("path", REFUSED_PATHS)
def test_a_client_sending_on_after_its_refusal_leaves_no_thread_behind(cluster: Cluster, path: str) -> None:
    """Once the route has sent its close frame, simple_websocket's reader sets ``connected``
    back to True at every message it reads; the messages pile up unread, so the inbox gate held
    the reader back until the route took one -- which it never would: the reader slept in that
    loop for ever (a thread and its inbox per refused socket), and the route waited out both
    lingers for it."""
    assert send_unkeyed_then_close(cluster, path)[0] == 1008
    before, fds = settled(lambda: len(gateway_threads(cluster))), len(gateway_fds(cluster))
    for _ in range(6):  # one at a time, each route over before the next (the pool's threads are reused)
        started = time.monotonic()
        code, reason = send_unkeyed_then_close(cluster, path)
        assert code == 1008 and "api_key" in reason, (code, reason)
        assert time.monotonic() - started < LINGER_S, "the gateway closed its side (FIN) at once, no linger"
        wait_until(lambda: len(gateway_threads(cluster)) <= before + 1, 10,
                   what=f"the gateway worker back to {before} threads (it has {len(gateway_threads(cluster))})")
        wait_until(lambda: len(gateway_fds(cluster)) <= fds, 10,
                   what=f"the gateway worker back to {fds} descriptors (it has {len(gateway_fds(cluster))})")


@pytest.mark.parametrize("path,role", [("/ws/produce", "produce"), ("/ws/consume", "consume")])
def test_a_browsers_key_is_confirmed_before_the_stream_refuses_its_query(cluster: Cluster, path: str, role: str) -> None:
    """The dashboard learns a key's roles from the first socket that accepts it; a stream
    without ``topic=`` is refused after the key, and the ``authenticated`` message must reach
    the browser before that close (it was dropped with the outbox, and produce-only or
    consume-only keys could not log in)."""
    ws = connect(cluster, path, role=None)
    ws.send(json.dumps({"api_key": ROLE_KEYS[role]}))
    assert recv_json(ws) == {"authenticated": True, "key": role, "roles": [role]}
    code, reason = close_code(ws)
    assert code == 1008 and "topic" in reason


@pytest.mark.parametrize("path,role,rule", [
    ("/ws/produce?topic=" + "n" * 250, "produce", "[A-Za-z0-9._-]"),
    ("/ws/produce?topic=bad*name", "produce", "[A-Za-z0-9._-]"),
    ("/ws/consume?topic=" + "n" * 250, "consume", "[A-Za-z0-9._-]"),
    ("/ws/consume?topic=ws&group=" + "g" * 250, "consume", "any but '/'"),
    ("/ws/consume?topic=ws&group=..", "consume", "any but '/'")])
def test_an_invalid_topic_or_group_name_closes_the_stream_naming_the_rule(cluster: Cluster, path: str,
                                                                          role: str, rule: str) -> None:
    """As REST answers 400 (40002): refused at once, saying why, before anything is made (this
    cluster creates topics on first use). A group's rule is not a topic's: any but '/', not a
    dot segment."""
    ws = connect(cluster, path, role=role)
    code, reason = close_code(ws)
    assert code == 1008 and reason.startswith("invalid ") and rule in reason, (code, reason)


@pytest.mark.parametrize("group", ["two words", "caf\u00e9"])
def test_a_group_name_outside_the_topic_rule_is_served_and_rest_addresses_it(cluster: Cluster, group: str) -> None:
    """A group id is any 1 to 249 characters but '/' (the coordinator's rule, less what a URL
    path cannot carry): /ws/consume joins such a group, and REST (so the dashboard) finds it."""
    from urllib.parse import quote
    ws = connect(cluster, f"/ws/consume?topic=ws&group={quote(group)}", role="consume")
    try:
        ws.settimeout(20)
        while "ready" not in recv_json(ws):
            pass
        http = Http(cluster.raw["nodes"]["gateway"]["port"])
        found = http.ok("GET", f"/v3/clusters/test/consumer-groups/{quote(group, safe='')}")
        assert found["consumer_group_id"] == group, found
    finally:
        ws.close()


@pytest.mark.parametrize("group", [".", "%2E%2E", "%FF"])
def test_a_group_name_rest_cannot_address_is_refused(cluster: Cluster, group: str) -> None:
    """/ws/consume took any group= and committed under it, while REST (and so the dashboard)
    cannot address it: a dot segment (clients drop it from a path), or escapes that are no UTF-8
    (group=%FF joined the group '%FF'). A group nobody could look at or reset but `loom group`."""
    ws = connect(cluster, f"/ws/consume?topic=ws&group={group}&from=beginning", role="consume")
    code, reason = close_code(ws)
    assert code == 1008 and reason.startswith("invalid "), (code, reason)


def test_events_stream_node_health(cluster: Cluster) -> None:
    ws = connect(cluster, "/ws/events", role="read")
    try:
        states: dict[str, str] = {}

        def until(node: str, state: str) -> bool:
            ws.settimeout(1)
            try:
                e = recv_json(ws)
            except websocket.WebSocketTimeoutException:
                return False
            if e.get("type") == "node":
                states[e["node"]] = e["state"]
            return states.get(node) == state
        every = {"coordinator", "broker-1", "broker-2", "broker-3", "producer", "consumer-1", "consumer-2"}
        wait_until(lambda: until("broker-3", "up") and set(states) == every or set(states) == every, 10,
                   what="the snapshot of every node")
        assert set(states.values()) == {"up"}
        cluster.kill("broker-3")
        started = time.monotonic()
        wait_until(lambda: until("broker-3", "down"), 10, what="broker-3 down on /ws/events")
        # seen down at the first health check whose PING goes unanswered (1.5 s at most), with
        # room for a loaded 2-core machine: within seconds, not a session timeout later
        assert time.monotonic() - started < (PING_TIMEOUT_MS + HEALTH_INTERVAL_MS) / 1000 + 3, \
            "a node going down shows within seconds"
        cluster.start_node("broker-3")
        wait_until(lambda: until("broker-3", "up"), 20, what="broker-3 up again")
    finally:
        ws.close()


def gateway_worker_rss_kib(cluster: Cluster) -> int:
    status = (gateway_worker(cluster) / "status").read_text()
    return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS:")))


def produce_big_records(cluster: Cluster, topic: str) -> None:
    """10 x 500 records of ~4 KB (~20 MB to stream)."""
    http = Http(cluster.raw["nodes"]["gateway"]["port"])
    value = "x" * 4000
    for _ in range(10):
        http.ok("POST", f"/topics/{topic}", {"records": [{"value": value}] * 500}, acks="1")


def test_a_slow_client_is_closed_and_the_gateway_memory_stays_flat(cluster: Cluster) -> None:
    produce_big_records(cluster, "big")
    before = 0
    for round_ in range(3):
        if round_ == 1:
            # measured from the end of the first slow client: its 2 MB messages set the worker's
            # allocator up (glibc's mmap threshold rises after the first large free, and a request
            # thread that first streams gets an arena of its own: a step of up to ~19 MB, seen with
            # the code before and after 2026-12-06's consumer changes alike) -- not growth; a slow
            # client whose queue were unbounded holds the whole topic, ~27 MB of JSON, each round
            before = gateway_worker_rss_kib(cluster)
        slow = connect(cluster, "/ws/consume?topic=big&from=beginning", role="consume",
                       sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 8192),))
        stop_reading(slow)
        code, reason = close_code(slow, timeout_s=30)
        assert code == 1013 and "too slow" in reason, (code, reason)
        slow.close()
    after = gateway_worker_rss_kib(cluster)
    # one arena's step, not two rounds' topics (~54 MB)
    assert after - before < 24 * 1024, f"the gateway grew from {before} KiB to {after} KiB"
    ok = connect(cluster, "/ws/consume?topic=big&from=beginning", role="consume")
    assert len(consume(ok, 600)) >= 600, "a client that keeps up gets everything"
    ok.close()


def test_a_slow_client_whose_records_come_late_is_closed_too(cluster: Cluster) -> None:
    """The gateway's patience with a full queue runs from when the queue filled, and a client
    that stops reading is closed however late its stream's first records come: seconds after
    the connect here (records produced late); so it is when a new group's join waits while its
    offsets partition changes leader (its OFFSET_FETCH is held until the group's reading is
    stored: nodes/coordinator/groups_offsets.py)."""
    late = threading.Timer(SLOW_TIMEOUT_MS / 1000 * 1.5, produce_big_records, (cluster, "late"))
    slow = connect(cluster, "/ws/consume?topic=late&from=beginning", role="consume",
                   sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 8192),))
    try:
        assert recv_json(slow).get("ready"), "positioned on the empty topic"
        late.start()  # the records come later than the gateway's patience, counted from here
        stop_reading(slow)
        code, reason = close_code(slow, timeout_s=30)
        assert code == 1013 and "too slow" in reason, (code, reason)
    finally:
        late.cancel()
        if late.is_alive():
            late.join()
        slow.close()


def test_auto_create_topics_when_configured(cluster: Cluster) -> None:
    http = Http(cluster.raw["nodes"]["gateway"]["port"])
    r = http.ok("POST", "/topics/made-on-demand", {"records": [{"value": {"a": 1}}]})
    assert r["offsets"][0]["error_code"] is None
    assert http.ok("GET", "/topics/made-on-demand")["name"] == "made-on-demand"
    # an internal topic is not made on demand nor written: refused as invalid_topic (README)
    r = http("POST", "/topics/__consumer_offsets", {"records": [{"value": 1}]})
    assert (r.status_code, r.json()["error_code"]) == (422, 42204), r.text


def test_dashboard_port_page_and_offline_docs(cluster: Cluster) -> None:
    import requests
    node = cluster.raw["nodes"]["gateway"]
    page = requests.get(f"http://127.0.0.1:{node['dashboard_port']}/", timeout=10)
    assert page.status_code == 200 and 'href="/docs"' in page.text
    docs = requests.get(f"http://127.0.0.1:{node['port']}/docs", timeout=10)
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    assert "http://" not in docs.text and "https://" not in docs.text, "no CDN: the page loads nothing from elsewhere"


def test_a_stopping_gateway_closes_its_websockets_with_going_away(cluster: Cluster) -> None:
    """SIGTERM (``loom down``, a restart): every open WebSocket gets close code 1001 "going away"
    (reconnect) and the gateway exits. Its WebSocket routes never ended by themselves: the worker
    waited out its grace and cut them at its hard exit, no close frame (1006 at the client).
    Last in this module: the gateway stays down."""
    events = connect(cluster, "/ws/events", role="read")
    stream = connect(cluster, "/ws/consume?topic=tail&group=going-away", role="consume")
    stream.settimeout(20)
    while "ready" not in recv_json(stream):  # the stream is in its fetch loop
        pass
    silent = [connect(cluster, "/ws/events", role="read") for _ in range(6)]
    gateway = cluster.procs["gateway"]
    stopped_at = time.monotonic()
    gateway.send_signal(signal.SIGTERM)
    for ws in (events, stream):
        code, reason = close_code(ws, timeout_s=5)
        assert code == 1001 and "stopping" in reason, (code, reason)
        ws.close()  # the client's answer: the gateway lingers (up to 2 s) for it before it closes the TCP side
    gateway.wait(timeout=15)
    assert (gateway.returncode, time.monotonic() - stopped_at < GRACEFUL_TIMEOUT_S) == (0, True), "exited in its grace"
    for ws in silent:  # clients that neither answer nor close: cut after the linger, their close frame read
        assert close_code(ws, timeout_s=1)[0] == 1001
        ws.close()
