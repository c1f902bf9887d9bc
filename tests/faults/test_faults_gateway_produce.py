"""The gateway's produce acknowledgements under faults, with real processes: REST clients
(``POST /topics/{t}``, ``.../partitions/{p}``, keyless, keyed, records naming their partition)
and a ``/ws/produce`` client with several messages in flight, while the producer service is
SIGKILLed, SIGTERMed (it drains: no answer says "may have been written") or SIGSTOPped, the gateway's worker is SIGKILLed, or a partition leader and the
coordinator are. The checker (``gateway_produce_checker.py``) reads every replica after
healing: an acknowledged record is in the log at the offset it was answered with, nothing is
written twice (no client retries), nothing answered "not written" is in the log, a WebSocket's
answers come in sending order, and every failure answer says whether its records may have
been written.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from fabric.client import Admin
from tests.faults import gateway_produce_checker as G
from tests.gateway_client import GATEWAY_NODES, gateway_overrides
from tests.harness import Cluster, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]
TOPIC = "gwacks"
PARTITIONS = 3
# how long the acknowledgements are watched after the coordinator's SIGKILL before it is
# started again: past its first silence backoffs (1 s, 2 s) and the probes that end them
COORDINATOR_DOWN_WATCH_S = 6


def _setup(cluster_factory, seed: int) -> tuple[Cluster, Admin, G.Clients]:  # noqa: ANN001
    c = cluster_factory(3, extra_nodes=GATEWAY_NODES, overrides=gateway_overrides())
    admin = Admin(c.bootstrap)
    admin.create_topic(TOPIC, PARTITIONS, 3)
    c.wait_topic_ready(admin, TOPIC)
    clients = G.Clients(c, TOPIC, PARTITIONS, seed).start()
    clients.wait_acked(100)
    return c, admin, clients


def _finish(c: Cluster, admin: Admin, clients: G.Clients, more: int = 150) -> dict:
    """Once ``more`` further records are acknowledged (the path works again), stop and check."""
    clients.wait_acked(len(clients.ledger.acked) + more, timeout_s=45)
    clients.stop()
    try:
        report = G.check(c, admin, TOPIC, clients.ledger)
    finally:
        admin.close()
    assert not clients.ledger.unclassified, \
        f"failure answers that say neither 'not written' nor 'may have been written': " \
        f"{sorted(set(clients.ledger.unclassified.values()))[:3]}"
    return report


def _failures(clients: G.Clients) -> int:
    s = clients.ledger.summary()
    return s["not_written"] + s["maybe"] + s["unclassified"]


@pytest.mark.parametrize("at_once", [True, False], ids=["restarted-at-once", "down-until-refused"])
def test_producer_service_sigkilled_and_restarted_under_rest_and_ws_produce(cluster_factory, at_once: bool) -> None:  # noqa: ANN001
    """Restarted at once, as the supervisor does (the health watcher may never see it down: the
    requests the dead process took wait for another pid to answer PING), or only once the
    gateway refuses produce (503 / 50301: nothing sent -- the checker holds it to that)."""
    c, admin, clients = _setup(cluster_factory, seed=1 if at_once else 6)
    for _ in range(2):
        refused = len(clients.ledger.not_written)
        c.kill("producer")
        if not at_once:
            wait_until(lambda: len(clients.ledger.not_written) > refused, 20, what="produce refused")
        c.start_node("producer")
        clients.wait_acked(len(clients.ledger.acked) + 100, timeout_s=45)
    report = _finish(c, admin, clients)
    assert report["slowest_answer_s"] < 20, f"a produce waited {report['slowest_answer_s']} s for a dead service"


def test_producer_service_sigtermed_under_rest_and_ws_produce_answers_every_request_precisely(cluster_factory) -> None:  # noqa: ANN001
    """A clean stop drains: every request the service took is answered with its offsets, those
    arriving meanwhile are refused 503 / 50301 (nothing written), and none is answered "may have
    been written" (50302, or a dropped connection) -- that answer is for a service killed."""
    c, admin, clients = _setup(cluster_factory, seed=7)
    service = c.procs["producer"]
    os.kill(service.pid, signal.SIGTERM)
    assert service.wait(timeout=15) == 0
    c.start_node("producer")
    clients.wait_acked(len(clients.ledger.acked) + 100, timeout_s=45)
    _finish(c, admin, clients, more=50)
    assert not clients.ledger.maybe, f"answers that say 'may have been written' after a SIGTERM: " \
                                     f"{sorted(set(clients.ledger.maybe.values()))[:3]}"


