"""A small HTTP client for the gateway tests (requests), and the cluster config they share."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import requests

from nodes.local_cluster import GATEWAY_NODES, ROLE_KEYS, gateway_overrides  # noqa: F401 - re-exported

BINARY = "application/vnd.kafka.binary.v2+json"
JSON_V2 = "application/vnd.kafka.json.v2+json"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Http:
    # The sessions used since the last ``close_all``, which a test's teardown calls before it
    # stops the gateway: a stopping gunicorn worker keeps an idle kept-alive connection open for
    # 2 s, for a request its client may already be sending. Held here, not weakly: a connection
    # outlives its client in a reference cycle (a response and its pool) until the collector runs.
    _used: set[requests.Session] = set()

    def __init__(self, port: int, role: str = "admin") -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.key = ROLE_KEYS[role]
        self.session = requests.Session()

    @classmethod
    def close_all(cls) -> None:
        """Close the kept-alive connections of every client used since the last call; a later
        request opens a new one."""
        while cls._used:
            session = cls._used.pop()
            # urllib3's PoolManager.clear() (what Session.close() calls) only drops its pools: a
            # pool a response still references (its ``_pool``) kept its connection open
            for adapter in session.adapters.values():
                pools = adapter.poolmanager.pools
                for key in pools.keys():
                    pools[key].close()
            session.close()

    def __call__(self, method: str, path: str, body: Any = None, ctype: str = "application/json",
                 key: str | None = "", timeout_s: float = 30, **params: Any) -> requests.Response:
        Http._used.add(self.session)
        headers = {}
        k = self.key if key == "" else key
        if k is not None:
            headers["Authorization"] = f"Bearer {k}"
        if body is not None:
            headers["Content-Type"] = ctype
        import json as _json
        return self.session.request(method, self.base + path, headers=headers, params=params or None,
                                    data=None if body is None else _json.dumps(body), timeout=timeout_s)

    def ok(self, method: str, path: str, body: Any = None, ctype: str = "application/json", **params: Any) -> Any:
        r = self(method, path, body, ctype, **params)
        assert r.status_code < 300, (method, path, r.status_code, r.text)
        return r.json() if r.content else None


def gateway_port(config_path: Path) -> int:
    import yaml
    return yaml.safe_load(config_path.read_text())["nodes"]["gateway"]["port"]


def consumer_host(cluster: Any, **match: str) -> str:
    """The consumer service (consumer-1 or consumer-2) hosting the one consumer instance whose
    CI_LIST entry has ``match`` (``instance=NAME``, ``group=NAME``)."""
    hosts = [n for n in ("consumer-1", "consumer-2")
             if any(all(i[k] == v for k, v in match.items()) for i in cluster.call(n, b"CI_LIST")[0]["instances"])]
    assert len(hosts) == 1, hosts
    return hosts[0]
