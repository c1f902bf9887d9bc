"""A full disk under a running cluster: produces fail with a clear storage error, every node keeps
running, and once space is freed the cluster takes writes again with nothing acknowledged lost.

The cluster's data directory is a small file system of its own, filled with a ballast file to a
few MiB short of full while a producer writes: a tmpfs (the segment engine writes through the
page cache) and an ext4 image on a loop device with every write direct
(``storage.direct_write_min_bytes: 0``, the O_DIRECT path). Mounting needs root, ``mount`` and
(for ext4) ``mkfs.ext4``; without them the test is skipped and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from fabric import protocol as P
from fabric.client import Admin, Consumer, Producer
from fabric.errors import RemoteError
from nodes.local_cluster import Cluster, make_config
from tests.harness import wait_until

pytestmark = pytest.mark.faults
MIB = 1 << 20
FS_BYTES = 96 * MIB
LEFT_FREE = 8 * MIB          # what the ballast leaves: a few thousand 1 KiB records on three replicas
RECORDS_MAX = 40_000         # the filling phase's bound (1 KiB each: 40 MiB, more than is free)
AFTER = 1000                 # records sent once space is back


def _mount(kind: str, where: Path, scratch: Path) -> None:
    needed = ["mount", "umount"] + (["mkfs.ext4"] if kind != "tmpfs" else [])
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"no {', '.join(missing)} on this PATH")
    where.mkdir(parents=True)
    if kind == "tmpfs":
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(where)]
    else:
        image = scratch / "disk.img"
        with open(image, "wb") as f:
            f.truncate(FS_BYTES + 32 * MIB)  # ext4's own metadata takes a share
        made = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"mkfs.ext4 failed: {made.stderr.strip()}")
        cmd = ["mount", "-o", "loop", str(image), str(where)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a {kind} here (needs root): {done.stderr.strip()}")


@pytest.fixture(params=["tmpfs", "ext4-direct"])
def small_disk_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    data = tmp_path / "data"
    _mount(request.param, data, tmp_path)
    overrides = {"storage": {"segment_bytes_max": 4 * MIB}}
    if request.param == "ext4-direct":
        overrides["storage"]["direct_write_min_bytes"] = 0
    c = Cluster(make_config(tmp_path, 3, fsync="interval", overrides=overrides))
    try:
        c.start()
        yield c
    finally:
        c.stop_all()
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def test_a_full_disk_fails_produces_clearly_and_loses_nothing_acknowledged(small_disk_cluster: Cluster) -> None:
    c = small_disk_cluster
    data = Path(c.config_path).parent / "data"
    with Admin(c.bootstrap) as admin:
        admin.create_topic("t", partitions=1, replication_factor=3)
        c.wait_topic_ready(admin, "t")
    ballast = data / "ballast"
    with open(ballast, "wb") as f:
        f.write(b"\0" * (shutil.disk_usage(data).free - LEFT_FREE))

    acked: list[int] = []
    errors: Counter[tuple[int, str]] = Counter()

    def delivered(i: int, _md: object, err: Exception | None) -> None:
        if err is None:
            acked.append(i)
        else:
            errors[(getattr(err, "code", -1), str(err))] += 1

    with Producer(c.bootstrap, acks=-1, linger_ms=2, request_timeout_ms=5000, delivery_timeout_ms=15_000) as p:
        deadline = time.monotonic() + 60
        for i in range(RECORDS_MAX):
            p.send("t", b"%08d" % i + b"x" * 1016, on_delivery=lambda md, err, i=i: delivered(i, md, err))
            if i % 1000 == 999:
                p.flush(30)
                if errors or time.monotonic() > deadline:
                    break
        p.flush(30)
    assert errors, f"{len(acked)} records acknowledged and no error: the disk never filled"
    codes = {code for code, _ in errors}
    # who finds the disk full first is a race: the leader (its append fails: storage_error,
    # naming the cause), or a follower (its fetch's append fails, it falls out of the ISR, and
    # the leader refuses writes below min.insync.replicas before it appends again)
    # (batches still queued when the others failed may expire with no answer: request_timed_out)
    telling = {P.STORAGE_ERROR, P.NOT_ENOUGH_REPLICAS, P.NOT_ENOUGH_REPLICAS_AFTER_APPEND}
    assert codes & telling and codes <= telling | {P.REQUEST_TIMED_OUT}, errors
    if P.STORAGE_ERROR in codes:
        assert any("No space left on device" in text for _, text in errors), errors  # says what is wrong
    for name in c.node_names:  # every node keeps running, and answers
        assert c.procs[name].poll() is None, f"{name} exited with {c.procs[name].returncode}"
        c.ping(name, timeout_ms=3000)

    os.unlink(ballast)
    after: list[int] = []
    failed_after: list[str] = []

    def sent_after(i: int, _md: object, err: Exception | None) -> None:
        (after.append(i) if err is None else failed_after.append(f"{i}: {err}"))

    def writes_again() -> bool:  # a full ISR may take a moment to come back: retry each record
        with Producer(c.bootstrap, acks=-1, linger_ms=2, delivery_timeout_ms=20_000) as p:
            for i in range(100_000, 100_000 + AFTER):
                if i not in after:
                    p.send("t", b"%08d" % i, on_delivery=lambda md, err, i=i: sent_after(i, md, err))
            p.flush(30)
        return len(set(after)) == AFTER
    wait_until(writes_again, timeout_s=90, interval_s=1.0, what=f"writes accepted again ({failed_after[-3:]})")

    expected = set(acked) | set(after)
    seen: Counter[int] = Counter()
    with Consumer(c.bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([("t", 0)])

        def read_all() -> bool:
            for r in consumer.poll(timeout_ms=200, max_records=50_000):
                seen[int(r.value[:8])] += 1
            return expected <= set(seen)
        wait_until(read_all, timeout_s=60, interval_s=0.0, what="every acknowledged record read back")
    assert not [i for i in acked if seen[i] != 1], "an acknowledged record appears more than once"
