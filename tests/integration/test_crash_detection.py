"""A crashed broker (its connections closed) is declared dead after a short grace, without
waiting out the session timeout; a paused one (connections open) still waits for the session."""

from __future__ import annotations

import signal
import time

from fabric.client import Admin
from tests.harness import wait_until

SESSION_MS = 30_000  # long enough that only crash detection can explain a quick election
PAUSED_SESSION_MS = 2000  # five crash graces (2 heartbeats of 200 ms): only the session can end a pause


def _leader(admin: Admin) -> int:
    return admin.metadata().topics["crash"].partitions[0].leader


def test_killed_leader_is_replaced_before_its_session_expires(cluster_factory) -> None:
    c = cluster_factory(3, overrides={"liveness": {"heartbeat_interval_ms": 200, "session_timeout_ms": SESSION_MS}})
    admin = Admin(c.bootstrap)
    try:
        admin.create_topic("crash", 1, 3)
        c.wait_topic_ready(admin, "crash")
        # crash detection needs a connection to lose: wait until every broker's stream is in
        wait_until(lambda: c.stats("coordinator")["heartbeats_from"] == [1, 2, 3], 10, what="heartbeats from every broker")
        victim = _leader(admin)
        c.kill(f"broker-{victim}")  # SIGKILL: the kernel closes its sockets
        wait_until(lambda: _leader(admin) not in (victim, -1), 10, what="a new leader well before the 30 s session")
        assert victim not in admin.metadata().topics["crash"].partitions[0].isr
    finally:
        admin.close()


def test_paused_leader_keeps_its_session(cluster_factory) -> None:
    c = cluster_factory(3, overrides={"liveness": {"heartbeat_interval_ms": 200,
                                                   "session_timeout_ms": PAUSED_SESSION_MS}})
    admin = Admin(c.bootstrap)
    try:
        admin.create_topic("crash", 1, 3)
        c.wait_topic_ready(admin, "crash")
        victim = _leader(admin)
        paused_at = time.monotonic()
        c.kill(f"broker-{victim}", signal.SIGSTOP)
        try:
            wait_until(lambda: _leader(admin) != victim, 15, what="the session to expire")
        finally:
            c.kill(f"broker-{victim}", signal.SIGCONT)
        # its connections stayed open, so only the session (2 s) could end it -- not the
        # crash grace (2 heartbeats, 0.4 s)
        assert time.monotonic() - paused_at >= (PAUSED_SESSION_MS - 500) / 1000
    finally:
        admin.close()
