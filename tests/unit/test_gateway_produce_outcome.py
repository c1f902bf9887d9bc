"""What a produce answer says of its records when the producer service did not answer, through
the real GatewayAgent with scripted services (no cluster). A request the service took and did
not answer (it died, hung, or restarted on its endpoint) was answered 503 / 50301, the very
answer of a request refused before anything was sent: a client could not tell "send it again"
from "it may be in the log". ``tests/faults/test_faults_gateway_produce.py`` runs the same with
real processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fabric import protocol as P
from fabric.client.services import ServiceDown
from fabric.config import load_config
from fabric.errors import ConnectionLost, RequestTimeout
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

    def produce_rows(self, topic: str, records: list, acks: Any, is_down: Any = None) -> tuple:
        self.calls += 1
        if self.calls > self.answered:
            raise self.error
        return tuple((0, i, 0, "") for i in range(len(records)))


def _agent(tmp_path: Path, service: _Service, **kw: Any) -> GatewayAgent:
    return GatewayAgent(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))),
                        make_admin=_Admin, make_producer=lambda: service, **kw)


@pytest.mark.parametrize("error", [RequestTimeout("no reply from tcp://x within 40000 ms"),
                                   ConnectionLost("connection to tcp://x lost before the reply")],
                         ids=["timed-out", "connection-lost"])
def test_a_request_the_service_took_and_did_not_answer_is_50302_and_says_it_may_be_written(
        tmp_path: Path, error: Exception) -> None:
    a = _agent(tmp_path, _Service(error))
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
