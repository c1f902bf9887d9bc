"""Seeded bad input to every REST operation of the gateway (and to the routes around them), through
the real app and agent over a scripted cluster (tests/unit/builders_gateway_fuzz.py): no request
a client can craft may be answered 500 -- a programmer error there stops the gateway's worker
(tests/unit/test_gateway_programmer_errors.py), so such a request is a denial of service. Every
refusal is JSON ``{error_code, message}`` with error_code = status * 100 + n.

The seed and the count are fixed, so a failure names its case and repeats; a longer run with
many seeds is ``tests/fuzz_gateway.py``."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tests.unit.builders_gateway_fuzz import Case, fuzz_gateway, rest_cases

SEED = 20261205
CASES_PER_OP = 12


def problem_of(case: Case, status: int, content_type: str, body: bytes) -> str | None:
    """What is wrong with the answer to ``case`` (None: nothing)."""
    if status >= 500:
        return f"{status}: {body[:300]!r}"
    if status >= 400:
        if not content_type.startswith("application/json"):
            return f"{status} answered as {content_type!r}, not a JSON error"
        import json
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
    app, agent, bugs = fuzz_gateway(tmp_path)
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
