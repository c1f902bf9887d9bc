"""`loom bench produce|consume|e2e` options: presets, lists of engines and fsync modes, the
combinations they make, and clear errors for values that do not go together."""

from __future__ import annotations

import pytest

from bench.options import WORKLOADS, Combination, OptionError, parse


def test_defaults_are_a_self_contained_rf3_acks_all_run() -> None:
    o = parse("produce", [])
    assert o.self_contained
    assert (o.partitions, o.replication_factor, o.acks, o.record_size, o.producers) == (3, 3, "all", 100, 1)
    assert o.combinations() == [Combination("segment", "interval", "send")]
    assert o.record_target() == 300_000


def test_every_documented_option_parses() -> None:
    o = parse("e2e", ["--records", "5000", "--record-size", "1024", "--topic", "t", "--partitions", "16",
                      "--replication-factor", "1", "--acks", "1", "--producers", "2", "--consumers", "3",
                      "--batch-size", "500", "--linger-ms", "0", "--compression", "zstd", "--rate", "2000",
                      "--engine", "lmdb", "--fsync", "always", "--runs", "3", "--json", "x.json",
                      "--chart", "x.html", "--peer", "jetstream"])
    assert (o.records, o.record_size, o.topic, o.partitions, o.replication_factor, o.acks) == (5000, 1024, "t", 16, 1, "1")
    assert (o.producers, o.consumers, o.batch_size, o.linger_ms, o.compression, o.rate) == (2, 3, 500, 0, "zstd", 2000)
    assert (o.engines, o.fsyncs, o.runs, o.json, o.chart, o.peer) == (["lmdb"], ["always"], 3, "x.json", "x.html", "jetstream")


def test_engine_and_fsync_lists_make_combinations_in_order_memory_once() -> None:
    o = parse("produce", ["--engine", "segment,lmdb,memory", "--fsync", "always,interval"])
    assert [c.label for c in o.combinations()] == [
        "segment/always/send", "segment/interval/send", "lmdb/always/send", "lmdb/interval/send", "memory/always/send"]


def test_api_list_doubles_the_combinations() -> None:
    o = parse("produce", ["--api", "send,send_many", "--engine", "segment"])
    assert [c.api for c in o.combinations()] == ["send", "send_many"]


def test_duration_replaces_the_record_count() -> None:
    o = parse("produce", ["--duration", "10"])
    assert o.record_target() is None and o.duration == 10


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_every_workload_preset_parses(name: str) -> None:
    command = "consume" if name == "backlog" else "e2e"
    o = parse(command, ["--workload", name])
    for key, value in WORKLOADS[name][1].items():
        assert getattr(o, key) == value, key


def test_command_line_wins_over_the_preset() -> None:
    o = parse("e2e", ["--workload", "1x100-1k-4p4c", "--producers", "2", "--records", "1000"])
    assert (o.partitions, o.producers, o.consumers, o.record_target()) == (100, 2, 4, 1000)
    latency = parse("produce", ["--workload", "latency", "--records", "500"])
    assert latency.duration is None and latency.record_target() == 500 and latency.rate == 2000


def test_backlog_preset_sets_the_consume_size_in_bytes() -> None:
    o = parse("consume", ["--workload", "backlog", "--backlog-bytes", str(10 * 1024 * 1024)])
    assert o.record_target() == 10 * 1024 * 1024 // 1024
    assert parse("produce", ["--workload", "backlog"]).backlog_bytes is None


@pytest.mark.parametrize("argv, says", [
    (["--records", "0"], "--records"),
    (["--record-size", "4"], "--record-size"),
    (["--partitions", "0"], "--partitions"),
    (["--replication-factor", "4"], "--replication-factor"),
    (["--producers", "0"], "--producers"),
    (["--rate", "0"], "--rate"),
    (["--fsync", "sometimes"], "--fsync"),
    (["--engine", "segment,bogus"], "--engine: unknown storage engine bogus"),  # not a cluster that fails to start
    (["--api", "post"], "--api"),
    (["--rate", "100", "--api", "send_many"], "--rate"),
    (["--engine", "segment,lmdb", "--bootstrap", "127.0.0.1:1"], "self-contained"),
    (["--backlog-bytes", "100"], "--backlog-bytes"),
    (["--chart", "x.png"], "--chart"),
    (["--runs", "21"], "--runs"),
])
def test_bad_values_are_option_errors(argv: list[str], says: str) -> None:
    with pytest.raises(OptionError, match=says.replace("-", r"\-")):
        parse("produce", argv)


def test_records_and_duration_are_exclusive_and_so_are_cluster_targets() -> None:
    with pytest.raises(SystemExit):
        parse("produce", ["--records", "10", "--duration", "1"])
    with pytest.raises(SystemExit):
        parse("produce", ["-c", "x.yaml", "--bootstrap", "127.0.0.1:1"])


def test_usage_and_operating_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import runner
    assert runner.main(["produce", "--partitions", "0"]) == 2
    assert runner.main(["produce", "--records", "10", "--bootstrap", "127.0.0.1:1"]) == 1  # nothing listens there
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("loom: error: ") for line in lines), lines
    assert lines[0].endswith("(see 'loom bench produce --help')"), lines


def test_a_direct_write_threshold_list_makes_combinations_that_reach_the_cluster_config() -> None:
    from bench.runner import cluster_overrides
    o = parse("produce", ["--engine", "segment,memory", "--direct-write-min-bytes=-1,262144"])
    combos = o.combinations()
    assert [c.label for c in combos] == [
        "segment/interval/send/direct=-1", "segment/interval/send/direct=262144", "memory/interval/send/direct=-1"]
    assert combos[0].as_dict() == {"engine": "segment", "fsync": "interval", "api": "send", "direct_write_min_bytes": -1}
    assert cluster_overrides(o, combos[1])["storage"]["direct_write_min_bytes"] == 262144
    plain = parse("produce", [])
    assert "direct_write_min_bytes" not in cluster_overrides(plain, plain.combinations()[0])["storage"]
    assert "direct_write_min_bytes" not in plain.combinations()[0].as_dict()


@pytest.mark.parametrize("argv, message", [
    (["--direct-write-min-bytes=-2"], "must be -1"),
    (["--direct-write-min-bytes", "big"], "integers"),
    (["--direct-write-min-bytes", "0", "--bootstrap", "127.0.0.1:9092"], "self-contained"),
])
def test_bad_direct_write_thresholds_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        parse("produce", argv)
