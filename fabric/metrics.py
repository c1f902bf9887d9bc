"""Loom's metrics: every metric declared once here (name, type, unit, labels, help), the
registry a node records into, and the typed samples STATS carries to the monitor.

Names follow Prometheus conventions: the ``loom_`` prefix, base units in the name (``_seconds``,
``_bytes``), counters end in ``_total``. Label values are bounded: topics, partitions, groups,
nodes, commands, error names, HTTP routes and status codes -- never record keys or client
addresses. A metric keeps at most ``SERIES_PER_METRIC_MAX`` label combinations; past that new
series are dropped and counted (``loom_metric_series_dropped_total``), never grown.

Recording is cheap on purpose (one dict update; callers count per batch or per request, never
per record). ``MetricsRegistry`` is not thread-safe: it belongs to its node's reactor thread.
Gauges describing state (partition offsets, disk, buffers) are not stored: collectors produce
them when a snapshot is taken (once per STATS request).
"""

from __future__ import annotations

import bisect
import os
import resource
from typing import Callable, Iterable, NamedTuple

from engines.batch import iter_batches

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"

SERIES_PER_METRIC_MAX = 20_000        # label combinations one metric keeps in one node
LABEL_VALUE_LEN_MAX = 256
SAMPLES_MAX = 200_000                 # samples one STATS reply may carry (decode bound)
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class MetricSpec(NamedTuple):
    name: str
    kind: str                      # COUNTER | GAUGE | HISTOGRAM
    unit: str                      # base unit: "seconds", "bytes", "records", "ratio", "" (a count)
    labels: tuple[str, ...]        # recorded by the node; the monitor adds ``node`` when it aggregates
    help: str
    buckets: tuple[float, ...] = ()


def _c(name: str, unit: str, labels: tuple[str, ...], help: str) -> MetricSpec:
    return MetricSpec(name, COUNTER, unit, labels, help)


def _g(name: str, unit: str, labels: tuple[str, ...], help: str) -> MetricSpec:
    return MetricSpec(name, GAUGE, unit, labels, help)


SPECS: tuple[MetricSpec, ...] = (
    # -- every node -------------------------------------------------------------------------
    _c("loom_requests_total", "", ("command",), "Requests received, by command"),
    _c("loom_request_errors_total", "", ("command", "error"), "Requests answered with an error, by command and error name"),
    MetricSpec("loom_request_duration_seconds", HISTOGRAM, "seconds", ("command",),
               "Time from receiving a request to answering it (millisecond resolution), by command; "
               "PRODUCE and FETCH on brokers are the produce and fetch latencies", LATENCY_BUCKETS_S),
    _c("loom_process_cpu_seconds_total", "seconds", (), "User and system CPU time of the node's process"),
    _g("loom_process_resident_memory_bytes", "bytes", (), "Resident set size of the node's process"),
    _c("loom_metric_series_dropped_total", "", ("metric",), "Series not recorded because the metric had too many"),
    # -- brokers ------------------------------------------------------------------------------
    _c("loom_broker_records_in_total", "records", ("topic",), "Records appended as leader (after deduplication)"),
    _c("loom_broker_bytes_in_total", "bytes", ("topic",), "Batch bytes appended as leader"),
    _c("loom_broker_records_out_total", "records", ("topic",), "Records sent to consumers in fetch replies"),
    _c("loom_broker_bytes_out_total", "bytes", ("topic",), "Batch bytes sent to consumers in fetch replies"),
    _g("loom_partition_high_watermark", "records", ("topic", "partition"), "High watermark of a partition this broker leads"),
    _g("loom_partition_log_end_offset", "records", ("topic", "partition"), "Log end offset of a partition this broker leads"),
    _g("loom_broker_partitions", "", ("role",), "Partition replicas on this broker, by role (leader, follower)"),
    _g("loom_broker_under_replicated_partitions", "", (), "Partitions this broker leads whose ISR is smaller than the replica set"),
    _g("loom_broker_log_bytes", "bytes", ("engine",), "Bytes of every partition log on this broker, by engine"),
    _g("loom_broker_disk_free_bytes", "bytes", (), "Free bytes on the file system of the broker's data dir"),
    _g("loom_broker_disk_used_ratio", "ratio", (), "Used fraction (0-1) of the file system of the broker's data dir"),
    _g("loom_broker_parked_requests", "", (), "Long-poll fetches and acks=all produces waiting on the broker"),
    _g("loom_broker_metadata_refused", "", (), "1 while the broker refuses the coordinator's metadata or the coordinator refuses it"),
    # -- producer and consumer services -------------------------------------------------------------
    _c("loom_producer_service_records_total", "records", ("topic",), "Records accepted by the producer service"),
    _g("loom_producer_service_buffer_bytes", "bytes", (), "Bytes of records accepted and not yet answered"),
    _g("loom_producer_service_buffer_max_bytes", "bytes", (), "The producer service's buffer bound"),
    _g("loom_consumer_service_instances", "", (), "Consumer instances hosted by the consumer service"),
    # -- gateway (recorded by the gateway, reported to the monitor) ---------------------------------
    _c("loom_gateway_http_requests_total", "", ("route", "status"), "HTTP requests served by the gateway, by route template and status"),
    _g("loom_gateway_long_polls_waiting", "", (), "Requests waiting in a long poll (at most gateway.long_polls_max)"),
    _c("loom_gateway_long_polls_shortened_total", "", (), "Long polls over the budget, answered at once without waiting"),
    _g("loom_gateway_rate_limit_clients", "", (), "Clients (addresses and keys) with a bucket in the rate limiter's table"),
    _c("loom_gateway_rate_limit_table_full_total", "", (), "New clients answered 429 because the rate limiter's table was full of buckets in use"),
    _c("loom_gateway_requests_cut_total", "", ("phase",), "Requests cut for not arriving within gateway.request_read_timeout_ms (headers; body: 408)"),
    # -- computed by the monitor over the whole cluster ----------------------------------------------
    _g("loom_node_up", "", ("role",), "1 when the node answers (healthy or degraded), else 0"),
    _g("loom_node_health", "", ("role", "state"), "1 for the node's current health state (healthy, degraded, unresponsive, down)"),
    _c("loom_node_restarts_total", "", (), "Restarts of the node by the supervisor"),
    _g("loom_cluster_brokers_alive", "", (), "Brokers the coordinator holds alive"),
    _g("loom_cluster_partitions", "", (), "Partitions of every topic (internal topics included)"),
    _g("loom_cluster_under_replicated_partitions", "", (), "Partitions whose ISR is smaller than the replica set"),
    _g("loom_cluster_offline_partitions", "", (), "Partitions without a leader"),
    _c("loom_isr_shrinks_total", "", ("topic",), "ISR shrinks seen in the coordinator's metadata"),
    _c("loom_isr_expands_total", "", ("topic",), "ISR expansions seen in the coordinator's metadata"),
    _c("loom_leader_elections_total", "", ("topic",), "Leader changes (leader epoch bumps) seen in the coordinator's metadata"),
    _g("loom_consumer_lag_records", "records", ("group", "topic", "partition"), "High watermark minus the group's committed offset"),
    _g("loom_consumer_group_lag_records", "records", ("group",), "Sum of a group's lag over its partitions"),
    _g("loom_alerts_firing", "", ("rule",), "Alerts firing, by rule"),
)
METRICS: dict[str, MetricSpec] = {s.name: s for s in SPECS}


