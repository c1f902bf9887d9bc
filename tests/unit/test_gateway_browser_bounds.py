"""The records browser's consumer (``GatewayAgent.read``, one per request thread) fetches ahead
within ``BROWSE_BUFFER_BYTES`` and lets go of what it fetched past the page after each read:
with a lone consumer's defaults (8 MiB per FETCH, 64 MiB fetched ahead) each of the 48 request
threads kept up to 8 MiB between its reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fabric.config import load_config
from fabric.records import Record
from nodes.gateway.agent import BROWSE_BUFFER_BYTES, GatewayAgent
from nodes.local_cluster import GATEWAY_NODES, make_config
from tests.unit.fakes import metadata_of


class _Admin:
    def metadata(self) -> Any:
        return metadata_of({"t": 1})

    def close(self) -> None:
        pass


class _PagingConsumer:
    """A consumer whose partition holds records 0..99 (or whose poll raises ``error``)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.assigned: list[list] = []
        self.position = 0
        self.error = error

    def assign(self, partitions: list) -> None:
        self.assigned.append(list(partitions))

    def seek(self, tp: tuple, offset: int) -> None:
        self.position = offset

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        if self.error is not None:
            raise self.error
        out = [Record("t", 0, o, 0, None, b"v%d" % o, []) for o in range(self.position, min(100, self.position + max_records))]
        self.position += len(out)
        return out


@pytest.fixture
def agent(tmp_path: Path) -> Any:
    a = GatewayAgent(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))), make_admin=_Admin)
    a.offsets = lambda topic, partitions=None, partial=False: {0: (0, 100)}  # type: ignore[method-assign]
    yield a
    a.close()


def test_the_browsers_consumer_fetches_ahead_within_its_bound(agent: Any) -> None:
    c = agent._browser()
    assert (c.buffered_bytes_max, c.fetch_bytes_max, c.partition_fetch_bytes_max) == (BROWSE_BUFFER_BYTES,) * 3
    assert BROWSE_BUFFER_BYTES <= 1024 * 1024


def test_a_read_lets_go_of_its_partition_after_the_page(agent: Any) -> None:
    c = _PagingConsumer()
    agent._browser = lambda: c
    page = agent.read("t", 0, 10, 5, 1 << 20, 0)
    assert [r.offset for r in page] == [10, 11, 12, 13, 14]
    assert c.assigned == [[("t", 0)], []]


def test_a_read_that_fails_lets_go_too(agent: Any) -> None:
    c = _PagingConsumer(error=KeyboardInterrupt())
    agent._browser = lambda: c
    with pytest.raises(KeyboardInterrupt):
        agent.read("t", 0, 10, 5, 1 << 20, 0)
    assert c.assigned == [[("t", 0)], []]
