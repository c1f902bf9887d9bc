"""schemathesis against the gateway's /openapi.json on a real cluster: every check, a bounded
number of examples per operation -- no 5xx, and every response matches the document."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.gateway_client import GATEWAY_NODES, ROLE_KEYS, Http, gateway_overrides
from tests.harness import Cluster, wait_until
from tests.integration.monitor_support import monitor_options

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]
EXAMPLES_PER_OPERATION = 12
# the same examples on every run (CI must not fail on a new draw); LOOM_FUZZ_RANDOM=1 explores afresh
FUZZ_DERANDOMIZE = os.environ.get("LOOM_FUZZ_RANDOM") != "1"
BODY_BYTES_FUZZ_MAX = 1024 * 1024  # well below the gateway's request_bytes_max in these tests
AUTH = {"Authorization": f"Bearer {ROLE_KEYS['admin']}"}


# with a monitor, so /metrics and /monitor/history answer (503 without one would be a 5xx)
CLUSTER_OPTIONS = monitor_options(3, extra_nodes=GATEWAY_NODES, **gateway_overrides())  # tests/conftest.py


@pytest.fixture(scope="module")
def fuzz_cluster(module_cluster: Cluster) -> Cluster:
    http = Http(module_cluster.raw["nodes"]["gateway"]["port"])
    http.ok("POST", "/v3/clusters/test/topics", {"topic_name": "fuzz", "partitions_count": 2})
    wait_until(lambda: all(p["leader"] for p in http.ok("GET", "/v3/clusters/test/topics/fuzz/partitions")["data"]),
               20, what="leaders")
    return module_cluster


def test_api_matches_its_document(fuzz_cluster: Cluster) -> None:
    """Each operation of the document in turn (a plain loop rather than schemathesis' pytest
    plugin, which does not run under pytest 9)."""
    port = fuzz_cluster.raw["nodes"]["gateway"]["port"]
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=st.one_of(operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                              operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)))
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=FUZZ_DERANDOMIZE,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            # a body over gateway.request_bytes_max is answered 413 before it is read (checked in
            # test_gateway_auth.py); schemathesis' negative-data check does not count 413 as a rejection
            assume(len(json.dumps(case.body, default=str)) < BODY_BYTES_FUZZ_MAX if case.body is not None else True)
            if case.query and isinstance(case.query.get("timeout"), int):
                case.query["timeout"] = min(case.query["timeout"], 200)  # long polls would only slow the run
            case.call_and_validate(headers=AUTH, timeout=30)
        try:
            run()
        except Exception as e:  # collect every operation's failure, then report them together
            failures.append(f"{operation.method.upper()} {operation.path}: {e}")
    assert operations >= 40
    assert not failures, "\n\n".join(failures)
