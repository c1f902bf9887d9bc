"""Options of every ``loom bench`` workload command: the common flag set that produce, consume,
e2e, cluster, failover and engines share (one parser builder, one validation), the workload
presets of produce|consume|e2e (after the OpenMessaging Benchmark's), and the engine x fsync
combinations to run.

    loom bench produce [--workload NAME] [--records N | --duration S] [--record-size B]
                       [--topic T] [--partitions P] [--replication-factor R] [--acks all]
                       [--producers N] [--consumers N] [--batch-size N] [--linger-ms MS]
                       [--compression none] [--rate N] [--api send|send_many]
                       [--engine segment,lmdb] [--fsync interval,always] [--runs 3]
                       [--direct-write-min-bytes=-1,262144] [--max-in-flight 1,2]
                       [-c CONFIG | --bootstrap HOST:PORT,... | --self-contained]
                       [--json FILE] [--chart FILE.html] [--peer jetstream]

``loom bench cluster``, ``failover`` and ``engines`` build their parsers on
``add_common_arguments`` (the flags above from ``--records`` to ``--chart``, without the
workload-only ones) with defaults of their own, and ``validate`` says what each of them cannot
take: failover only runs on a cluster it started (it SIGKILLs brokers) and needs a replica to
fail over to; cluster and failover start one cluster, so one engine and fsync mode.

An option given on the command line wins over the workload preset, which wins over the
defaults. Pure functions; thread-safe.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from typing import Any, NoReturn

from engines import registry as engine_registry
from fabric.client.accumulator import BATCH_RECORDS_MAX
from fabric.client.sender_flights import MAX_IN_FLIGHT_MAX

COMMANDS = ("produce", "consume", "e2e")            # the workload runner's (bench.runner)
BENCHES = COMMANDS + ("cluster", "failover", "engines")  # every command of the common flag set
RECORDS_MAX = 1_000_000_000        # --records, and the count bound of a --duration run
DURATION_S_MAX = 3600.0            # --duration, and the time bound of a --records run
RECORD_SIZE_BYTES_MIN = 16         # room for the e2e timestamp (fabric/records adds the rest)
RECORD_SIZE_BYTES_MAX = 1024 * 1024 - 64
PARTITIONS_MAX = 10_000
WORKERS_MAX = 32                   # --producers / --consumers (each a process, or a thread in failover)
RATE_MAX = 10_000_000              # --rate, records/s offered in total
RUNS_MAX = 20
COMBINATIONS_MAX = 12              # engines x fsync modes in one invocation
FAILOVER_RATE_MIN = 100            # failover's --rate: its producers pace themselves in Python
FAILOVER_RATE_MAX = 20_000
BACKLOG_BYTES_MAX = 64 * 1024**3
ACKS = ("0", "1", "all")
APIS = ("send", "send_many")
PEERS = ("jetstream",)

# name -> (what it is, option defaults); the OpenMessaging Benchmark's workloads, one topic each.
WORKLOADS: dict[str, tuple[str, dict]] = {
    "1x1-100b": ("1 topic x 1 partition, 100-byte records",
                 {"partitions": 1, "record_size": 100}),
    "1x16-1k": ("1 topic x 16 partitions, 1 KiB records",
                {"partitions": 16, "record_size": 1024}),
    "1x100-1k-4p4c": ("1 topic x 100 partitions, 1 KiB records, 4 producer and 4 consumer processes",
                      {"partitions": 100, "record_size": 1024, "producers": 4, "consumers": 4}),
    "backlog": ("consumer backlog: produce --backlog-bytes (1 GiB) first, then drain it (use with consume)",
                {"partitions": 16, "record_size": 1024, "backlog_bytes": 1024**3}),
    "latency": ("fixed offered rate 2,000 records/s, 100-byte records, linger 0 (open loop)",
                {"partitions": 1, "record_size": 100, "rate": 2000, "linger_ms": 0, "duration": 10.0}),
}

DEFAULTS = {"records": None, "duration": None, "record_size": 100, "topic": None, "partitions": 3,
            "replication_factor": 3, "acks": "all", "producers": 1, "consumers": 1, "batch_size": BATCH_RECORDS_MAX,
            "linger_ms": 5, "compression": "none", "rate": None, "api": "send", "engine": "segment",
            "fsync": "interval", "runs": 1, "brokers": 3, "backlog_bytes": None, "fsync_interval_ms": 1000,
            "group": False}
RECORDS_DEFAULT = 300_000          # when neither --records nor --duration is given


def usage_error(prog: str, message: str) -> str:
    """A usage error in the one-line form every ``loom`` command uses."""
    return f"loom: error: {message} (see '{prog} --help')"


class UsageParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, ``loom: error: … (see 'PROG --help')``,
    and exit code 2, as the rest of the ``loom`` CLI (nodes/cli.py) answers them. ``prog`` is
    the ``loom bench …`` command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, usage_error(self.prog, message) + "\n")


class OptionError(ValueError):
    """A bad combination of options (the CLI prints it as a usage error)."""


@dataclass(frozen=True)
class Combination:
    """One storage setup of the self-contained cluster."""

    engine: str
    fsync: str
    api: str = "send"
    direct_write_min_bytes: int | None = None  # storage.direct_write_min_bytes; None: the config's default
    max_in_flight: int | None = None  # the producers' max_in_flight; None: the Producer's default

    @property
    def label(self) -> str:
        direct = "" if self.direct_write_min_bytes is None else f"/direct={self.direct_write_min_bytes}"
        flights = "" if self.max_in_flight is None else f"/inflight={self.max_in_flight}"
        return f"{self.engine}/{self.fsync}/{self.api}{direct}{flights}"

    def as_dict(self) -> dict:
        out: dict[str, Any] = {"engine": self.engine, "fsync": self.fsync, "api": self.api}
        if self.direct_write_min_bytes is not None:
            out["direct_write_min_bytes"] = self.direct_write_min_bytes
        if self.max_in_flight is not None:
            out["max_in_flight"] = self.max_in_flight
        return out


@dataclass
class BenchOptions:
    command: str
    workload: str | None = None
    records: int | None = None
    duration: float | None = None
    record_size: int = 100
    topic: str | None = None
    partitions: int = 3
    replication_factor: int = 3
    acks: str = "all"
    producers: int = 1
    consumers: int = 1
    batch_size: int = BATCH_RECORDS_MAX
    linger_ms: int = 5
    compression: str = "none"
    rate: int | None = None
    apis: list[str] = field(default_factory=lambda: ["send"])
    engines: list[str] = field(default_factory=lambda: ["segment"])
    fsyncs: list[str] = field(default_factory=lambda: ["interval"])
    # storage.direct_write_min_bytes of the self-contained cluster, one combination each; empty:
    # the config's default
    direct_write_min_bytes: list[int] = field(default_factory=list)
    max_in_flight: list[int] = field(default_factory=list)  # one combination each; empty: the default
    fsync_interval_ms: int = 1000
    runs: int = 1
    brokers: int = 3
    backlog_bytes: int | None = None
    group: bool = False
    keep_topics: bool = False
    config: str | None = None
    bootstrap: str | None = None
    json: str | None = None
    chart: str | None = None
    peer: str | None = None
    peer_dir: str | None = None
    progress: bool | None = None   # None: only when stdout is a terminal

    @property
    def self_contained(self) -> bool:
        return self.config is None and self.bootstrap is None

    def combinations(self) -> list[Combination]:
        """Each engine with each fsync mode, each API, each direct-write threshold and each
        ``max_in_flight``, in the order given (the first is the baseline of the ratios). The
        memory engine has no fsync and no files: it runs once per API and ``max_in_flight``,
        with the first mode and threshold."""
        combos: list[Combination] = []
        directs: list[int | None] = list(self.direct_write_min_bytes) or [None]
        flights: list[int | None] = list(self.max_in_flight) or [None]
        for engine in self.engines:
            memory = engine == "memory"
            for fsync in (self.fsyncs[:1] if memory else self.fsyncs):
                for api in self.apis:
                    for direct in (directs[:1] if memory else directs):
                        for in_flight in flights:
                            combo = Combination(engine, fsync, api, direct, in_flight)
                            if combo not in combos:
                                combos.append(combo)
        return combos

    def record_target(self) -> int | None:
        """Records each run sends in total (None: run for ``duration``)."""
        if self.backlog_bytes is not None:
            return max(1, self.backlog_bytes // self.record_size)
        if self.duration is not None and self.records is None:
            return None
        return self.records if self.records is not None else RECORDS_DEFAULT


# The common flag set: (option strings, argparse keywords, help). Every default is None, so that
# what was given can be told from what was not (a preset or a command's defaults fill the rest).
_COMMON: tuple[tuple[tuple[str, ...], dict, str], ...] = (
    (("--record-size",), {"type": int}, "bytes per record value"),
    (("--topic",), {}, "topic name (default: a fresh bench-... topic per run)"),
    (("--partitions",), {"type": int}, "partitions of the topic"),
    (("--replication-factor",), {"type": int}, "replication factor of the topic"),
    (("--acks",), {"choices": ACKS}, "the producers' acks"),
    (("--producers",), {"type": int}, "producer processes"),
    (("--consumers",), {"type": int}, "consumer processes"),
    (("--batch-size",), {"type": int}, "records per batch at most: the producer's batch_records_max (default 10000)"),
    (("--linger-ms",), {"type": int}, "the producers' linger"),
    (("--compression",), {"choices": ("none", "zstd", "lz4")}, "the producers' compression"),
    (("--rate",), {"type": int},
     "fixed offered rate, records/s over all producers (open loop; latency from send() to the ack)"),
    (("--engine",), {}, "storage engine, or a comma list to compare, each on a fresh self-contained cluster"),
    (("--fsync",), {}, "fsync mode, or a comma list: always, interval, never"),
    (("--runs",), {"type": int}, "runs of every combination, interleaved (medians reported)"),
    (("--keep-topics",), {"action": "store_true", "default": None},
     "on a running cluster (-c/--bootstrap): keep the bench-... topic (and group) each run makes, which is "
     "otherwise deleted after the run with its records"),
    (("--json",), {}, "write the results as JSON to this file"),
    (("--chart",), {}, "write an HTML chart (inline SVG) of throughput and latency over time to this file"),
)
# the flags of the common set that mean something only through a cluster (dest -> flag)
CLUSTER_FLAGS = {"config": "-c", "bootstrap": "--bootstrap", "self_contained": "--self-contained",
                 "topic": "--topic", "partitions": "--partitions", "replication_factor": "--replication-factor",
                 "acks": "--acks", "producers": "--producers", "consumers": "--consumers",
                 "linger_ms": "--linger-ms", "compression": "--compression", "rate": "--rate"}


def _shown(key: str, defaults: dict) -> str:
    value = defaults.get(key)
    if value is None:
        return ""
    return f" (default {value:,})" if isinstance(value, int) and not isinstance(value, bool) else f" (default {value})"


def add_common_arguments(ap: argparse.ArgumentParser, defaults: dict, helps: dict[str, str] | None = None,
                         aliases: dict[str, tuple[str, ...]] | None = None) -> None:
    """Add the common flag set to ``ap``; ``defaults`` (the command's, keyed by dest) are shown
    in the help unless its text speaks of a default itself, ``helps`` replaces a flag's help
    text and ``aliases`` gives a flag older names (``{"--record-size": ("--value-bytes",)}``)."""
    helps, aliases = helps or {}, aliases or {}

    def add(group: Any, flags: tuple[str, ...], kw: dict, text: str) -> None:
        dest = kw.get("dest", flags[-1].lstrip("-").replace("-", "_"))
        text = helps.get(flags[-1], text)
        group.add_argument(*flags, *aliases.get(flags[-1], ()), **kw,
                           help=text if "default" in text else text + _shown(dest, defaults))
    size = ap.add_mutually_exclusive_group()
    records_default = defaults.get("records") or RECORDS_DEFAULT
    add(size, ("--records",), {"type": int},
        f"records per run (all producers together; default {records_default:,})")
    add(size, ("--duration",), {"type": float}, "seconds of producing per run instead of a record count")
    for flags, kw, text in _COMMON:
        add(ap, flags, kw, text)
    target = ap.add_mutually_exclusive_group()
    add(target, ("-c", "--cluster-config"), {"dest": "config"}, "a running cluster's config file")
    add(target, ("--bootstrap",), {}, "a running cluster: host:port,... (cluster CPU is then unknown)")
    add(target, ("--self-contained",), {"action": "store_true", "default": None},
        "start a cluster on free ports (the default)")
    progress = ap.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_const", const=True, help="force the progress bar")
    progress.add_argument("--no-progress", dest="progress", action="store_const", const=False)


def build_parser(command: str) -> argparse.ArgumentParser:
    """The parser of ``loom bench produce|consume|e2e``: the common set and the workload's own."""
    ap = UsageParser(prog=f"loom bench {command}", description=_DESCRIPTIONS[command],
                     epilog="workloads: " + "; ".join(f"{k}: {v[0]}" for k, v in WORKLOADS.items()))
    ap.add_argument("--workload", choices=sorted(WORKLOADS), help="an OpenMessaging-Benchmark-like preset (options given win)")
    add_common_arguments(ap, DEFAULTS, helps={"--consumers": "consumer processes, for consume and e2e"})
    a = ap.add_argument
    a("--api", help="send (per record, the default) or send_many (the batch calls, when the client has them: "
                    "producers send_many, consumers poll_batch), or both: send,send_many")
    a("--fsync-interval-ms", type=int, help="for fsync interval on a self-contained cluster (default 1000, the "
                                            "storage settings' own default; config/cluster.yaml sets 200)")
    a("--direct-write-min-bytes", help="storage.direct_write_min_bytes of the self-contained cluster (writes at least "
                                       "this large skip the page cache; -1 never), or a comma list to compare "
                                       "(default: the config's, 262144)")
    a("--max-in-flight", help="the producers' max_in_flight (PRODUCE requests per partition in flight at once, "
                              "1..5; default: the Producer's, 2), or a comma list to compare")
    a("--brokers", type=int, help="brokers of the self-contained cluster (default 3)")
    a("--backlog-bytes", type=int, help="consume: bytes to produce before draining (overrides --records)")
    a("--group", action="store_true", default=None,
      help="consumers join one consumer group (a new one per run) and commit after every poll")
    a("--peer", choices=PEERS, help="also run the peer's quick script and put its figure in the table")
    a("--peer-dir", help="where quick_jetstream.sh lives (default: $LOOM_PEERS_DIR or ../shared/bench/peers)")
    return ap


_DESCRIPTIONS = {
    "produce": "Produce throughput and produce-ack latency through the client library.",
    "consume": "Produce a backlog, then drain it: consume throughput (the produce phase is reported too).",
    "e2e": "Producers and consumers at once: throughput, produce-ack and end-to-end (send -> poll) latency.",
}


def parse(command: str, argv: list[str]) -> BenchOptions:
    """Parse and validate; raises ``SystemExit`` (argparse) on syntax and ``OptionError`` on
    values that do not go together."""
    if command not in COMMANDS:
        raise OptionError(f"unknown bench command {command!r}")
    return options_from(command, build_parser(command).parse_args(argv), DEFAULTS)


_FIELDS = {f.name for f in fields(BenchOptions)}


def options_from(command: str, ns: argparse.Namespace, defaults: dict) -> BenchOptions:
    """The validated options of ``command`` from a parsed namespace: what was given, else the
    preset's (``--workload``), else ``defaults``. Attributes of ``ns`` that are no option of the
    common set (a command's own flags) are left to the command. Raises ``OptionError``."""
    if command not in BENCHES:
        raise OptionError(f"unknown bench command {command!r}")
    given = {k: v for k, v in vars(ns).items() if v is not None}
    values = dict(defaults)
    workload = given.get("workload")
    if workload:
        values.update(WORKLOADS[workload][1])
        if "records" in given:
            values["duration"] = None  # a count on the command line replaces the preset's duration
        if command != "consume" and "backlog_bytes" not in given:
            values["backlog_bytes"] = None  # the backlog preset's size means nothing to produce/e2e
    values.update(given)
    values.update(apis=comma_list(values["api"]), engines=comma_list(values["engine"]), fsyncs=comma_list(values["fsync"]),
                  acks=str(values["acks"]), group=bool(values["group"]),
                  direct_write_min_bytes=int_list("--direct-write-min-bytes", values.get("direct_write_min_bytes")),
                  max_in_flight=int_list("--max-in-flight", values.get("max_in_flight")))
    o = BenchOptions(command=command, **{k: v for k, v in values.items() if k in _FIELDS and k != "command"})
    validate(o)
    return o


def int_list(flag: str, value: str | list[int] | None) -> list[int]:
    """``a,b`` of integers (or a list, or None: empty). Raises ``OptionError``."""
    if value is None or isinstance(value, list):
        return list(value or [])
    try:
        return [int(v) for v in comma_list(value)]
    except ValueError:
        raise OptionError(f"{flag}: integers, comma separated (not {value!r})") from None


def comma_list(value: str | list[str]) -> list[str]:
    """``a,b`` (or a list) as its non-empty items."""
    items = value if isinstance(value, list) else [v.strip() for v in str(value).split(",")]
    return [v for v in items if v]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise OptionError(message)


def validate(o: BenchOptions) -> None:
    """Raises ``OptionError`` naming the first bad option."""
    consumers_min = 0 if o.command == "failover" else 1  # failover's readers are optional
    _check(o.records is None or 1 <= o.records <= RECORDS_MAX, f"--records must be 1..{RECORDS_MAX:,}")
    _check(o.duration is None or 0 < o.duration <= DURATION_S_MAX, f"--duration must be > 0 and <= {DURATION_S_MAX:.0f} s")
    _check(RECORD_SIZE_BYTES_MIN <= o.record_size <= RECORD_SIZE_BYTES_MAX,
           f"--record-size must be {RECORD_SIZE_BYTES_MIN}..{RECORD_SIZE_BYTES_MAX} bytes")
    _check(1 <= o.partitions <= PARTITIONS_MAX, f"--partitions must be 1..{PARTITIONS_MAX}")
    _check(1 <= o.replication_factor <= o.brokers or not o.self_contained,
           f"--replication-factor must be 1..{o.brokers} (the brokers of the self-contained cluster)")
    _check(1 <= o.brokers <= 9, "--brokers must be 1..9")
    _check(1 <= o.producers <= WORKERS_MAX and consumers_min <= o.consumers <= WORKERS_MAX,
           f"--producers must be 1..{WORKERS_MAX} and --consumers {consumers_min}..{WORKERS_MAX}")
    _check(1 <= o.batch_size <= 100_000, "--batch-size must be 1..100000")
    _check(0 <= o.linger_ms <= 60_000, "--linger-ms must be 0..60000")
    _check(o.rate is None or 1 <= o.rate <= RATE_MAX, f"--rate must be 1..{RATE_MAX:,} records/s")
    _check(all(a in APIS for a in o.apis) and bool(o.apis), f"--api: one or more of {', '.join(APIS)}")
    _check(o.rate is None or o.apis == ["send"], "--rate paces single records: use --api send")
    _check(o.rate is None or o.rate >= o.producers,
           "--rate is split among the producers: it must be at least --producers (one record/s each)")
    _check(1 <= o.runs <= RUNS_MAX, f"--runs must be 1..{RUNS_MAX}")
    _check(o.fsync_interval_ms >= 1, "--fsync-interval-ms must be >= 1")
    _check(bool(o.engines) and bool(o.fsyncs), "--engine and --fsync need at least one value")
    bad = [f for f in o.fsyncs if f not in ("always", "interval", "never")]
    _check(not bad, f"--fsync: unknown mode {', '.join(bad)} (always, interval, never)")
    known = engine_registry.available()
    bad = [e for e in o.engines if e not in known]
    _check(not bad, f"--engine: unknown storage engine {', '.join(bad)} ({', '.join(known)})")
    _check(o.self_contained or (len(o.engines) == 1 and len(o.fsyncs) == 1),
           "--engine/--fsync lists need a self-contained cluster (the engine of a running cluster is its config's)")
    _check(all(d >= -1 for d in o.direct_write_min_bytes), "--direct-write-min-bytes must be -1 (never) or >= 0")
    _check(all(1 <= m <= MAX_IN_FLIGHT_MAX for m in o.max_in_flight), f"--max-in-flight must be 1..{MAX_IN_FLIGHT_MAX}")
    _check(o.self_contained or not o.direct_write_min_bytes,
           "--direct-write-min-bytes sets up a self-contained cluster (a running cluster's is its config's)")
    _check(o.backlog_bytes is None or 1 <= o.backlog_bytes <= BACKLOG_BYTES_MAX,
           f"--backlog-bytes must be 1..{BACKLOG_BYTES_MAX:,}")
    _check(o.backlog_bytes is None or o.command == "consume", "--backlog-bytes is for consume")
    _check(o.command != "consume" or o.rate is None, "consume drains a backlog: --rate is for produce and e2e")
    _check(not o.group or o.command != "produce", "--group is for consume and e2e")
    # the engine benchmark writes its page under any name (its --html did before --chart)
    _check(o.chart is None or o.command == "engines" or o.chart.endswith((".html", ".htm")),
           "--chart writes HTML: give a .html file name")
    if o.command in COMMANDS:  # a fresh cluster per combination and run
        _check(len(o.combinations()) <= COMBINATIONS_MAX,
               f"at most {COMBINATIONS_MAX} engine x fsync x api x direct-write combinations")
    if o.command in ("cluster", "failover"):  # one cluster for the whole invocation
        _check(len(o.engines) == 1 and len(o.fsyncs) == 1,
               f"loom bench {o.command} runs one engine and one fsync mode (one cluster for every run); to compare "
               f"engines end to end: loom bench produce --engine {','.join(o.engines)} --fsync {','.join(o.fsyncs)}")
    if o.command == "failover":
        _validate_failover(o)


def _validate_failover(o: BenchOptions) -> None:
    _check(o.self_contained, "loom bench failover SIGKILLs and restarts brokers it started itself: it cannot run "
                             "against a running cluster (-c/--bootstrap)")
    _check(o.replication_factor >= 2, f"--replication-factor {o.replication_factor} leaves no replica to fail over "
                                      "to: use 2 or 3")
    _check(o.acks != "0", "--acks 0 has no acknowledgement to time the failover by: use 1 or all")
    _check(o.replication_factor != 2 or o.acks != "all",
           "--replication-factor 2 with --acks all: with its leader killed a partition has one replica in sync, under "
           "min.insync.replicas 2, so no acks=all write succeeds until the victim returns; use "
           "--replication-factor 3 or --acks 1")
    _check(o.rate is not None and FAILOVER_RATE_MIN <= o.rate <= FAILOVER_RATE_MAX,
           f"--rate must be {FAILOVER_RATE_MIN}..{FAILOVER_RATE_MAX:,} records/s for failover")
