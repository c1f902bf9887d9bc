"""Finding the cluster: bootstrap endpoints and metadata fetched from them.

``--bootstrap host:port[,host:port…]`` names any nodes that answer METADATA (the coordinator
or a broker); ``-c CONFIG`` uses the config's coordinator and brokers. Thread-safety: the
functions are thread-safe; a ``BlockingClient`` is not.
"""

from __future__ import annotations

import time

import zmq

from fabric import protocol as P
from fabric.config import load_config
from fabric.errors import CodedError, FabricError, MalformedFrame, RequestTimeout
from fabric.metadata import ClusterMetadata, read_answer
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


def bootstrap_target(bootstrap: str | list[str] | None, config_path: str | None) -> tuple[list[str], str | None]:
    """``parse_bootstrap``'s endpoints and the cluster name a client that finds its nodes through
    a config expects (the config's ``cluster.name``; None with ``bootstrap`` endpoints, which name
    no cluster): the config read once."""
    if bootstrap:
        return parse_bootstrap(bootstrap), None
    cfg = load_config(config_path)
    return cfg.bootstrap(), cfg.cluster.name


def check_cluster(answered: str, expected: str | None, where: str) -> None:
    """Raise when ``where`` serves a cluster other than the config's: the shipped configs
    share ports, and a command must not list, make or write another cluster's topics."""
    if expected and answered and answered != expected:
        raise FabricError(f"{where} serves cluster {answered!r}, not {expected!r} as the config says: another "
                          "cluster runs on the config's ports (stop it, or name its own config)")


def metadata_endpoint(metadata: ClusterMetadata, endpoints: list[str], attempt: int) -> str:
    """Where to ask for metadata on the ``attempt``-th try. The coordinator is the source of
    truth (a broker cut off from it serves a stale copy), so once it is known it gets every
    other try; the other bootstrap endpoints take the rest in turn (the list usually names the
    coordinator too: with it down, its turns there were more timeouts before a broker was asked)."""
    if metadata.coordinator:
        if attempt % 2 == 0:
            return metadata.coordinator
        attempt //= 2
        endpoints = [e for e in endpoints if e != metadata.coordinator] or endpoints
    return endpoints[attempt % len(endpoints)]


def fetch_metadata(ctx: zmq.Context, endpoints: list[str], timeout_ms: int = 3000,
                   prefer: str | None = None, *, deadline_s: float | None = None) -> tuple[ClusterMetadata, str]:
    """Ask ``prefer`` (the coordinator, once known) and then each endpoint in turn, each for at
    most ``timeout_ms``; return (metadata, endpoint that answered). ``deadline_s`` (monotonic
    s): an ask gets at most an even share of what is left until then among the endpoints still
    to ask, and none begins after it -- a caller's bound holds when a node does not answer (a
    stopped coordinator took ``timeout_ms`` before the next endpoint was asked), and a silent
    first one leaves the others time to answer (given all that was left, it failed a call a
    broker's copy answers). Raises ``RequestTimeout`` (``request_timed_out``, retriable) when
    none answers with metadata in time: the cluster is down, unreachable or starting."""
    last: Exception | None = None
    order = ([prefer] if prefer else []) + [e for e in endpoints if e != prefer]
    for i, ep in enumerate(order):
        try_ms = timeout_ms if deadline_s is None else \
            min(timeout_ms, int((deadline_s - time.monotonic()) * 1000) // (len(order) - i))
        if try_ms <= 0:
            last = last or RequestTimeout(f"no time left to ask {ep}")
            break
        client = BlockingClient(ctx, ep)
        try:
            header, _ = client.call(P.METADATA, {}, timeout_ms=try_ms)
            md = read_answer(header, ep)
            if md is None:
                last = MalformedFrame(P.MALFORMED_REQUEST, f"unreadable metadata from {ep}")
            elif md.version >= 0:
                return md, ep
        except CodedError as e:
            last = e
        finally:
            client.close()
    why = getattr(last, "message", None) or str(last)  # its text: the code is this error's own
    raise RequestTimeout(f"no node answered at {', '.join(endpoints)}: {why}")
