"""What a produce answer says of its records when the producer service did not answer, through
the real GatewayAgent with scripted services (no cluster). A request the service took and did
not answer (it died, hung, or restarted on its endpoint) was answered 503 / 50301, the very
answer of a request refused before anything was sent: a client could not tell "send it again"
from "it may be in the log". And a request waiting for a service that restarted on its endpoint
(before the health watcher saw it down) waited the whole 40 s timeout: the new process never
answers the old one's requests. ``tests/faults/test_faults_gateway_produce.py`` runs the same
with real processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from fabric import protocol as P
from fabric.client.services import ServiceDown
from fabric.config import load_config
from fabric.errors import RequestTimeout
from nodes.gateway.agent import GatewayAgent
from nodes.local_cluster import GATEWAY_NODES, make_config
from tests.unit.fakes import metadata_of
from webui.errors import ClusterError


class _Admin:
    def metadata(self) -> Any:
        return metadata_of({"t": 1})


class _Service:
    """Answers the first ``answered`` SERVICE_PRODUCEs, then raises ``error`` (once per call)."""

    def __init__(self, error: Exception, answered: int = 0) -> None:
        self.error, self.answered, self.calls = error, answered, 0
        self.is_down: Callable[[str], bool] | None = None

    def produce_rows(self, topic: str, records: list, acks: Any, is_down: Any = None) -> tuple:
        self.calls += 1
        self.is_down = is_down
        if self.calls > self.answered:
            raise self.error
        return tuple((0, i, 0, "") for i in range(len(records)))


def _agent(tmp_path: Path, service: _Service, **kw: Any) -> GatewayAgent:
    return GatewayAgent(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))),
                        make_admin=_Admin, make_producer=lambda: service, **kw)


def test_a_request_the_service_took_and_did_not_answer_is_50302_and_says_it_may_be_written(tmp_path: Path) -> None:
    a = _agent(tmp_path, _Service(RequestTimeout("no reply from tcp://x within 40000 ms")))
    with pytest.raises(ClusterError) as e:
        a.produce("t", [(None, b"v", None, None)], "all")
    assert e.value.to_api().error_code == 50302 and "may have been written" in e.value.message, e.value


def test_a_request_not_sent_for_want_of_a_live_service_is_50301(tmp_path: Path) -> None:
    a = _agent(tmp_path, _Service(ServiceDown("producer service tcp://x is down: the request was not sent")))
    with pytest.raises(ClusterError) as e:
        a.produce("t", [(None, b"v", None, None)], "all")
    assert e.value.to_api().error_code == 50301 and "may have been written" not in e.value.message, e.value


def test_chunks_answer_per_record_which_may_be_written_and_which_were_not_sent(tmp_path: Path) -> None:
    a = _agent(tmp_path, _Service(RequestTimeout("no reply"), answered=1))
    n = P.SERVICE_RECORDS_PER_REQUEST_MAX
    outcomes = a.produce("t", [(None, b"v", None, None)] * (3 * n), "all")
    assert all(o[2] is None for o in outcomes[:n])
    assert all("may have been written" in o[2] and "not sent" not in o[2] for o in outcomes[n:2 * n]), outcomes[n]
    assert all(o[2].find("not sent:") >= 0 for o in outcomes[2 * n:]), outcomes[2 * n]


def test_a_service_restarted_on_its_endpoint_is_given_up_on(tmp_path: Path) -> None:
    pids = {"pid": 100}
    service = _Service(RequestTimeout("no reply"), answered=1)
    a = _agent(tmp_path, service, process_of=lambda endpoint: pids["pid"])
    a.produce("t", [(None, b"v", None, None)], "all")
    assert service.is_down is not None
    endpoint = a.producer_endpoints[0]
    assert not service.is_down(endpoint), "the process the request went to still answers PING"
    pids["pid"] = 101  # the health watcher saw another process answer there
    assert service.is_down(endpoint), "a request waits for an answer the new process will never give"