class Sample(NamedTuple):
    """One series' value. Histograms: ``value`` is the sum, ``count`` the number of
    observations and ``buckets`` the (non-cumulative) count per bucket plus one for +Inf."""

    name: str
    labels: tuple[str, ...]
    value: float
    count: int = 0
    buckets: tuple[int, ...] = ()

    def encode(self) -> list:
        return [self.name, list(self.labels), self.value, self.count, list(self.buckets)]

    @classmethod
    def decode(cls, raw: object) -> "Sample":
        """Raises ValueError for a shape that is not a sample of a declared metric."""
        if not (isinstance(raw, list) and len(raw) == 5 and isinstance(raw[0], str) and isinstance(raw[1], list)
                and isinstance(raw[2], (int, float)) and isinstance(raw[3], int) and isinstance(raw[4], list)):
            raise ValueError(f"not a metric sample: {str(raw)[:80]}")
        spec = METRICS.get(raw[0])
        if spec is None or len(raw[1]) != len(spec.labels):
            raise ValueError(f"unknown metric or wrong labels: {raw[0]!r}")
        if spec.kind == HISTOGRAM and len(raw[4]) != len(spec.buckets) + 1:
            raise ValueError(f"{raw[0]}: {len(raw[4])} buckets, declared {len(spec.buckets) + 1}")
        return cls(raw[0], tuple(str(v)[:LABEL_VALUE_LEN_MAX] for v in raw[1]), float(raw[2]), raw[3],
                   tuple(int(b) for b in raw[4]))


def decode_samples(raw: object) -> list[Sample]:
    """Samples of a STATS reply; malformed ones are skipped (a peer's bad input)."""
    if not isinstance(raw, list):
        return []
    out = []
    for item in raw[:SAMPLES_MAX]:
        try:
            out.append(Sample.decode(item))
        except ValueError:
            continue
    return out


class _Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0


Collector = Callable[[], Iterable[tuple[str, tuple, float]]]
# yields samples already encoded (``encode_gauge``): a collector of many series whose values
# rarely change keeps their encodings and answers with them
EncodedCollector = Callable[[], Iterable[list]]


