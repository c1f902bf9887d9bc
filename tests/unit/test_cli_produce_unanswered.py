"""``loom produce --print-offsets`` with a record never answered within its delivery timeout:
the lines of the records answered, before and after it, are printed in input order, and the
unanswered one is reported as the command's error (exit status 1) -- a wait for a record's
outcome that times out raises (``RecordFuture.exception``), it is not taken for a delivery."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from fabric.client.futures import BatchState, RecordFuture
from fabric.errors import ClientTimeoutError
from nodes import cli_data
from nodes.cli import main


class _Producer:
    """Line ``unanswered`` (0-based) is queued on a partition that never answers; every other
    one is acknowledged as it is queued, at the next offset of partition 0."""

    def __init__(self, unanswered: int) -> None:
        self.unanswered = unanswered
        self.batches: list[BatchState] = []

    def send(self, topic: str, value: bytes, **kw: Any) -> RecordFuture:
        answered = len(self.batches) != self.unanswered
        b = BatchState(topic, 0 if answered else 1, 0)
        self.batches.append(b)
        if answered:
            b.complete(sum(x.partition == 0 for x in self.batches) - 1, None)
        return RecordFuture(b, 0)

    def flush(self, timeout: float | None = None) -> None:
        if not all(b.event.is_set() for b in self.batches):
            raise ClientTimeoutError("flush timed out")

    def close(self, timeout: float | None = None) -> None:
        pass


def test_a_record_never_answered_is_reported_and_the_lines_of_the_others_printed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_data, "FLUSH_GRACE_S", 0.0)  # the wait for an answer: the 1 ms delivery timeout
    monkeypatch.setattr(cli_data, "_check_partition", lambda *a: None)
    monkeypatch.setattr(cli_data, "Producer", lambda *a, **kw: _Producer(unanswered=1))
    result = CliRunner().invoke(main, ["produce", "t", "--print-offsets", "--bootstrap", "127.0.0.1:9",
                                       "--delivery-timeout-ms", "1"], input="a\nb\nc\n")
    assert result.exit_code == 1, result.output
    assert [json.loads(line)["offset"] for line in result.stdout.splitlines()] == [0, 1], result.output
    assert "no acknowledgement within the delivery timeout" in result.output, result.output
