"""Shared fixtures: a real cluster per test (or per module), torn down by pid."""

from __future__ import annotations

import compileall
from pathlib import Path
from typing import Iterator

import pytest

from fabric.client import Admin
from tests.gateway_client import Http
from tests.harness import ROOT, Cluster, make_config, running_cluster

# The packages whose modules the processes tests start import: nodes (the gateway: webui), the
# CLI, the checkers.
COMPILED_PACKAGES = ("fabric", "nodes", "engines", "webui", "tests", "bench")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Write the bytecode of this checkout's modules once, before any test starts a process.
    With PYTHONDONTWRITEBYTECODE set (as in some CI and sandbox images) no process writes it,
    so every node, CLI and checker process compiled every module it imports from source again:
    0.15-0.2 s of CPU per process, ~0.5 s per cluster start on a 2-core machine. Processes only
    read it (a module changed since is compiled again in memory, as ever); nothing a test
    checks depends on it. ``__pycache__`` is ignored by git. Once, by the controller: not again
    in each xdist worker."""
    if hasattr(session.config, "workerinput"):
        return
    for package in COMPILED_PACKAGES:
        compileall.compile_dir(ROOT / package, quiet=1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """Before a test's fixtures are torn down (its clusters stopped), close the HTTP clients it
    opened: a gateway stopping with an idle kept-alive connection open waited 2 s for it."""
    Http.close_all()
    yield


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
def cluster(cluster_factory, request: pytest.FixtureRequest) -> Cluster:
    """A fresh 3-broker cluster for the test -- or, in a module that sets ``CLUSTER_OPTIONS``,
    the module's one cluster (``module_cluster``), shared by its tests."""
    if hasattr(request.module, "CLUSTER_OPTIONS"):
        return request.getfixturevalue("module_cluster")
    return cluster_factory(3)


@pytest.fixture
def admin(request: pytest.FixtureRequest) -> Admin:
    """The module's Admin (``module_admin``) on its one cluster."""
    return request.getfixturevalue("module_admin")


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """One 3-broker cluster for all the tests of a module, started before the first and stopped
    after the last. A module configures it with ``CLUSTER_OPTIONS`` (keywords of
    ``running_cluster``: ``brokers``, ``extra_nodes``, ``overrides``…)."""
    options = getattr(request.module, "CLUSTER_OPTIONS", {})
    with running_cluster(tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2]), **options) as c:
        yield c


@pytest.fixture(scope="module")
def module_admin(module_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Admin]:
    """An Admin on ``module_cluster`` for the module's tests (``ADMIN_OPTIONS``: its keywords)."""
    with Admin(module_cluster.bootstrap, **getattr(request.module, "ADMIN_OPTIONS", {})) as admin:
        yield admin
