"""The producer options of `loom bench produce|e2e` (--acks, --batch-size, --linger-ms,
--compression, --record-size) reach the worker's Producer and its records, not only the parser."""

from __future__ import annotations

from typing import Any

import pytest

import fabric.client
from bench import worker
from bench.options import OptionError, parse
from bench.workload import Run, Target


class _Built(Exception):
    """Raised by the stand-in Producer once it has recorded how it was built."""


def test_the_options_reach_the_producer_and_its_records(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    built: dict[str, Any] = {}

    def recording_producer(bootstrap: Any, **kw: Any) -> None:
        built.update(kw, bootstrap=bootstrap)
        raise _Built()

    monkeypatch.setattr(fabric.client, "Producer", recording_producer)
    o = parse("produce", ["--acks", "1", "--batch-size", "77", "--linger-ms", "3", "--compression", "zstd",
                          "--record-size", "250", "--bootstrap", "127.0.0.1:1"])
    spec = Run(o, Target(["tcp://127.0.0.1:1"], {}, False), "t", str(tmp_path), None).spec("producer", 0)
    with pytest.raises(_Built):
        worker.run_producer(spec, None, lambda _: None)  # type: ignore[arg-type]
    assert built == {"bootstrap": ["tcp://127.0.0.1:1"], "acks": "1", "linger_ms": 3, "batch_records_max": 77,
                     "compression": "zstd"}
    assert len(worker.payload(spec["record_size"])) == 250


def test_max_in_flight_is_a_combination_that_reaches_the_producer(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    built: dict[str, Any] = {}

    def recording_producer(bootstrap: Any, **kw: Any) -> None:
        built.update(kw)
        raise _Built()

    monkeypatch.setattr(fabric.client, "Producer", recording_producer)
    o = parse("produce", ["--max-in-flight", "1,2", "--bootstrap", "127.0.0.1:1"])
    assert [c.label for c in o.combinations()] == ["segment/interval/send/inflight=1", "segment/interval/send/inflight=2"]
    spec = Run(o, Target(["tcp://127.0.0.1:1"], {}, False), "t", str(tmp_path), None).spec(
        "producer", 0, max_in_flight=o.combinations()[1].max_in_flight)
    with pytest.raises(_Built):
        worker.run_producer(spec, None, lambda _: None)  # type: ignore[arg-type]
    assert built["max_in_flight"] == 2
    for bad in ("0", "6", "x"):
        with pytest.raises(OptionError):
            parse("produce", ["--max-in-flight", bad, "--bootstrap", "127.0.0.1:1"])
