"""The segment engine's page-cache window: durable bytes more than
``EngineConfig.cache_window.window_bytes`` before the end of a log are dropped from the page
cache (``posix_fadvise(POSIX_FADV_DONTNEED)``) after the fsync that made them durable.

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

Which bytes (``cold_drops``): the window is the log's last ``window_bytes``, measured across
segment boundaries; every durable byte before it is cold. The active segment's cold end is
rounded down to a page: its last, partly written page is where the next append writes, and a
dropped one would be read back from disk first. Each segment remembers how far it has been
dropped (``LogSegment.cache_dropped_to``), so a drop covers what became cold since the last one
(from a little before it: ``FOLIO_BYTES_MAX``), and a segment rolled with its tail inside the
window is dropped later, as the log grows past it.

Reads (``read_drop_range``): a read of bytes before the window -- a consumer catching up -- drops
what that reader read a window earlier (drop-behind), since the window says those bytes are not
to stay cached: the next reads reuse the freed pages while they are warm, as the writes do,
instead of taking pages the host has taken back, and another reader up to a window behind the
first still finds its pages cached. Only a segment with nothing left to fsync drops on a read
(the drops of unsynced bytes are the flusher's, after its fsync); a read inside the window keeps
what it brought in.

When: only after the fsync that made the bytes durable -- the flusher thread's job under fsync
``interval`` (in pieces, each while the job is still current, so a drop never follows an
invalidation: after a truncation, or a flush on the owner's thread that may have been told of
a writeback error the job's fsync was not), a synchronous ``flush``, and under fsync
``always`` the append's sync once the active segment has grown a step (``drop_step``) since
the last drop. Under fsync ``never`` only ``close``, a truncation or a reset syncs.

The hint only ever drops *clean* pages (DONTNEED never discards a dirty one), so nothing that
is not on disk can be lost by it, and a page dropped too early is only read back from disk. It
is an optimisation: an error (or a platform without ``posix_fadvise``) drops nothing and is not
reported.
"""

from __future__ import annotations

import mmap
import os
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from engines.segment_file import LogSegment

PAGE_BYTES = mmap.PAGESIZE
# DONTNEED drops only the folios wholly inside its range, and the page cache holds folios of up
# to 2 MiB: a drop begins this far before where the last one ended, so that a folio the last
# drop's end cut through is dropped now (walking pages already dropped costs next to nothing)
FOLIO_BYTES_MAX = 2 * 1024 * 1024
# under fsync ``always`` a drop follows every this much growth of the active segment (at most:
# a small window drops more often, so that the cache held per log stays near the window)
CACHE_DROP_STEP_BYTES = 1024 * 1024
CACHE_DROP_STEP_MIN_BYTES = 64 * 1024
# the flusher thread drops at most this much at a time while holding the engine's lock
CACHE_DROP_CHUNK_BYTES = 8 * 1024 * 1024

_fadvise = getattr(os, "posix_fadvise", None)
_DONTNEED = getattr(os, "POSIX_FADV_DONTNEED", 0)


def drop_step(window_bytes: int) -> int:
    """How much the active segment grows between drops under fsync ``always``: at most half
    the window (from a floor), so that a log holds at most about 1.5 windows cached."""
    return min(CACHE_DROP_STEP_BYTES, max(CACHE_DROP_STEP_MIN_BYTES, window_bytes // 2))


def cold_drops(segments: Sequence["LogSegment"], window_bytes: int) -> list[tuple["LogSegment", int, int]]:
    """(segment, start, end): the byte ranges of ``segments`` (oldest first, the last one
    active; every byte of them durable) to drop so that only the log's last ``window_bytes``
    stay cached; -1 keeps everything. Walks from the newest segment and stops at the first
    wholly cold segment dropped before (the older ones were dropped before it)."""
    if window_bytes < 0 or not segments:
        return []
    out = []
    keep = window_bytes
    active = segments[-1]
    for seg in reversed(segments):
        size = seg.size_bytes
        kept = min(keep, size)
        keep -= kept
        end = size - kept
        if seg is active:
            end -= end % PAGE_BYTES  # the page the next append writes to stays
        if end > seg.cache_dropped_to:
            out.append((seg, seg.cache_dropped_to - seg.cache_dropped_to % FOLIO_BYTES_MAX, end))
        elif kept == 0 and seg is not active:
            break
    return out


def read_drop_range(start: int, end: int) -> tuple[int, int]:
    """The drop of a segment's bytes [start, end) a reader has left behind: from the last
    FOLIO_BYTES_MAX boundary before it (a large folio the previous drop's end cut through:
    folios are aligned to their size) to the last page boundary at or before its end."""
    return start - start % FOLIO_BYTES_MAX, end - end % PAGE_BYTES


def drop_cached(fd: int, start: int, end: int) -> None:
    """Drop the clean pages of ``fd``'s bytes [start, end) from the page cache (a hint: errors
    are ignored)."""
    if end <= start or _fadvise is None:
        return
    try:
        _fadvise(fd, start, end - start, _DONTNEED)
    except OSError:
        pass
