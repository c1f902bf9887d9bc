"""The segment engine's page-cache window: durable bytes older than the last
``EngineConfig.cache_window.window_bytes`` of a log are dropped from the page cache
(``posix_fadvise(POSIX_FADV_DONTNEED)``) right after the fsync that made them durable.

Why: a log only grows, so left to the kernel a broker's writes keep taking pages the machine
has not used lately -- the page cache grows until memory is full and reclaim starts. On a
virtual machine whose free memory the host takes back (a balloon, free page reporting), each
such page costs the guest a fault on the host the first time it is touched: on the machine
bench/RESULTS.md was measured on, ~10 us per 4 KiB page, 63 % of all CPU of a 1 KiB produce
run in the one copy into the page cache, and half the produce throughput. Dropped pages go
back to the kernel's free lists while still warm, and the next writes reuse them. It also
keeps a broker's memory footprint (which a container's memory limit counts, page cache
included) near what its readers use: consumers at the tail read bytes that are still cached
(not yet durable, or inside the window); one that has fallen further behind reads from disk,
as it would once the kernel had evicted those pages. Kafka leaves the cache to the kernel;
BookKeeper drops its journal's pages the same way after each fsync.

Which bytes: every byte of a segment older than the active one, and the active segment's
bytes more than the window before its end. The window is measured in the active segment
alone: a flush syncs a segment that was rolled since the last one in full, so just after a
roll a reader slightly behind reads the previous segment's tail from disk. The hint only ever
drops *clean* pages (DONTNEED never discards a dirty one), so nothing that is not on disk can
be lost by it, and a page dropped too early is only read back from disk. It is an
optimisation: an error (or a platform without ``posix_fadvise``) drops nothing and is not
reported.
"""

from __future__ import annotations

import os

# under fsync ``always`` the active segment's cold bytes are dropped in steps of at least this
# much: a drop per append would cost a syscall per append
CACHE_DROP_STEP_BYTES = 1024 * 1024

_fadvise = getattr(os, "posix_fadvise", None)
_DONTNEED = getattr(os, "POSIX_FADV_DONTNEED", 0)


def cold_end(size_bytes: int, active: bool, window_bytes: int) -> int:
    """Where the bytes to drop of a durable segment of ``size_bytes`` end (0: none): all of a
    segment older than the active one, the active one's bytes before the window. -1 for
    ``window_bytes`` means keep everything."""
    if window_bytes < 0:
        return 0
    if not active:
        return size_bytes
    return max(0, size_bytes - window_bytes)


def drop_cached(fd: int, end: int) -> None:
    """Drop the clean pages of ``fd``'s bytes [0, end) from the page cache (a hint: errors are
    ignored). Pages dropped before cost only a walk of the cache's index."""
    if end <= 0 or _fadvise is None:
        return
    try:
        _fadvise(fd, 0, end, _DONTNEED)
    except OSError:
        pass
