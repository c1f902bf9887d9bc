"""Shared by the monitor's integration tests: a test config with a monitor (and its metrics
port) picked free, GET /metrics parsed with prometheus_client's parser, alert look-ups."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from fabric.client.monitor import MonitorClient
from tests.harness import make_config

HTTP_TIMEOUT_S = 5


def monitor_options(brokers: int = 3, extra_nodes: tuple[str, ...] = (), monitor: dict | None = None,
                    **sections: Any) -> dict[str, Any]:
    """``make_config`` keywords (and a module's ``CLUSTER_OPTIONS``) of a cluster with a
    ``monitor`` node that judges health quickly."""
    overrides = {"monitor": {"health_interval_ms": 300, "unresponsive_after_ms": 2000, **(monitor or {})}, **sections}
    return {"brokers": brokers, "extra_nodes": (*extra_nodes, "monitor"), "overrides": overrides}


def monitor_config(tmp: Path, brokers: int = 3, extra_nodes: tuple[str, ...] = (), monitor: dict | None = None,
                   **sections: Any) -> tuple[Path, int]:
    """A config with a ``monitor`` node; returns (path, metrics port)."""
    path = make_config(tmp, **monitor_options(brokers, extra_nodes, monitor, **sections))
    return path, yaml.safe_load(path.read_text())["nodes"]["monitor"]["metrics_port"]


def scrape(port: int) -> dict[str, Any]:
    """GET /metrics, parsed: family name -> family."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=HTTP_TIMEOUT_S) as resp:
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def alert(client: MonitorClient, rule: str, subject: str, state: str) -> dict | None:
    for a in client.alerts(True):
        if a["rule"] == rule and a["subject"] == subject and a["state"] == state:
            return a
    return None
