"""A REST consumer instance's calls that commit synchronously in the consumer service
(an explicit commit, an unsubscribe, a delete: each commits before it answers, retrying up to
the group consumer's ``COMMIT_TIMEOUT_MS``) wait for the service longer than that: with the
general 10 s call timeout the client was answered 503 for an unsubscribe that went through
after it gave up."""

from __future__ import annotations

import pytest

from fabric.client.group import COMMIT_TIMEOUT_MS
from fabric.client.services import CALL_TIMEOUT_MS, ConsumerInstance


class TimeoutSpy:
    def __init__(self) -> None:
        self.timeouts: list[int] = []

    def call(self, endpoint: str, command: bytes, header: dict, timeout_ms: int = CALL_TIMEOUT_MS) -> dict:
        self.timeouts.append(timeout_ms)
        return {}


@pytest.mark.parametrize("call", [lambda i: i.commit(), lambda i: i.commit({("t", 0): 5}),
                                  lambda i: i.unsubscribe(), lambda i: i.delete()],
                         ids=["commit-positions", "commit-offsets", "unsubscribe", "delete"])
def test_calls_that_commit_outwait_the_commit(call) -> None:  # noqa: ANN001
    spy = TimeoutSpy()
    call(ConsumerInstance(spy, "g", "i", "tcp://127.0.0.1:1"))  # type: ignore[arg-type]
    assert spy.timeouts and spy.timeouts[0] > COMMIT_TIMEOUT_MS, spy.timeouts
