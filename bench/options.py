"""Options of ``loom bench produce|consume|e2e``: the parser, the workload presets (after the
OpenMessaging Benchmark's), validation, and the engine x fsync combinations to run.

    loom bench produce [--workload NAME] [--records N | --duration S] [--record-size B]
                       [--topic T] [--partitions P] [--replication-factor R] [--acks all]
                       [--producers N] [--consumers N] [--batch-size N] [--linger-ms MS]
                       [--compression none] [--rate N] [--api send|send_many]
                       [--engine segment,lmdb] [--fsync interval,always] [--runs 3]
                       [-c CONFIG | --bootstrap HOST:PORT,... | --self-contained]
                       [--json FILE] [--chart FILE.html] [--peer jetstream]

An option given on the command line wins over the workload preset, which wins over the
defaults. Pure functions; thread-safe.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import NoReturn

COMMANDS = ("produce", "consume", "e2e")
RECORDS_MAX = 1_000_000_000        # --records, and the count bound of a --duration run
DURATION_S_MAX = 3600.0            # --duration, and the time bound of a --records run
RECORD_SIZE_BYTES_MIN = 16         # room for the e2e timestamp (fabric/records adds the rest)
RECORD_SIZE_BYTES_MAX = 1024 * 1024 - 64
PARTITIONS_MAX = 10_000
WORKERS_MAX = 32                   # --producers / --consumers (each a process)
RATE_MAX = 10_000_000              # --rate, records/s offered in total
RUNS_MAX = 20
COMBINATIONS_MAX = 12              # engines x fsync modes in one invocation
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
            "replication_factor": 3, "acks": "all", "producers": 1, "consumers": 1, "batch_size": 1000,
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

    @property
    def label(self) -> str:
        return f"{self.engine}/{self.fsync}/{self.api}"

    def as_dict(self) -> dict:
        return {"engine": self.engine, "fsync": self.fsync, "api": self.api}


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
    batch_size: int = 1000
    linger_ms: int = 5
    compression: str = "none"
    rate: int | None = None
    apis: list[str] = field(default_factory=lambda: ["send"])
    engines: list[str] = field(default_factory=lambda: ["segment"])
    fsyncs: list[str] = field(default_factory=lambda: ["interval"])
    fsync_interval_ms: int = 1000
    runs: int = 1
    brokers: int = 3
    backlog_bytes: int | None = None
    group: bool = False
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
        """Each engine with each fsync mode and each API, in the order given (the first is the
        baseline of the ratios). The memory engine has no fsync: it runs once per API, with the
        first mode."""
        combos: list[Combination] = []
        for engine in self.engines:
            for fsync in (self.fsyncs[:1] if engine == "memory" else self.fsyncs):
                for api in self.apis:
                    if Combination(engine, fsync, api) not in combos:
                        combos.append(Combination(engine, fsync, api))
        return combos

    def record_target(self) -> int | None:
        """Records each run sends in total (None: run for ``duration``)."""
        if self.backlog_bytes is not None:
            return max(1, self.backlog_bytes // self.record_size)
        if self.duration is not None and self.records is None:
            return None
        return self.records if self.records is not None else RECORDS_DEFAULT


def build_parser(command: str) -> argparse.ArgumentParser:
    ap = UsageParser(prog=f"loom bench {command}", description=_DESCRIPTIONS[command],
                                 epilog="workloads: " + "; ".join(f"{k}: {v[0]}" for k, v in WORKLOADS.items()))
    # every default is None: a preset fills what the command line left out
    a = ap.add_argument
    a("--workload", choices=sorted(WORKLOADS), help="an OpenMessaging-Benchmark-like preset (options given win)")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--records", type=int, help=f"records per run (all producers together; default {RECORDS_DEFAULT:,})")
    size.add_argument("--duration", type=float, help="seconds of producing per run instead of a record count")
    a("--record-size", type=int, help="bytes per record value (default 100)")
    a("--topic", help="topic name (default: a fresh bench-… topic per run)")
    a("--partitions", type=int, help="partitions of the topic (default 3)")
    a("--replication-factor", type=int, help="default 3")
    a("--acks", choices=ACKS, help="default all")
    a("--producers", type=int, help="producer processes (default 1)")
    a("--consumers", type=int, help="consumer processes, for consume and e2e (default 1)")
    a("--batch-size", type=int, help="records per batch at most (the producer's batch_records_max; default 1000)")
    a("--linger-ms", type=int, help="default 5")
    a("--compression", choices=("none", "zstd", "lz4"), help="default none")
    a("--rate", type=int, help="fixed offered rate, records/s over all producers (open loop; latency from send() to the ack)")
    a("--api", help="send (per record, the default) or send_many (the batch calls, when the client has them: "
                    "producers send_many, consumers poll_batch), or both: send,send_many")
    a("--engine", help="storage engine, or a comma list to compare (self-contained only; default segment)")
    a("--fsync", help="fsync mode, or a comma list: always, interval, never (default interval)")
    a("--fsync-interval-ms", type=int, help="for fsync interval (default 1000, the config default)")
    a("--runs", type=int, help="runs of every combination, interleaved (medians reported; default 1)")
    a("--brokers", type=int, help="brokers of the self-contained cluster (default 3)")
    a("--backlog-bytes", type=int, help="consume: bytes to produce before draining (overrides --records)")
    a("--group", action="store_true", default=None,
      help="consumers join one consumer group (a new one per run) and commit after every poll")
    target = ap.add_mutually_exclusive_group()
    target.add_argument("-c", "--cluster-config", dest="config", help="a running cluster's config file")
    target.add_argument("--bootstrap", help="a running cluster: host:port,… (cluster CPU is then unknown)")
    target.add_argument("--self-contained", action="store_true", help="start a cluster on free ports (the default)")
    a("--json", help="write the results as JSON to this file")
    a("--chart", help="write an HTML chart (inline SVG) of throughput and latency over time to this file")
    a("--peer", choices=PEERS, help="also run the peer's quick script and put its figure in the table")
    a("--peer-dir", help="where quick_jetstream.sh lives (default: $LOOM_PEERS_DIR or ../shared/bench/peers)")
    progress = ap.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_const", const=True, help="force the progress bar")
    progress.add_argument("--no-progress", dest="progress", action="store_const", const=False)
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
    ns = build_parser(command).parse_args(argv)
    given = {k: v for k, v in vars(ns).items() if v is not None}
    values = dict(DEFAULTS)
    if ns.workload:
        values.update(WORKLOADS[ns.workload][1])
        if "records" in given:
            values["duration"] = None  # a count on the command line replaces the preset's duration
        if command != "consume" and "backlog_bytes" not in given:
            values["backlog_bytes"] = None  # the backlog preset's size means nothing to produce/e2e
    values.update(given)
    o = BenchOptions(
        command=command, workload=ns.workload, records=values["records"], duration=values["duration"],
        record_size=values["record_size"], topic=values["topic"], partitions=values["partitions"],
        replication_factor=values["replication_factor"], acks=str(values["acks"]), producers=values["producers"],
        consumers=values["consumers"], batch_size=values["batch_size"], linger_ms=values["linger_ms"],
        compression=values["compression"], rate=values["rate"], apis=_list(values["api"]),
        engines=_list(values["engine"]), fsyncs=_list(values["fsync"]), fsync_interval_ms=values["fsync_interval_ms"],
        runs=values["runs"], brokers=values["brokers"], backlog_bytes=values["backlog_bytes"], group=bool(values["group"]),
        config=ns.config, bootstrap=ns.bootstrap, json=ns.json, chart=ns.chart, peer=ns.peer,
        peer_dir=ns.peer_dir, progress=ns.progress)
    validate(o)
    return o


def _list(value: str | list[str]) -> list[str]:
    items = value if isinstance(value, list) else [v.strip() for v in str(value).split(",")]
    return [v for v in items if v]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise OptionError(message)


def validate(o: BenchOptions) -> None:
    """Raises ``OptionError`` naming the first bad option."""
    _check(o.records is None or 1 <= o.records <= RECORDS_MAX, f"--records must be 1..{RECORDS_MAX:,}")
    _check(o.duration is None or 0 < o.duration <= DURATION_S_MAX, f"--duration must be > 0 and <= {DURATION_S_MAX:.0f} s")
    _check(RECORD_SIZE_BYTES_MIN <= o.record_size <= RECORD_SIZE_BYTES_MAX,
           f"--record-size must be {RECORD_SIZE_BYTES_MIN}..{RECORD_SIZE_BYTES_MAX} bytes")
    _check(1 <= o.partitions <= PARTITIONS_MAX, f"--partitions must be 1..{PARTITIONS_MAX}")
    _check(1 <= o.replication_factor <= o.brokers or not o.self_contained,
           f"--replication-factor must be 1..{o.brokers} (the brokers of the self-contained cluster)")
    _check(1 <= o.brokers <= 9, "--brokers must be 1..9")
    _check(1 <= o.producers <= WORKERS_MAX and 1 <= o.consumers <= WORKERS_MAX,
           f"--producers and --consumers must be 1..{WORKERS_MAX}")
    _check(1 <= o.batch_size <= 100_000, "--batch-size must be 1..100000")
    _check(0 <= o.linger_ms <= 60_000, "--linger-ms must be 0..60000")
    _check(o.rate is None or 1 <= o.rate <= RATE_MAX, f"--rate must be 1..{RATE_MAX:,} records/s")
    _check(all(a in APIS for a in o.apis) and bool(o.apis), f"--api: one or more of {', '.join(APIS)}")
    _check(o.rate is None or o.apis == ["send"], "--rate paces single records: use --api send")
    _check(1 <= o.runs <= RUNS_MAX, f"--runs must be 1..{RUNS_MAX}")
    _check(o.fsync_interval_ms >= 1, "--fsync-interval-ms must be >= 1")
    _check(bool(o.engines) and bool(o.fsyncs), "--engine and --fsync need at least one value")
    bad = [f for f in o.fsyncs if f not in ("always", "interval", "never")]
    _check(not bad, f"--fsync: unknown mode {', '.join(bad)} (always, interval, never)")
    _check(o.self_contained or (len(o.engines) == 1 and len(o.fsyncs) == 1),
           "--engine/--fsync lists need a self-contained cluster (the engine of a running cluster is its config's)")
    _check(len(o.combinations()) <= COMBINATIONS_MAX, f"at most {COMBINATIONS_MAX} engine x fsync combinations")
    _check(o.backlog_bytes is None or 1 <= o.backlog_bytes <= BACKLOG_BYTES_MAX,
           f"--backlog-bytes must be 1..{BACKLOG_BYTES_MAX:,}")
    _check(o.backlog_bytes is None or o.command == "consume", "--backlog-bytes is for consume")
    _check(o.command != "consume" or o.rate is None, "consume drains a backlog: --rate is for produce and e2e")
    _check(not o.group or o.command != "produce", "--group is for consume and e2e")
    _check(o.chart is None or o.chart.endswith((".html", ".htm")), "--chart writes HTML: give a .html file name")
