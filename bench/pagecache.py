"""``loom bench pagecache``: what this machine's kernel and disk charge a log for its writes --
the system CPU per MiB of appends and the MiB/s, with an interval fsync, when the written pages
stay cached (the kernel's default), when each fsync is followed by dropping them
(``posix_fadvise(POSIX_FADV_DONTNEED)``, what the segment engine does with durable bytes
outside its window: engines/segment_cache.py), and when the writes bypass the page cache
(``O_DIRECT`` from an aligned buffer, what the segment engine does for large runs:
engines/direct_write.py).

Each run appends ``--files`` new files of ``--mb`` MiB per writer, in ``--write-kb`` writes,
with an fdatasync every ``--sync-mb`` MiB; the modes (``--modes``, default "keep,drop")
alternate, ``--runs`` times. ``--writers N`` runs N writer processes at once, as N brokers
sharing one disk would, and reports their total MiB/s beside each file's: the disk's ceiling
for a replicated log is the total over every replica's writes. On a machine whose idle memory
the host takes back, the first-touch cost of new pages shows in "keep" once the page cache
grows past the memory recently in use (see bench/RESULTS.md, "The page cache").

    python -m bench.pagecache --files 4 --mb 1024 --runs 2 --dir /path/on/the/data/disk
    python -m bench.pagecache --modes direct,drop --writers 3 --write-kb 1024 --mb 1024

Every file is deleted at the end of its run. Not thread-safe.
"""

from __future__ import annotations

import json
import mmap
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time

from bench.options import UsageParser

WRITE_BYTES = 128 * 1024
MB = 1024 * 1024
MB_MAX = 64 * 1024  # per file
FILES_MAX = 64
RUNS_MAX = 20
WRITERS_MAX = 16
WRITE_KB_MAX = 8 * 1024
MODES = ("keep", "drop", "direct")
DEFAULT_MODES = ("keep", "drop")


class WriteFailed(Exception):
    """A writer could not open or write its file (raised in a pool worker, it reaches the
    parent as any exception does; a SystemExit there would kill the worker and hang the pool)."""


