"""Run one node: ``python -m nodes.run -c CONFIG --node NAME``. The launcher starts every node
this way; ``loom up --node NAME`` does the same in the foreground."""

from __future__ import annotations

import argparse
import ctypes
import importlib
import errno
import gc
import logging
import os
import sys
from typing import NoReturn

import zmq

from engines.api import StorageFailed
from fabric.config import ConfigError, load_config
from fabric.roles import ROLES
from fabric.zmq_context import SOCKETS_MAX, allow_sockets
from nodes.base import setup_logging
from nodes.data_dir_lock import DataDirInUse

log = logging.getLogger("loom.run")

# Exit codes the supervisor (nodes/launcher.py) acts on.
EXIT_CONFIG_ERROR = 2  # the config (file, node name, host) is wrong: restarting cannot help
EXIT_BIND_ERROR = 3    # the node's port is taken: restarted with backoff, it may be freed
EXIT_PROGRAMMER_ERROR = 70  # a bug stopped the node (EX_SOFTWARE): restarted, it recovers from disk
EXIT_STORAGE_FAILED = 74    # an fsync failed (EX_IOERR; engines.api.StorageFailed): restarted, it recovers from disk
EXIT_DATA_DIR_IN_USE = 75   # another process holds the node's data dir (EX_TEMPFAIL): restarted with backoff

# The cyclic collector's thresholds once a node has started (CPython's defaults: 700, 10, 10).
# A node's reactor allocates and frees containers by the thousand per pass (frames, decoded
# requests, replies), almost none in a cycle; at the defaults a gen-1 collection every ~7,000
# net allocations paused every node's reactor thread for 1.5-2.9 ms. Gen-0 counts only objects
# still alive (refcounting frees the rest), so the higher threshold bounds the garbage that
# can wait for a collection to GC_GEN0_OBJECTS_MAX containers: memory stays bounded.
GC_GEN0_OBJECTS_MAX = 50_000  # net container allocations between gen-0 collections
GC_GEN1_COLLECTIONS = 20      # gen-0 collections between gen-1 collections
GC_GEN2_COLLECTIONS = 20      # gen-1 collections between full collections

# glibc's malloc hands memory back to the kernel whenever the free top of a heap is over
# M_TRIM_THRESHOLD (128 KiB by default), and serves blocks over M_MMAP_THRESHOLD (128 KiB at
# first) from fresh mmaps. A broker allocates and frees ~100 KB buffers thousands of times a
# second (received frames, batches, libzmq messages), so at the defaults those came back from
# the kernel as new pages, each zero-filled on its first touch: copying a 100 KB batch into a
# fresh buffer cost 60-90 µs instead of 4-10 µs (measured here), and every copy on the data
# path paid it. Freed memory is now kept for reuse up to MALLOC_TRIM_THRESHOLD_BYTES per heap,
# and blocks up to MALLOC_MMAP_THRESHOLD_BYTES (glibc's maximum on 64 bits) come from the heap.
MALLOC_TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024
MALLOC_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's malloc.h
# The roles whose data path the tuning serves (measured: bench/RESULTS.md). Not the others: every
# thread that allocates gets a malloc arena of its own, each may then keep up to the trim
# threshold of freed memory (8 threads that each held 40 MiB kept 206 MiB resident after freeing
# it all, 1 MiB at the defaults), and the gateway runs the client library on many threads (its
# freed 2 MiB WebSocket messages made it grow 22 MB in the slow-client memory test).
MALLOC_TUNED_ROLES = frozenset({"broker"})
# glibc gives a thread that allocates while the others' arenas are busy an arena of its own, up
# to eight per core, and each keeps its freed memory apart. The roles below run a thread per
# client or request (a consumer service's instances, the gateway's 48 request threads), all
# taking the GIL to allocate, so more arenas buy no speed: at glibc's default a consumer service
# reading 24 backlogs held ~40 MB more, and the gateway's RSS stepped 9-19 MB up when a request
# thread first streamed 2 MB messages (measured: bench/RESULTS.md "Malloc arenas").
MALLOC_ARENAS_MAX = 2
MALLOC_ARENA_LIMITED_ROLES = frozenset({"gateway", "consumer"})

# the nodes holding a client per request thread or per instance: their ZeroMQ context takes
# more than libzmq's 1,023 sockets (fabric/zmq_context.py; the others keep its default)
MANY_SOCKETS_ROLES = frozenset({"gateway", "consumer", "producer"})

OPEN_FILES_WANTED = 100_000  # the soft RLIMIT_NOFILE a node asks for (Kafka's advice for brokers)


def node_class(role: str) -> type:
    """The class implementing ``role`` (fabric/roles.py's table), imported now. Raises
    ConfigError for an unknown role or one whose module this build does not have."""
    spec = ROLES.get(role)
    if spec is None:
        raise ConfigError(f"no node implementation for role {role!r}")
    try:
        return getattr(importlib.import_module(spec.module), spec.class_name)
    except ModuleNotFoundError as e:
        if e.name != spec.module:
            raise
        raise ConfigError(f"role {role!r} is not available in this build") from None


