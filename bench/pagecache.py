"""``loom bench pagecache``: what this machine's kernel charges a log for writing through the
page cache -- the system CPU per MB of appends, with an interval fsync, when the written pages
stay cached (the kernel's default) and when each fsync is followed by dropping them
(``posix_fadvise(POSIX_FADV_DONTNEED)``, what the segment engine does with durable bytes
outside its window: engines/segment_cache.py).

Each run appends ``--files`` new files of ``--mb`` MiB, in 128 KiB writes, with an fdatasync
every ``--sync-mb`` MiB; "keep" and "drop" alternate, ``--runs`` times. On a machine whose idle
memory the host takes back, the first-touch cost of new pages shows in "keep" once the page
cache grows past the memory recently in use (see bench/RESULTS.md, "The page cache").

    python -m bench.pagecache --files 4 --mb 1024 --runs 2 --dir /path/on/the/data/disk

Every file is deleted at the end of its run. Not thread-safe.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import tempfile
import time

from bench.options import UsageParser

WRITE_BYTES = 128 * 1024
MB = 1024 * 1024
MB_MAX = 64 * 1024  # per file
FILES_MAX = 64
RUNS_MAX = 20
MODES = ("keep", "drop")


def _system_cpu_s() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def write_files(directory: str, mode: str, files: int, mb: int, sync_mb: int) -> list[dict]:
    """Append ``files`` new files of ``mb`` MiB each; per file the system CPU per MB and the
    wall time. ``mode`` "drop" drops each synced range from the page cache."""
    chunk = b"\x5a" * WRITE_BYTES
    writes_per_sync = max(1, sync_mb * MB // WRITE_BYTES)
    out = []
    paths = []
    try:
        for i in range(files):
            path = os.path.join(directory, f"pagecache-{mode}-{i}.bin")
            paths.append(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                cpu0, t0 = _system_cpu_s(), time.monotonic()
                for n in range(1, mb * MB // WRITE_BYTES + 1):
                    os.write(fd, chunk)
                    if n % writes_per_sync == 0:
                        os.fdatasync(fd)
                        if mode == "drop":
                            os.posix_fadvise(fd, 0, n * WRITE_BYTES, os.POSIX_FADV_DONTNEED)
                os.fdatasync(fd)
                cpu1, t1 = _system_cpu_s(), time.monotonic()
            finally:
                os.close(fd)
            out.append({"file": i, "sys_ms_per_mb": round(1000 * (cpu1 - cpu0) / mb, 3),
                        "mb_per_s": round(mb / max(t1 - t0, 1e-9), 1)})
    finally:
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    return out


def main(argv: list[str] | None = None) -> int:
    parser = UsageParser(prog="loom bench pagecache", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=4, help="new files per run (default 4)")
    parser.add_argument("--mb", type=int, default=1024, help="MiB per file (default 1024)")
    parser.add_argument("--sync-mb", type=int, default=100, help="an fdatasync every this many MiB (default 100)")
    parser.add_argument("--runs", type=int, default=2, help="runs of each mode, alternating (default 2)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the files go (the data disk)")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    if not (1 <= args.files <= FILES_MAX and 1 <= args.mb <= MB_MAX and 1 <= args.sync_mb and 1 <= args.runs <= RUNS_MAX):
        parser.error(f"--files in [1, {FILES_MAX}], --mb in [1, {MB_MAX}], --sync-mb >= 1, --runs in [1, {RUNS_MAX}]")
    if not hasattr(os, "posix_fadvise"):
        parser.error("this platform has no posix_fadvise")
    results: dict[str, list[dict]] = {m: [] for m in MODES}
    for run in range(args.runs):
        for mode in MODES:
            files = write_files(args.dir, mode, args.files, args.mb, args.sync_mb)
            results[mode].append({"run": run + 1, "files": files})
            print(f"run {run + 1} {mode}: system CPU ms per MB by file "
                  f"{' / '.join(str(f['sys_ms_per_mb']) for f in files)}; MB/s "
                  f"{' / '.join(str(f['mb_per_s']) for f in files)}", flush=True)
    summary = {m: statistics.median(f["sys_ms_per_mb"] for r in results[m] for f in r["files"]) for m in MODES}
    print(f"median system CPU per MB written: keep {summary['keep']:.3f} ms, drop {summary['drop']:.3f} ms "
          f"({args.files} x {args.mb} MiB per run, fdatasync every {args.sync_mb} MiB, {args.dir})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "runs": results, "median_sys_ms_per_mb": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
