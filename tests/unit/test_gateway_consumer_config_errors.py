"""A consumer instance's configuration that its schema refuses (``"format": "avro"``, an
``auto.offset.reset`` of ``smallest``) is 422 / 42203, "invalid consumer configuration", as
docs/gateway.md lists and Confluent's REST Proxy answers; it was the generic 42204 of any
body. A body that is no JSON stays 400 / 40001. Through the Flask app with a stub agent."""

from __future__ import annotations

import json

import pytest

from tests.unit.fakes import KEYS, StubAgent, gateway_test_client

HEADERS = {"Authorization": f"Bearer {KEYS['consume']}", "Content-Type": "application/vnd.kafka.v2+json"}


@pytest.mark.parametrize("body", [{"format": "avro"}, {"auto.offset.reset": "smallest"},
                                  {"auto.commit.enable": True}, {"session.timeout.ms": "5"}])
def test_a_consumer_configuration_the_schema_refuses_is_42203(body: dict) -> None:
    r = gateway_test_client(StubAgent()).post("/consumers/g", data=json.dumps(body), headers=HEADERS)
    assert (r.status_code, r.get_json()["error_code"]) == (422, 42203), r.get_json()


def test_a_body_that_is_no_json_is_still_40001() -> None:
    r = gateway_test_client(StubAgent()).post("/consumers/g", data=b"{", headers=HEADERS)
    assert (r.status_code, r.get_json()["error_code"]) == (400, 40001)


def test_the_api_document_lists_42203_and_not_42204_for_it() -> None:
    doc = gateway_test_client(StubAgent()).get("/openapi.json").get_json()
    text = json.dumps(doc["paths"]["/consumers/{group_name}"]["post"])
    assert "42203" in text and "42204" not in text