def tune_gc_after_start() -> None:
    """Collect once, move every object that survived start-up (modules, config, recovered
    partition tables) into the collector's permanent generation (``gc.freeze``: never scanned
    again, so a full collection walks only what the node allocated since), and raise the
    thresholds to the values above. Call once, in the node's process, after the node is built
    and before it runs. Process-wide; not for library code (the client does not call it)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_OBJECTS_MAX, GC_GEN1_COLLECTIONS, GC_GEN2_COLLECTIONS)


def _mallopt():  # -> the C function, or None without glibc's
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt


def tune_malloc() -> bool:
    """Set glibc malloc's trim and mmap thresholds to the values above (process-wide: call once
    at a node's start; not for library code). Returns False where there is no glibc
    ``mallopt`` (another C library: the defaults stay, which costs speed, not correctness)."""
    mallopt = _mallopt()
    return mallopt is not None and mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD_BYTES) == 1 \
        and mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD_BYTES) == 1


def limit_malloc_arenas() -> bool:
    """Let glibc's malloc make at most MALLOC_ARENAS_MAX arenas (process-wide: call once at a
    node's start, before its threads, and inherited by a forked gunicorn worker; not for library
    code). Returns False where there is no glibc ``mallopt`` (the default stays: memory, not
    correctness). As the environment's ``MALLOC_ARENA_MAX``, which an operator's setting of
    overrides: that one is read when the process starts, and this call leaves it alone."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return True
    mallopt = _mallopt()
    return mallopt is not None and mallopt(_M_ARENA_MAX, MALLOC_ARENAS_MAX) == 1


def raise_open_files_limit() -> tuple[int, int] | None:
    """Raise the soft limit on open files (RLIMIT_NOFILE) to the hard limit, at most
    OPEN_FILES_WANTED: a broker holds two descriptors per open segment (three for an active
    segment that has taken a direct write), its flusher thread dups
    of every dirty one until they are synced, and a port one per connection; a soft limit of
    1,024 (a common default) is not enough for 1,000 partitions. Returns (before, after), or
    None where there is no ``resource`` module. Process-wide: call once at a node's start."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as e:  # a sandbox may refuse: the node runs with what it has
        log.warning("cannot raise the open-files limit from %d to %d: %s", soft, want, e)
        return soft, soft
    return soft, want


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nodes.run")
    ap.add_argument("-c", "--config", default=None)
    ap.add_argument("--node", required=True)
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = load_config(args.config)
        role = config.node(args.node).role
        raise_open_files_limit()
        if role in MANY_SOCKETS_ROLES:
            allow_sockets(SOCKETS_MAX)
        if role in MALLOC_TUNED_ROLES and not tune_malloc():
            log.info("no glibc mallopt: malloc keeps its default trim and mmap thresholds")
        if role in MALLOC_ARENA_LIMITED_ROLES and not limit_malloc_arenas():
            log.info("no glibc mallopt: malloc keeps its default number of arenas")
        cls = node_class(role)
        node = cls(config, args.node)
    except ConfigError as e:
        print(f"loom: {e}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except DataDirInUse as e:  # checked before anything in the directory is opened
        print(f"loom: {args.node}: {e}", file=sys.stderr)
        return EXIT_DATA_DIR_IN_USE
    except StorageFailed:  # recovering a log at start (its fsync)
        _stop_now(EXIT_STORAGE_FAILED, f"{args.node} cannot start: a write to disk failed")
    except zmq.ZMQError as e:  # binding the ROUTER or PUB port
        if e.errno == errno.EADDRINUSE:
            print(f"loom: {args.node}: cannot listen: {e} (is another process using the port?)", file=sys.stderr)
            return EXIT_BIND_ERROR
        if e.errno == errno.EADDRNOTAVAIL:
            print(f"loom: {args.node}: cannot listen: {e} (the node's host is not an address of this machine)",
                  file=sys.stderr)
            return EXIT_CONFIG_ERROR
        raise
    tune_gc_after_start()
    try:
        node.run()
    except StorageFailed:
        # the page cache can no longer be trusted to reach the disk: stop at once, as Kafka stops a
        # broker whose log directory failed; recovery on restart validates past the last checkpoint
        _stop_now(EXIT_STORAGE_FAILED, f"{args.node} stopped: a write to disk failed; the supervisor restarts "
                                       "it from disk")
    except Exception:
        # like a kill -9, which recovery handles: no clean close from a state a bug has broken
        _stop_now(EXIT_PROGRAMMER_ERROR, f"{args.node} stopped by a programmer error; the supervisor restarts "
                                         "it from disk")
    return 0


def _stop_now(code: int, why: str) -> NoReturn:
    """Log the exception being handled and exit without closing anything (as a kill -9 would)."""
    log.critical("%s", why, exc_info=True)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
