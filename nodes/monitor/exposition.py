"""Prometheus exposition of the monitor's aggregated metrics, through prometheus_client.

``Exposition`` is an immutable snapshot the monitor replaces once per check: every node's
latest samples (exposed with a ``node`` label in front of the declared ones) and the
cluster-wide samples the monitor computes itself. ``SnapshotCollector`` turns the current
snapshot into metric families; ``render_text`` gives the text exposition format, which the
monitor serves on ``metrics_port`` and over RPC (``MONITOR_METRICS``) for the gateway's
``/metrics``.

Thread-safety: the collector runs on the HTTP server's thread and only reads the snapshot
reference the reactor thread swaps in (an atomic assignment); snapshots are never mutated.
"""

from __future__ import annotations

from typing import Callable, Iterable, NamedTuple

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from fabric.metrics import COUNTER, GAUGE, METRICS, Sample

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Exposition(NamedTuple):
    per_node: tuple[tuple[str, tuple[Sample, ...]], ...]   # (node name, its samples)
    cluster: tuple[Sample, ...]

    @classmethod
    def empty(cls) -> "Exposition":
        return cls((), ())


def _family(name: str, extra_labels: list[str]) -> Metric:
    spec = METRICS[name]
    labels = extra_labels + list(spec.labels)
    if spec.kind == COUNTER:
        return CounterMetricFamily(name.removesuffix("_total"), spec.help, labels=labels)
    if spec.kind == GAUGE:
        return GaugeMetricFamily(name, spec.help, labels=labels)
    return HistogramMetricFamily(name, spec.help, labels=labels)


def _add(family: Metric, name: str, labels: list[str], s: Sample) -> None:
    spec = METRICS[name]
    if spec.kind != COUNTER and spec.kind != GAUGE:
        cumulative, buckets = 0, []
        for bound, n in zip((*spec.buckets, float("inf")), s.buckets):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        family.add_metric(labels, buckets, sum_value=s.value)  # type: ignore[call-arg]
    else:
        family.add_metric(labels, s.value)  # type: ignore[call-arg]


def families(snapshot: Exposition) -> Iterable[Metric]:
    out: dict[str, Metric] = {}
    for node, samples in snapshot.per_node:
        for s in samples:
            fam = out.get(s.name) or out.setdefault(s.name, _family(s.name, ["node"]))
            _add(fam, s.name, [node, *s.labels], s)
    for s in snapshot.cluster:
        fam = out.get(s.name) or out.setdefault(s.name, _family(s.name, []))
        _add(fam, s.name, list(s.labels), s)
    return out.values()


class SnapshotCollector:
    """A prometheus_client custom collector over ``source()``, the current snapshot."""

    def __init__(self, source: Callable[[], Exposition]) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        return families(self.source())


def make_registry(source: Callable[[], Exposition]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(source))  # type: ignore[arg-type]
    return registry


def render_text(snapshot: Exposition) -> bytes:
    """The text exposition format of ``snapshot`` (what ``GET /metrics`` answers)."""
    return generate_latest(make_registry(lambda: snapshot))


def serve_http(host: str, port: int, registry: CollectorRegistry) -> object:
    """Serve ``GET /metrics`` for ``registry`` on a daemon thread; returns the server (its
    ``shutdown()`` stops it). Raises OSError when the port is taken."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
