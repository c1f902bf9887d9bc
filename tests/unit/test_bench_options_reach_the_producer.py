"""The producer options of `loom bench produce|e2e` (--acks, --batch-size, --linger-ms,
--compression, --record-size) reach the worker's Producer and its records, not only the parser."""

from __future__ import annotations

from typing import Any

import pytest

import fabric.client
from bench import worker
from bench.options import parse
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
