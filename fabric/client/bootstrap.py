"""Finding the cluster: bootstrap endpoints and metadata fetched from them.

``--bootstrap host:port[,host:port…]`` names any nodes that answer METADATA (the coordinator
or a broker); ``-c CONFIG`` uses the config's coordinator and brokers. Thread-safety: the
functions are thread-safe; a ``BlockingClient`` is not.
"""

from __future__ import annotations

import zmq

from fabric import protocol as P
from fabric.config import load_config
from fabric.errors import FabricError, RemoteError
from fabric.metadata import ClusterMetadata
from fabric.rpc import BlockingClient


def parse_bootstrap(bootstrap: str | list[str] | None = None, config_path: str | None = None) -> list[str]:
    """Endpoints (tcp://host:port) to ask for metadata. Without ``bootstrap`` the config file
    (``config_path``, $LOOM_CONFIG, config/cluster.yaml) is read."""
    if bootstrap:
        items = bootstrap.split(",") if isinstance(bootstrap, str) else list(bootstrap)
        out = []
        for item in (i.strip() for i in items):
            if not item:
                continue
            if item.startswith("tcp://"):
                out.append(item)
            else:
                host, sep, port = item.rpartition(":")
                if not sep or not port.isdigit():
                    raise FabricError(f"bad bootstrap address {item!r}: expected host:port")
                out.append(f"tcp://{host}:{port}")
        if not out:
            raise FabricError("empty bootstrap list")
        return out
    return load_config(config_path).bootstrap()


def fetch_metadata(ctx: zmq.Context, endpoints: list[str], timeout_ms: int = 3000) -> tuple[ClusterMetadata, str]:
    """Ask each endpoint in turn; return (metadata, coordinator-or-broker endpoint that answered)."""
    last: Exception | None = None
    for ep in endpoints:
        client = BlockingClient(ctx, ep)
        try:
            header, _ = client.call(P.METADATA, {}, timeout_ms=timeout_ms)
            md = ClusterMetadata.from_wire(header["metadata"])
            if md.version >= 0:
                return md, ep
        except RemoteError as e:
            last = e
        finally:
            client.close()
    raise FabricError(f"no node answered at {', '.join(endpoints)}: {last}")