def test_producer_service_sigstopped_past_the_gateways_patience(cluster_factory) -> None:  # noqa: ANN001
    c, admin, clients = _setup(cluster_factory, seed=2)
    before = _failures(clients)
    c.kill("producer", signal.SIGSTOP)
    try:  # the health watcher sees it down: requests waiting for it give up
        wait_until(lambda: _failures(clients) > before + 3, 20, what="produce answered while the service is stopped")
    finally:
        c.kill("producer", signal.SIGCONT)
    _finish(c, admin, clients)


def test_gateway_worker_sigkilled_under_produce(cluster_factory) -> None:  # noqa: ANN001
    c, admin, clients = _setup(cluster_factory, seed=3)
    worker = c.ping("gateway")["worker_pid"]
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: c.ping("gateway").get("worker_pid") not in (None, worker), 30, what="a new gateway worker")
    _finish(c, admin, clients)


def _new_leader(admin: Admin, partition: int, old: int) -> None:
    wait_until(lambda: admin.metadata().topics[TOPIC].partitions[partition].leader not in (-1, old), 20,
               what=f"a new leader of partition {partition}")


def test_partition_leader_and_coordinator_sigkilled_under_produce(cluster_factory) -> None:  # noqa: ANN001
    c, admin, clients = _setup(cluster_factory, seed=4)
    for partition in (1, 2):  # leaders killed with requests in flight, then back in the ISR
        old = admin.metadata().topics[TOPIC].partitions[partition].leader
        c.kill(f"broker-{old}")
        _new_leader(admin, partition, old)
        clients.wait_acked(len(clients.ledger.acked) + 50, timeout_s=45)
        c.start_node(f"broker-{old}")
        wait_until(lambda: all(old in p.isr for p in admin.metadata().topics[TOPIC].partitions), 30,
                   what=f"broker-{old} back in every ISR")
    old = admin.metadata().topics[TOPIC].partitions[0].leader
    leader = f"broker-{old}"
    c.kill(leader)
    _new_leader(admin, 0, old)
    killed_s = time.monotonic()
    c.kill("coordinator")
    more = len(clients.ledger.acked) + 50
    wait_until(lambda: len(clients.ledger.acked) >= more and time.monotonic() - killed_s >= COORDINATOR_DOWN_WATCH_S,
               45, what="the other leaders go on acknowledging without the coordinator")
    first_s, longest_s, begun_s = clients.ledger.unacked_windows_s(killed_s, time.monotonic())
    print(f"\ncoordinator SIGKILLed: first acknowledgement after {first_s:.2f} s, longest time with none "
          f"{longest_s:.2f} s from {begun_s:.2f} s (of the {time.monotonic() - killed_s:.1f} s watched)")
    c.start_node("coordinator")
    c.start_node(leader)
    _finish(c, admin, clients)


def test_partition_leader_sigstopped_past_its_session_then_resumed_under_produce(cluster_factory) -> None:  # noqa: ANN001
    """A paused leader loses its partitions (session timeout 3 s) and comes back believing it
    leads: what the gateway acknowledged meanwhile, through the new leaders, must stay."""
    c, admin, clients = _setup(cluster_factory, seed=5)
    old = admin.metadata().topics[TOPIC].partitions[0].leader
    leader = f"broker-{old}"
    c.kill(leader, signal.SIGSTOP)
    try:
        _new_leader(admin, 0, old)
        clients.wait_acked(len(clients.ledger.acked) + 100, timeout_s=45)
    finally:
        c.kill(leader, signal.SIGCONT)
    _finish(c, admin, clients)