def _system_cpu_s() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def write_files(directory: str, mode: str, files: int, mb: int, sync_mb: int, write_bytes: int = WRITE_BYTES,
                prefix: str = "") -> list[dict]:
    """Append ``files`` new files of ``mb`` MiB each; per file the system CPU per MiB and the
    wall time. ``mode`` "drop" drops each synced range from the page cache; "direct" writes
    with O_DIRECT from an aligned buffer (``write_bytes`` a multiple of 4 KiB)."""
    direct = mode == "direct"
    if direct:
        chunk = mmap.mmap(-1, write_bytes)  # page-aligned, as O_DIRECT wants
        chunk.write(b"\x5a" * write_bytes)
    else:
        chunk = b"\x5a" * write_bytes
    writes_per_sync = max(1, sync_mb * MB // write_bytes)
    out = []
    paths = []
    try:
        for i in range(files):
            path = os.path.join(directory, f"pagecache-{prefix}{mode}-{i}.bin")
            paths.append(path)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0), 0o644)
            except OSError as e:
                raise WriteFailed(f"cannot open {path} for {mode} writes: {e.strerror}") from None
            try:
                cpu0, t0 = _system_cpu_s(), time.monotonic()
                for n in range(1, mb * MB // write_bytes + 1):
                    os.write(fd, chunk)
                    if n % writes_per_sync == 0:
                        os.fdatasync(fd)
                        if mode == "drop":
                            os.posix_fadvise(fd, 0, n * write_bytes, os.POSIX_FADV_DONTNEED)
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


def run_writers(directory: str, mode: str, writers: int, files: int, mb: int, sync_mb: int,
                write_bytes: int) -> tuple[list[dict], float]:
    """``writers`` processes writing at once (one: this process); every writer's files, and
    the MiB/s of all of them together (their MiB over the wall time until the last is done)."""
    t0 = time.monotonic()
    if writers == 1:
        files_out = write_files(directory, mode, files, mb, sync_mb, write_bytes)
    else:
        jobs = [(directory, mode, files, mb, sync_mb, write_bytes, f"w{w}-") for w in range(writers)]
        with multiprocessing.get_context("fork").Pool(writers) as pool:
            files_out = [f for per_writer in pool.starmap(write_files, jobs) for f in per_writer]
    return files_out, round(writers * files * mb / max(time.monotonic() - t0, 1e-9), 1)


def main(argv: list[str] | None = None) -> int:
    parser = UsageParser(prog="loom bench pagecache", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=4, help="new files per run and writer (default 4)")
    parser.add_argument("--mb", type=int, default=1024, help="MiB per file (default 1024)")
    parser.add_argument("--sync-mb", type=int, default=100, help="an fdatasync every this many MiB (default 100)")
    parser.add_argument("--runs", type=int, default=2, help="runs of each mode, alternating (default 2)")
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES),
                        help=f"comma-separated, of {', '.join(MODES)} (default {','.join(DEFAULT_MODES)})")
    parser.add_argument("--writers", type=int, default=1, help="writer processes at once (default 1)")
    parser.add_argument("--write-kb", type=int, default=WRITE_BYTES // 1024,
                        help=f"KiB per write, a multiple of 4 (default {WRITE_BYTES // 1024})")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the files go (the data disk)")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    if not (1 <= args.files <= FILES_MAX and 1 <= args.mb <= MB_MAX and 1 <= args.sync_mb and 1 <= args.runs <= RUNS_MAX):
        parser.error(f"--files in [1, {FILES_MAX}], --mb in [1, {MB_MAX}], --sync-mb >= 1, --runs in [1, {RUNS_MAX}]")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes) or len(set(modes)) < len(modes):
        parser.error(f"--modes: distinct names of {', '.join(MODES)}, not {args.modes!r}")
    if not (1 <= args.writers <= WRITERS_MAX):
        parser.error(f"--writers in [1, {WRITERS_MAX}]")
    if not (4 <= args.write_kb <= WRITE_KB_MAX and args.write_kb % 4 == 0):
        parser.error(f"--write-kb: a multiple of 4 in [4, {WRITE_KB_MAX}]")
    if (args.mb * MB) % (args.write_kb * 1024) or (args.sync_mb * MB) % (args.write_kb * 1024):
        parser.error(f"--mb and --sync-mb must be whole numbers of --write-kb {args.write_kb} writes")
    if not hasattr(os, "posix_fadvise") or ("direct" in modes and not hasattr(os, "O_DIRECT")):
        parser.error("this platform has no posix_fadvise or no O_DIRECT")
    write_bytes = args.write_kb * 1024
    results: dict[str, list[dict]] = {m: [] for m in modes}
    for run in range(args.runs):
        for mode in modes:
            try:
                files, total = run_writers(args.dir, mode, args.writers, args.files, args.mb, args.sync_mb, write_bytes)
            except (WriteFailed, OSError) as e:
                print(f"loom bench pagecache: {e}", file=sys.stderr)
                return 1
            results[mode].append({"run": run + 1, "files": files, "total_mb_per_s": total})
            print(f"run {run + 1} {mode}: system CPU ms per MiB by file "
                  f"{' / '.join(str(f['sys_ms_per_mb']) for f in files)}; MiB/s "
                  f"{' / '.join(str(f['mb_per_s']) for f in files)}; {args.writers} writer(s) together "
                  f"{total} MiB/s", flush=True)
    summary = {m: statistics.median(f["sys_ms_per_mb"] for r in results[m] for f in r["files"]) for m in modes}
    totals = {m: statistics.median(r["total_mb_per_s"] for r in results[m]) for m in modes}
    print("median system CPU per MiB written: "
          + ", ".join(f"{m} {summary[m]:.3f} ms" for m in modes)
          + "; MiB/s of all writers together: " + ", ".join(f"{m} {totals[m]:.0f}" for m in modes)
          + f" ({args.writers} writer(s) x {args.files} x {args.mb} MiB per run, {args.write_kb} KiB writes, "
          f"fdatasync every {args.sync_mb} MiB, {args.dir})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "runs": results, "median_sys_ms_per_mb": summary,
                       "median_total_mb_per_s": totals}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
