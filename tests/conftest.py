"""Shared fixtures: a real cluster per test (or per module), torn down by pid."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import Cluster, make_config


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator:
    clusters: list[Cluster] = []

    def make(brokers: int = 3, start: bool = True, **kw) -> Cluster:
        sub = tmp_path / f"c{len(clusters)}"
        sub.mkdir()
        c = Cluster(make_config(sub, brokers, **kw))
        clusters.append(c)
        if start:
            c.start()
        return c
    yield make
    for c in clusters:
        c.stop_all()


@pytest.fixture
def cluster(cluster_factory) -> Cluster:
    return cluster_factory(3)
