"""The ``loom`` CLI against a real cluster, run as a user runs it: a subprocess per command.

The tour of README.md is executed as written (its ``sh`` block, with ``LOOM_CONFIG`` pointing
at the test cluster), and so is its client-library snippet. Then the details the README only
mentions: base64 for non-UTF-8 bytes, --timeout-ms, --partition/--offset, headers, and the
one-line errors.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import ROOT, Cluster

pytestmark = pytest.mark.timeout(90)

README = ROOT / "README.md"
COMMAND_TIMEOUT_S = 30
# `loom consume --timeout-ms` in these tests: the idle time counts from the start, so it holds the
# first fetch, a group's join and the records' arrival -- with room for a loaded 2-core machine
IDLE_MS = "4000"


def readme_block(marker: str, lang: str) -> str:
    """The first ```lang block after ``marker`` in README.md."""
    text = README.read_text()
    start = text.index(marker)
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(text, start)
    assert m, f"no {lang} block after {marker!r} in README.md"
    return m.group(1)


@pytest.fixture
def loom_env(tmp_path: Path):  # noqa: ANN201
    """A PATH with a ``loom`` that runs this checkout's CLI, and LOOM_CONFIG unset."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "loom"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m nodes.cli "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOM_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(ROOT))
    return env


def sh(env: dict, command: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", "-c", command], input=stdin, capture_output=True, env=env,
                          cwd=str(ROOT), timeout=COMMAND_TIMEOUT_S)


def loom(env: dict, cluster: Cluster, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nodes.cli", *args, "--bootstrap", cluster.bootstrap],
                          input=stdin, capture_output=True, env=env, cwd=str(ROOT), timeout=COMMAND_TIMEOUT_S)


def ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr.decode()}"
    return p.stdout.decode("utf-8", "replace")


def test_readme_tour_runs_as_written(cluster_factory, loom_env) -> None:
    cluster = cluster_factory(3)
    env = dict(loom_env, LOOM_CONFIG=str(cluster.config_path))
    commands = [ln for ln in readme_block("<!-- tour:", "sh").splitlines() if ln.strip()]
    assert len(commands) >= 5
    outputs = {}
    for command in commands:
        words = command.split("|")[-1].split()
        outputs[" ".join(words[1:3]) if words[1] == "topic" else words[1]] = ok(sh(env, command))

    assert outputs["topic create"].strip() == "Created topic orders."
    acked = [json.loads(line) for line in outputs["produce"].splitlines()]
    assert [a["key"] for a in acked] == ["alice", "bob"]
    assert all(a["topic"] == "orders" and a["offset"] >= 0 and 0 <= a["partition"] < 3 for a in acked)

    consumed = [json.loads(line) for line in outputs["consume"].splitlines()]
    assert sorted((r["key"], r["value"]) for r in consumed) == [("alice", '{"item":"book"}'), ("bob", '{"item":"pen"}')]
    for r in consumed:
        assert set(r) == {"topic", "partition", "offset", "timestamp_ms", "key", "value", "headers"}
        assert (r["partition"], r["offset"]) in {(a["partition"], a["offset"]) for a in acked}

    summary, *parts = outputs["topic describe"].splitlines()
    assert summary == ("Topic: orders\tPartitionCount: 3\tReplicationFactor: 3\t"
                       "Configs: min.insync.replicas=2,retention.ms=604800000")
    assert len(parts) == 3
    for i, line in enumerate(parts):
        m = re.fullmatch(rf"\tTopic: orders\tPartition: {i}\tLeader: (\d)\tReplicas: ([\d,]+)\tIsr: ([\d,]+)", line)
        assert m, line
        assert m.group(1) in m.group(2).split(",") and sorted(m.group(2)) == sorted(m.group(3)) == sorted("1,2,3")

    status = outputs["status"]
    for name in cluster.node_names:
        assert re.search(rf"^{name}\s.*\bup\b", status, re.M), status
    assert "under-replicated: 0, offline: 0" in status


def test_readme_client_snippet_runs(cluster_factory) -> None:
    cluster = cluster_factory(3)
    snippet = readme_block("## The client library", "python").replace("127.0.0.1:19004", cluster.bootstrap)
    p = subprocess.run([sys.executable, "-c", snippet], capture_output=True, cwd=str(ROOT), timeout=COMMAND_TIMEOUT_S,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.returncode == 0, p.stderr.decode()
    assert "clicks" in p.stdout.decode() and "user-7" in p.stdout.decode()


def test_cli_details_and_errors(cluster_factory, loom_env) -> None:
    cluster = cluster_factory(3)
    env = loom_env
    assert ok(loom(env, cluster, "topic", "create", "--topic", "raw", "--partitions", "2")).strip() == "Created topic raw."
    assert ok(loom(env, cluster, "topic", "list")).split() == ["raw"]

    # Bytes that are not UTF-8 come back as base64, flagged; headers travel; partition/offset pin the read.
    ok(loom(env, cluster, "produce", "raw", "--partition", "1", "--header", "source=test", stdin=b"\xff\xfe\x00bin\ntext\n"))
    out = ok(loom(env, cluster, "consume", "raw", "--partition", "1", "--offset", "0", "--max-messages", "2", "--format", "json"))
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["value_encoding"] == "base64" and first["value"] == "//4AYmlu" and first["key"] is None
    assert first["headers"] == [{"name": "source", "value": "test"}]
    assert (first["partition"], first["offset"], second["offset"], second["value"]) == (1, 0, 1, "text")
    assert "value_encoding" not in second
    out = ok(loom(env, cluster, "consume", "raw", "--partition", "1", "--offset", "1", "--max-messages", "1"))
    assert out == "text\n"
    # An offset past the log end is said (the read goes on from the end, as auto_offset_reset says).
    p = loom(env, cluster, "consume", "raw", "--partition", "1", "--offset", "99", "--timeout-ms", IDLE_MS)
    assert p.returncode == 0 and p.stdout == b""
    assert "raw-1: position 99 is out of the log's range; starting again at the latest offset" in p.stderr.decode()

    # --timeout-ms: every record, then exit once nothing arrived for that long.
    t0 = time.monotonic()
    p = loom(env, cluster, "consume", "raw", "--from-beginning", "--timeout-ms", IDLE_MS, "--print-key", "--key-separator", "=")
    assert p.returncode == 0 and p.stdout == b"null=\xff\xfe\x00bin\nnull=text\n"  # text format: raw bytes
    assert "Processed a total of 2 messages" in p.stderr.decode()
    assert time.monotonic() - t0 < 15

    # --max-messages stops early even when more records are there.
    ok(loom(env, cluster, "produce", "raw", "--acks", "1", stdin=b"".join(b"m%d\n" % i for i in range(20))))
    assert len(ok(loom(env, cluster, "consume", "raw", "--from-beginning", "--max-messages", "5")).splitlines()) == 5

    # --group (when this build has consumer groups): a second run starts at the committed offset.
    if importlib.util.find_spec("fabric.client.group") is not None:
        first_run = loom(env, cluster, "consume", "raw", "--group", "g1", "--from-beginning", "--max-messages", "3")
        assert len(first_run.stdout.splitlines()) == 3, first_run.stderr
        rest = loom(env, cluster, "consume", "raw", "--group", "g1", "--from-beginning", "--timeout-ms", IDLE_MS)
        assert len(rest.stdout.splitlines()) == 22 - 3, rest.stderr

    # Alter; the under-replicated filter (none here).
    assert ok(loom(env, cluster, "topic", "alter", "raw", "--partitions", "3")) == "Altered topic raw: 3 partitions.\n"
    assert ok(loom(env, cluster, "topic", "alter", "raw", "--config", "retention.ms=86400000")) == \
        "Altered topic raw: configs set: retention.ms.\n"  # not the partition count, which did not change
    assert ok(loom(env, cluster, "topic", "describe", "raw", "--under-replicated-partitions")) == ""

    errors = {
        ("topic", "create", "bad/name"): "invalid topic name",
        ("topic", "create", "wide", "--replication-factor", "4"): "replication factor 4 is larger than the 3 live brokers",
        ("topic", "describe", "missing"): "no topic 'missing'",
        ("consume", "missing", "--max-messages", "1"): "no topic 'missing'",
        ("produce", "missing"): "no topic 'missing'",
        ("topic", "create", "raw"): "topic 'raw' already exists",
        ("produce", "raw", "--key-separator", ""): "--key-separator",  # was ignored: every line a keyless record
    }
    if importlib.util.find_spec("fabric.client.group") is None:
        errors[("consume", "raw", "--group", "g", "--max-messages", "1")] = "consumer groups are not available in this build"
    for args, message in errors.items():
        p = loom(env, cluster, *args, stdin=b"x\n")
        lines = p.stderr.decode().strip().splitlines()
        assert p.returncode != 0 and len(lines) == 1 and lines[0].startswith("loom: error: "), (args, p.stderr)
        if message:
            assert message in lines[0], (args, lines[0])

    assert ok(loom(env, cluster, "topic", "delete", "raw")).strip() == "Deleted topic raw."
    assert ok(loom(env, cluster, "topic", "list")) == ""


def _sigint_default() -> None:
    """In the child before exec: Ctrl-C as in a terminal (a test run in the background of a
    shell has SIGINT ignored, which the child would inherit and the command keep)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["sigterm", "sigint"])
def test_consume_with_a_group_stopped_by_a_signal_commits_what_it_printed(cluster_factory, loom_env, sig: int,
                                                                          status: int) -> None:
    """SIGTERM (a service manager, `kill PID`) ends `loom consume --group` as Ctrl-C does: what
    it printed is committed and the member leaves, so the next run starts after it (it died at
    once, nothing committed, its member held its partitions until the session expired)."""
    cluster = cluster_factory(1)
    env = loom_env
    ok(loom(env, cluster, "topic", "create", "--topic", "term", "--partitions", "1", "--replication-factor", "1"))
    ok(loom(env, cluster, "produce", "term", "--acks", "1", stdin=b"".join(b"r%d\n" % i for i in range(5))))
    proc = subprocess.Popen([sys.executable, "-m", "nodes.cli", "consume", "term", "--group", "gterm",
                             "--from-beginning", "--bootstrap", cluster.bootstrap],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(ROOT),
                            preexec_fn=_sigint_default)
    try:
        lines = [proc.stdout.readline() for _ in range(5)]  # blocks until printed (the command's timeout bounds the test)
        assert lines == [b"r%d\n" % i for i in range(5)]
        proc.send_signal(sig)
        assert proc.wait(timeout=COMMAND_TIMEOUT_S) == status, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Processed a total of 5 messages" in proc.stderr.read().decode()
    # left, not waiting for its session to expire (10 s)
    assert "has no active members" in ok(loom(env, cluster, "group", "describe", "gterm"))
    ok(loom(env, cluster, "produce", "term", "--acks", "1", stdin=b"r5\n"))
    rest = loom(env, cluster, "consume", "term", "--group", "gterm", "--from-beginning", "--max-messages", "1")
    assert ok(rest) == "r5\n"


def test_a_config_naming_another_cluster_is_refused_not_served_by_the_one_on_its_ports(cluster_factory, loom_env,
                                                                                        tmp_path: Path) -> None:
    """The shipped configs share the default ports: `-c config/lmdb.yaml` against the running
    default cluster listed, made and wrote topics of that cluster without a word. A command
    that finds its cluster through a config checks the cluster's name."""
    import yaml
    cluster = cluster_factory(1, extra_nodes=("monitor",))
    other = yaml.safe_load(Path(cluster.config_path).read_text())
    other["cluster"]["name"] = "other"
    other_path = tmp_path / "other.yaml"
    other_path.write_text(yaml.safe_dump(other))
    env = loom_env
    run = lambda *a: subprocess.run([sys.executable, "-m", "nodes.cli", *a], capture_output=True, env=env,  # noqa: E731
                                    cwd=str(ROOT), timeout=COMMAND_TIMEOUT_S)
    # `loom alerts` asks the monitor alone: it listed another cluster's alerts and events as its own
    for args in (("topic", "list"), ("topic", "create", "--topic", "stray"), ("status",), ("alerts",),
                 ("alerts", "--events")):
        p = run(*args, "-c", str(other_path))
        assert p.returncode == 1, (args, p.stdout, p.stderr)
        assert "serves cluster 'test', not 'other'" in p.stderr.decode(), (args, p.stderr)
    assert ok(run("topic", "list", "-c", str(cluster.config_path))).split() == []  # nothing was made
    assert ok(run("topic", "list", "--bootstrap", cluster.bootstrap)).split() == []  # endpoints alone: no name to check


def test_status_with_bootstrap_alone_shows_the_endpoints_cluster_not_the_default_configs(cluster_factory, loom_env,
                                                                                          tmp_path: Path) -> None:
    """Run where a config/cluster.yaml names another cluster on the same ports (the repository's
    default beside a cluster started from another file), `loom status --bootstrap` asked the
    default file's monitor and refused the endpoints' cluster for not being the file's: the
    endpoints name no cluster, as for every other command."""
    import yaml
    cluster = cluster_factory(1, extra_nodes=("monitor",))
    other = yaml.safe_load(Path(cluster.config_path).read_text())
    other["cluster"]["name"] = "other"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "cluster.yaml").write_text(yaml.safe_dump(other))
    p = subprocess.run([sys.executable, "-m", "nodes.cli", "status", "--bootstrap", cluster.bootstrap],
                       capture_output=True, env=loom_env, cwd=str(tmp_path), timeout=COMMAND_TIMEOUT_S)
    out = ok(p)
    assert re.search(r"^broker-1\s.*\bup\b", out, re.M), out
    assert "partitions: 0" in out, out


def test_produce_takes_records_up_to_the_configs_message_limit(cluster_factory, loom_env) -> None:
    """`loom produce -c CONFIG` sends records up to the config's ``limits.message_bytes_max``, as
    the gateway's producer service takes them: with the limit raised, a record over the client's
    1 MiB default was refused by the command and taken by REST. With --bootstrap alone no config
    is read: the client's default stands, and its error names it."""
    limit = 2 * 1024 * 1024
    cluster = cluster_factory(1, overrides={"limits": {"message_bytes_max": limit}})
    env = loom_env
    run = lambda *a, stdin=None: subprocess.run([sys.executable, "-m", "nodes.cli", *a], input=stdin,  # noqa: E731
                                                capture_output=True, env=env, cwd=str(ROOT), timeout=COMMAND_TIMEOUT_S)
    cfg = str(cluster.config_path)
    ok(run("topic", "create", "--topic", "big", "--partitions", "1", "-c", cfg))
    big = b"v" * (1536 * 1024)
    out = ok(run("produce", "big", "--print-offsets", "-c", cfg, stdin=big + b"\n"))
    assert [json.loads(line)["offset"] for line in out.splitlines()] == [0]
    over = run("produce", "big", "-c", cfg, stdin=b"w" * (limit + 1) + b"\n")
    assert over.returncode != 0 and "limits.message_bytes_max of the cluster config" in over.stderr.decode(), over.stderr
    alone = run("produce", "big", "--bootstrap", cluster.bootstrap, stdin=big + b"\n")
    assert alone.returncode != 0 and "over 1048576 (the producer's record_bytes_max)" in alone.stderr.decode(), alone.stderr
    got = ok(run("consume", "big", "--from-beginning", "--max-messages", "1", "--timeout-ms", IDLE_MS, "-c", cfg))
    assert got == (big + b"\n").decode()
