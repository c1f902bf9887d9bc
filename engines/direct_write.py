"""Appends past the page cache (``O_DIRECT``) for the segment engine's large writes.

Why: a buffered write copies every byte into the page cache, and on the machine
bench/RESULTS.md was measured on that copy was the largest single cost of a replicated
produce -- 0.3-0.7 ms of CPU per MB, three times over at replication factor 3. A direct write
hands the bytes to the device by DMA: ~0.06-0.09 ms of CPU per MB. It costs wall time instead
(the call returns once the device has the bytes: ~0.6 ms for 1 MiB against ~0.2 buffered) and
the bytes are not cached, so a reader of them reads the disk. The segment engine therefore
writes directly only runs of at least ``EngineConfig.direct_write_min_bytes`` (256 KiB by
default: at that size a direct write already costs half the CPU), which a log gets only under
load; the small writes of a lightly loaded log -- the ones a tailing consumer reads back at
once -- stay buffered and cached. Redpanda and TigerBeetle write their logs with O_DIRECT;
Kafka leaves everything to the page cache.

How: a direct write must start and end on a block boundary (``BLOCK_BYTES``, the largest
logical block size of common devices) from a block-aligned buffer. The run is copied into a
thread-local staging buffer (an anonymous mmap, page-aligned) after the bytes of its first
block that the log already holds (kept by the segment from its last direct write, else read
back), padded with zeros to the next block, and written there. So the file may end with up to
``BLOCK_BYTES - 1`` zero bytes past the log's end: the next append overwrites them, a roll or a
close cuts them off, and recovery takes zero bytes shorter than a block after the last whole
batch for this padding, not for a torn write (engines/segment_recovery.py).

Rewriting the first block rewrites bytes of the previous batch, with the same values: a torn
write leaves either version of them. A direct write that overlaps pages cached by a buffered
write or a read is kept coherent by the kernel (it writes back and drops those pages first).
A file system that refuses O_DIRECT (``EINVAL`` at open or at a write: tmpfs, some FUSE
systems) gets buffered writes, as with the setting off -- refused part-way through a run, the
whole run is written again buffered (the pieces written hold its own bytes).

Thread-safety: the staging buffer is per thread; a segment's direct descriptor and tail are
its owner's, like the rest of ``LogSegment``.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading

# Direct writes start and end on multiples of this many bytes (file position and length) and
# come from a buffer aligned to it. 4096 covers devices with 512-byte and 4 KiB logical blocks.
BLOCK_BYTES = 4096
# A run longer than this is written in several direct writes of this size (the staging buffer
# of each writing thread is at most this large).
STAGE_BYTES_MAX = 8 * 1024 * 1024
# The default of ``EngineConfig.direct_write_min_bytes`` (RESULTS: 256 KiB costs half the CPU
# of a buffered write of the same bytes on the measured machine; 128 KiB about the same).
DIRECT_WRITE_MIN_BYTES = 256 * 1024

_O_DIRECT = getattr(os, "O_DIRECT", 0)
# errors meaning "this file system does not do direct I/O (so)", not "the disk failed"
UNSUPPORTED_ERRNOS = frozenset({errno.EINVAL, errno.EOPNOTSUPP})
# errors of the direct descriptor's open that leave the buffered path working: that run is
# written buffered, the next one tries direct again
OUT_OF_DESCRIPTORS_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
ZEROS = bytes(BLOCK_BYTES)

_local = threading.local()


def open_direct(path: str) -> int:
    """A write-only O_DIRECT descriptor of ``path``, or -1 where the platform or the file
    system has no direct I/O. Other errors raise OSError."""
    if not _O_DIRECT:
        return -1
    try:
        return os.open(path, os.O_WRONLY | _O_DIRECT)
    except OSError as e:
        if e.errno in UNSUPPORTED_ERRNOS:
            return -1
        raise


def staging_buffer(nbytes: int) -> memoryview:
    """``min(nbytes, STAGE_BYTES_MAX)`` bytes, rounded up to a block, of this thread's staging
    buffer: page-aligned, STAGE_BYTES_MAX long, made and touched whole at the thread's first
    direct write (so a broker's memory does not creep up by a page at a time as its writes
    grow) and kept. Raises OSError(ENOMEM) when the memory is not there (also for Python's
    MemoryError): the caller writes buffered instead."""
    want = min(max(nbytes, BLOCK_BYTES), STAGE_BYTES_MAX)
    want += -want % BLOCK_BYTES
    buf = getattr(_local, "buf", None)
    if buf is None or len(buf) < want:
        size = max(want, STAGE_BYTES_MAX + -STAGE_BYTES_MAX % BLOCK_BYTES)
        try:
            buf = mmap.mmap(-1, size)
            try:
                buf.write(bytes(size))  # every page resident now, not on first use
            except BaseException:
                buf.close()
                raise
        except MemoryError as e:
            raise OSError(errno.ENOMEM, "Cannot allocate memory (the direct-write staging buffer)") from e
        _local.buf = buf
    return memoryview(buf)[:want]


def write_direct(fd: int, iov: list, lead: bytes, block_at: int) -> tuple[int, bytes]:
    """Write ``lead`` (the bytes the file holds from ``block_at``, a multiple of BLOCK_BYTES,
    to where the run starts; shorter than a block) and then the run ``iov`` at ``block_at``
    with direct writes, the last one padded with zeros to a block. Returns (bytes of zero
    padding now after the run's end, the run's last partial block: the ``lead`` of the next
    run). Raises OSError, with ``written`` -- how many bytes from ``block_at`` reached the
    file -- set on it (0: nothing did)."""
    view = staging_buffer(len(lead) + sum(len(v) for v in iov))
    cap = len(view)
    fill = len(lead)
    view[:fill] = lead
    at = block_at
    try:
        for piece in iov:
            piece = memoryview(piece).cast("B")
            done, size = 0, len(piece)
            while done < size:
                take = min(size - done, cap - fill)
                view[fill:fill + take] = piece[done:done + take]
                fill += take
                done += take
                if fill == cap:
                    _write_all(fd, view, at)
                    at += cap
                    fill = 0
        keep = fill % BLOCK_BYTES
        tail = bytes(view[fill - keep:fill])
        padding = -fill % BLOCK_BYTES
        if fill:
            view[fill:fill + padding] = ZEROS[:padding]
            _write_all(fd, view[:fill + padding], at)
        return padding, tail
    except OSError as e:
        e.written = getattr(e, "written", 0) + at - block_at  # type: ignore[attr-defined]
        raise


def _write_all(fd: int, view: memoryview, at: int) -> None:
    """One direct write of ``view`` at ``at``; a short write (to a regular file: a full disk)
    is an error -- the rest cannot follow at an unaligned position."""
    written = os.pwritev(fd, [view], at)
    if written != len(view):
        raise _short_write(written)


def _short_write(written: int) -> OSError:
    """The error of a direct write cut short after ``written`` bytes. Made here, not in a local
    of the frame that raises it: the error's traceback holds that frame (and, through it, the
    append's frames and batches), a reference cycle that kept them until a cyclic collection --
    at every refused append of a broker on a full disk."""
    err = OSError(errno.ENOSPC, "No space left on device (short direct write)")
    err.written = written  # type: ignore[attr-defined]
    return err
