"""An integer of a body written ``1.0`` or ``1e2`` is an integer to JSON Schema, so the routes'
validation let it through, as the document (/openapi.json) promises -- and then whatever met it
refused it or went wrong: the consumer service answered a seek, commit or assignment 422 with a
message that did not name the number ("partitions must be a list of [topic, partition]"), the
coordinator refused a topic of 3.0 partitions, and a dry-run offsets reset answered
``"new_offset": 5.0`` for a reset whose execution the coordinator then refused. Such an integer
is read as the integer it is (as Jackson, Confluent's proxy's parser, reads it). Found by
tests/unit/test_gateway_bad_input_fuzz.py's bodies at the edges of the schemas; checked through
the real app and agent over a scripted cluster whose nodes refuse what the real ones refuse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.builders_gateway_fuzz import fuzz_gateway
from tests.unit.fakes import KEYS

ADMIN = {"Authorization": f"Bearer {KEYS['admin']}"}
V2 = "application/vnd.kafka.v2+json"
JSON = "application/json"
BASE = "/consumers/g/instances/c1"


@pytest.fixture
def client(tmp_path: Path) -> Any:
    app, _, bugs, _ = fuzz_gateway(tmp_path)
    yield app.test_client()
    assert bugs == []


CASES = [  # (method, path, content type, body, status)
    ("POST", "/v3/clusters/test/topics", JSON, b'{"topic_name": "new", "partitions_count": 3.0, "replication_factor": 1e0}',
     201),
    ("PATCH", "/v3/clusters/test/topics/t", JSON, b'{"partitions_count": 5.0}', 200),
    ("POST", "/v3/clusters/test/consumer-groups/g/reset-offsets", JSON,
     b'{"topic_name": "t", "to": "offset", "offset": 5.0, "execute": true}', 200),
    ("POST", "/v3/clusters/test/consumer-groups/g/reset-offsets", JSON,
     b'{"topic_name": "t", "to": "timestamp", "timestamp_ms": 17e2}', 200),
    ("POST", BASE + "/assignments", V2, b'{"partitions": [{"topic": "t", "partition": 1.0}]}', 204),
    ("POST", BASE + "/offsets", V2, b'{"offsets": [{"topic": "t", "partition": 1.0, "offset": 3.0}]}', 204),
    ("GET", BASE + "/offsets", V2, b'{"partitions": [{"topic": "t", "partition": 0.0}]}', 200),
    ("POST", BASE + "/positions", V2, b'{"offsets": [{"topic": "t", "partition": 1, "offset": 2e0}]}', 204),
    ("POST", BASE + "/positions/beginning", V2, b'{"partitions": [{"topic": "t", "partition": -0.0}]}', 204),
]


@pytest.mark.parametrize("method, path, content_type, body, status", CASES)
def test_an_integer_written_as_a_float_is_that_integer(client: Any, method: str, path: str, content_type: str,
                                                      body: bytes, status: int) -> None:
    r = client.open(path, method=method, headers={**ADMIN, "Content-Type": content_type}, data=body)
    assert r.status_code == status, (r.status_code, r.get_data())
    assert b"." not in r.get_data().replace(b"t.", b""), r.get_data()  # no 5.0 in an answer


def test_a_dry_run_reset_answers_integers(client: Any) -> None:
    r = client.post("/v3/clusters/test/consumer-groups/g/reset-offsets", headers={**ADMIN, "Content-Type": JSON},
                    data=b'{"topic_name": "t", "to": "offset", "offset": 5.0}')
    assert r.status_code == 200, r.get_data()
    assert {type(d["new_offset"]) for d in r.get_json()["data"]} == {int}, r.get_json()


@pytest.mark.parametrize("body", [b'{"partitions_count": 5.5}', b'{"partitions_count": 1e300}'])
def test_a_number_that_is_no_integer_is_still_refused(client: Any, body: bytes) -> None:
    r = client.patch("/v3/clusters/test/topics/t", headers={**ADMIN, "Content-Type": JSON}, data=body)
    assert r.status_code == 422 and r.get_json()["error_code"] == 42204, r.get_data()


@pytest.mark.parametrize("content_type, value", [("application/vnd.kafka.binary.v2+json", '"eA=="'),
                                                 ("application/vnd.kafka.json.v2+json", "1.0")])
def test_a_records_partition_written_as_a_float_is_that_partition(tmp_path: Path, content_type: str,
                                                                  value: str) -> None:
    """Produce reads its own integers (its hot path walks no body twice): the agent takes a
    record's partition 1.0 as 1 -- it refused it (422), where every other body takes 1.0 -- and a
    value 1.0 stays the JSON the client wrote."""
    app, agent, bugs, _ = fuzz_gateway(tmp_path)
    sent: list = []
    produce_rows = agent.producer_.produce_rows
    agent.producer_.produce_rows = lambda topic, records, *a, **kw: (sent.extend(records), produce_rows(topic, records, *a, **kw))[1]
    r = app.test_client().post("/topics/t", headers={**ADMIN, "Content-Type": content_type},
                               data=f'{{"records": [{{"value": {value}, "partition": 1.0}}, {{"value": {value}, "partition": 2}}]}}')
    assert r.status_code == 200, r.get_data()
    assert [o["partition"] for o in r.get_json()["offsets"]] == [1, 2]
    assert [type(rec[3]) for rec in sent] == [int, int] and sent[0][1] in (b"x", b"1.0"), sent
    assert bugs == []
