"""Real clusters for tests: the package's local-cluster runner (``nodes.local_cluster``) plus
the repository root that tests run commands in.
"""

from __future__ import annotations

from pathlib import Path

from nodes.local_cluster import TEST_ADMIN_KEY, Cluster, free_ports, make_config, running_cluster, wait_until

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["ROOT", "TEST_ADMIN_KEY", "Cluster", "free_ports", "make_config", "running_cluster", "wait_until"]