def encode_gauge(name: str, labels: tuple, value: float) -> list:
    """One gauge sample as ``MetricsRegistry.encode`` writes it (for an encoded collector).
    A name that is not declared, or the wrong number of labels, is an AssertionError."""
    assert name in METRICS and len(labels) == len(METRICS[name].labels), name
    return Sample(name, tuple(map(str, labels)), float(value)).encode()


class MetricsRegistry:
    """Counters and histograms a node records into, plus collectors for state gauges.

    Not thread-safe: owned by the node's reactor thread. Recording into an undeclared metric
    or with the wrong number of labels is a programmer error (KeyError / AssertionError)."""

    def __init__(self) -> None:
        self._series: dict[str, dict[tuple, float | _Histogram]] = {s.name: {} for s in SPECS}
        self._collectors: list[tuple[Callable[[], Iterable], bool]] = []  # (fn, yields encoded samples)

    def _admit(self, name: str, series: dict, labels: tuple) -> bool:
        assert len(labels) == len(METRICS[name].labels), f"{name} takes labels {METRICS[name].labels}"
        if len(series) < SERIES_PER_METRIC_MAX:
            return True
        dropped = self._series["loom_metric_series_dropped_total"]
        dropped[(name,)] = dropped.get((name,), 0) + 1
        return False

    def inc(self, name: str, labels: tuple = (), amount: float = 1) -> None:
        """Add ``amount`` to a counter (or a stored gauge)."""
        series = self._series[name]
        try:
            series[labels] += amount  # type: ignore[operator]
        except KeyError:
            if self._admit(name, series, labels):
                series[labels] = amount

    def set(self, name: str, labels: tuple, value: float) -> None:
        series = self._series[name]
        if labels in series or self._admit(name, series, labels):
            series[labels] = value

    def observe(self, name: str, labels: tuple, value: float) -> None:
        """One observation into a histogram (value in the metric's base unit)."""
        series = self._series[name]
        h = series.get(labels)
        if h is None:
            if not self._admit(name, series, labels):
                return
            h = series[labels] = _Histogram(METRICS[name].buckets)
        h.counts[bisect.bisect_left(h.bounds, value)] += 1  # type: ignore[union-attr]
        h.total += value  # type: ignore[union-attr]

    def labels(self, name: str) -> list[tuple]:
        """The labels of every stored series of ``name``."""
        return list(self._series[name])

    def forget(self, name: str, labels: tuple) -> None:
        """Drop one stored series (its subject is gone: a deleted topic's counters), so that
        it is no longer reported and frees its place under ``SERIES_PER_METRIC_MAX``."""
        self._series[name].pop(labels, None)

    def add_collector(self, fn: Collector) -> None:
        """``fn()`` yields ``(name, labels, value)`` gauges each time a snapshot is taken."""
        self._collectors.append((fn, False))

    def add_encoded_collector(self, fn: EncodedCollector) -> None:
        """``fn()`` yields gauges already encoded (each made by ``encode_gauge``) each time a
        snapshot is taken, in their place among the collectors."""
        self._collectors.append((fn, True))

    def snapshot(self) -> list[Sample]:
        """The stored series' Samples first, then each collector's in the order they were added."""
        out = self._series_samples()
        for fn, encoded in self._collectors:
            if encoded:
                out += [Sample(n, tuple(labels), v, c, tuple(b)) for n, labels, v, c, b in fn()]
            else:
                out += self._collected(fn)
        return out

    def encode(self) -> list[list]:
        """``snapshot`` encoded, in the same order; an encoded collector's samples as it made them."""
        out = [s.encode() for s in self._series_samples()]
        for fn, encoded in self._collectors:
            out += fn() if encoded else [s.encode() for s in self._collected(fn)]
        return out

    def _series_samples(self) -> list[Sample]:
        out = []
        for name, series in self._series.items():
            for labels, v in series.items():
                if isinstance(v, _Histogram):
                    out.append(Sample(name, tuple(map(str, labels)), v.total, sum(v.counts), tuple(v.counts)))
                else:
                    out.append(Sample(name, tuple(map(str, labels)), float(v)))
        return out

    @staticmethod
    def _collected(fn: Collector) -> list[Sample]:
        out = []
        for name, labels, value in fn():
            assert name in METRICS and len(labels) == len(METRICS[name].labels), name
            out.append(Sample(name, tuple(map(str, labels)), float(value)))
        return out


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_samples() -> Iterable[tuple[str, tuple, float]]:
    """CPU seconds and RSS of this process (a collector every node installs)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    yield "loom_process_cpu_seconds_total", (), ru.ru_utime + ru.ru_stime
    try:
        with open("/proc/self/statm", "rb") as f:
            rss = int(f.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        rss = ru.ru_maxrss * 1024  # peak, where /proc is missing
    yield "loom_process_resident_memory_bytes", (), rss


def batch_records(data: bytes | memoryview) -> int:
    """Records in a buffer of whole batches, from their headers (per batch, never per record)."""
    return sum(h.record_count for h, _ in iter_batches(data))
