"""Partition directories on one broker: where each replica's files live, which topic (by id)
they belong to, whose engine wrote them, and the ones set aside.

    <data_dir>/meta.properties                   the cluster this broker belongs to (identity.py)
    <data_dir>/<topic>-<partition>/
        partition.metadata                       "version: 0" / "topic_id: <uuid>" (Kafka's format)
        <engine>/                                one per storage engine that has held this log
            log/                                 the engine's own files
            leader-epoch-checkpoint              per-log state: it describes this engine's log only
            high-watermark-checkpoint            per-log state too (nodes/broker/hw_checkpoint.py)
            <offset>.producer-snapshot           per-log state too (nodes/broker/producer_snapshots.py)
    <data_dir>/<topic>-<partition>.<topic id>.stray/   set aside, with everything in it

Nothing is deleted because metadata does not mention it: a partition directory whose topic is
unknown, or whose topic id is not the id the topic now has (deleted and re-created with the same
name), is renamed ``*.stray``, reported, and deleted only when its topic id is deleted explicitly.

Per-engine subdirectories make an engine swap explicit: the other engine's log and its epoch
checkpoint stay together, untouched, and serve again when that engine is configured again.
A directory from before this layout (``<topic>-<partition>/log`` beside the checkpoints) moves
into the subdirectory of the engine whose files it holds, with its checkpoints.

Not thread-safe: owned by the broker's reactor.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from pathlib import Path

from engines.durable import fsync_directory, replace_file, sync_directory, sync_file
from nodes.broker.epochs import FILE_NAME as EPOCH_CHECKPOINT
from nodes.broker.hw_checkpoint import HW_CHECKPOINT_FILE as HW_CHECKPOINT

log = logging.getLogger(__name__)

STRAY_SUFFIX = ".stray"
PARTITION_METADATA = "partition.metadata"
LOG_DIR = "log"
STRAY_NAME_ATTEMPTS_MAX = 1000
# files that tell which built-in engine wrote a directory from before per-engine subdirectories
_LEGACY_MARKERS = {"lmdb": ("data.mdb",), "segment": (".log", ".index", "recovery.checkpoint")}

Key = tuple[str, int]


def parse_partition_dir(name: str) -> Key | None:
    """(topic, partition) of a partition directory name, None for anything else."""
    if name.endswith(STRAY_SUFFIX):
        return None
    topic, _, p = name.rpartition("-")
    return (topic, int(p)) if topic and p.isdigit() else None


class PartitionDirs:
    """The partition directories under one broker's data directory."""

    def __init__(self, data_dir: str | os.PathLike, engine: str) -> None:
        self.data_dir = Path(data_dir)
        self.engine = engine
        self._topic_ids: dict[Key, str] = {}  # "" when the directory has no partition.metadata
        self._durable: set[Key] = set()  # partition directories this process made durable (make_durable)
        # the data directory's fsyncs, shared: partition directories created here are numbered,
        # and one fsync covers every one numbered before it began (a directory found at start
        # counts as 0: this process never synced its name)
        self._dirs_made = 0
        # kept while the directory is there (a delete that left it keeps its number), dropped
        # with it: kept for good, every partition ever created here stayed in it
        self._made_at: dict[Key, int] = {}
        self._data_dir_synced = -1  # the number of the last directory the data directory's last fsync covered
        self.strays: dict[str, str] = {}  # directory name -> topic id ("" if it had none)
        self.other_engines: Counter[str] = Counter()  # engine -> partitions holding its data

    def path(self, key: Key) -> Path:
        return self.data_dir / f"{key[0]}-{key[1]}"

    # -- start-up ------------------------------------------------------------------------------
    def scan(self) -> list[Key]:
        """Partition directories on disk (sorted); strays are recorded, not returned."""
        keys = []
        for d in sorted(self.data_dir.iterdir()):
            if not d.is_dir():
                continue
            if d.name.endswith(STRAY_SUFFIX):
                self.strays[d.name] = self._read_topic_id(d)
                continue
            key = parse_partition_dir(d.name)
            if key is not None:
                keys.append(key)
        if self.strays:
            log.warning("%d partition directories are set aside (*.stray, kept until their topic id is deleted): %s",
                        len(self.strays), ", ".join(sorted(self.strays)))
        return keys

    def report_other_engines(self) -> None:
        """One line for an engine swap: which other engines' data the partitions hold."""
        for engine, count in sorted(self.other_engines.items()):
            log.warning("this broker runs storage engine %s; %d partition directories hold data of storage engine "
                        "%s, kept beside it and not served (their %s logs start empty; set storage.engine: %s "
                        "to serve that data again)", self.engine, count, engine, self.engine, engine)

    # -- one partition -----------------------------------------------------------------------------
    def topic_id(self, key: Key) -> str:
        """The topic id the directory was written for ("" if none is recorded or no directory)."""
        if key not in self._topic_ids:
            self._topic_ids[key] = self._read_topic_id(self.path(key))
        return self._topic_ids[key]

    def set_topic_id(self, key: Key, topic_id: str, durable: bool = True) -> None:
        """Record ``topic_id`` in the directory (durably: it decides what may be deleted).
        ``durable=False`` writes it without fsync, for a replica that holds nothing yet:
        ``make_durable`` must run before the replica's first durable write (its epoch
        checkpoint, its log), as Kafka flushes ``partition.metadata`` before a log's first
        append. Until then a power loss may take the file (or leave it empty), and the
        directory then reads as having no id -- which only an empty replica can be. Raises
        StorageFull / EngineError."""
        d = self._make_dir(key)
        replace_file(d / PARTITION_METADATA, f"version: 0\ntopic_id: {topic_id}\n".encode(), sync=durable)
        self._topic_ids[key] = topic_id
        if not durable:
            self._durable.discard(key)

    def make_durable(self, key: Key) -> None:
        """Make the partition's directory durable as far as this layer knows it: the topic id
        (file and name), the directory's entries (its engine subdirectory) and its own name in
        the data directory -- once per process, since a file written without fsync by a
        process that was killed or closed is not known to be durable by the next one. Run
        before a replica's first durable write (Partition.before_first_write). Raises
        StorageFull / EngineError (and stays to be done)."""
        if key in self._durable:
            return
        d = self.path(key)
        if self.topic_id(key):
            sync_file(d / PARTITION_METADATA)  # the file, then the directory
        else:
            sync_directory(d)
        if self._made_at.get(key, 0) > self._data_dir_synced:
            covered = self._dirs_made
            sync_directory(self.data_dir)
            self._data_dir_synced = covered
        self._durable.add(key)

    def _make_dir(self, key: Key) -> Path:
        """The partition's directory, created (and numbered, for make_durable) if missing."""
        d = self.path(key)
        if not d.is_dir():
            d.mkdir(parents=True, exist_ok=True)
            self._dirs_made += 1
            self._made_at[key] = self._dirs_made
        return d

    def engine_dir(self, key: Key, topic_id: str = "") -> Path:
        """The configured engine's directory of this partition (its ``log/`` and per-log state),
        created as needed; moves a pre-subdirectory layout into place and records which other
        engines' data sits beside it. ``topic_id`` is recorded if the directory has none, not
        yet durably (``make_durable``: a 1,000-partition topic's creation spent a quarter of
        its time in these fsyncs)."""
        d = self._make_dir(key)
        if topic_id and not self.topic_id(key):
            self.set_topic_id(key, topic_id, durable=False)
        if (d / LOG_DIR).is_dir():
            self._move_legacy(d)
        mine = d / self.engine
        self.other_engines.update(e.name for e in d.iterdir()
                                  if e.is_dir() and e.name != self.engine and (e / LOG_DIR).is_dir())
        (mine / LOG_DIR).mkdir(parents=True, exist_ok=True)
        return mine

    def _move_legacy(self, d: Path) -> None:
        names = [f.name for f in (d / LOG_DIR).iterdir()]
        found = [e for e, marks in _LEGACY_MARKERS.items() if any(n in marks or n.endswith(marks) for n in names)]
        engine = found[0] if len(found) == 1 else self.engine
        target = d / engine
        target.mkdir(exist_ok=True)
        os.replace(d / LOG_DIR, target / LOG_DIR)
        for name in (EPOCH_CHECKPOINT, HW_CHECKPOINT):
            checkpoint = d / name
            if checkpoint.exists():
                # with two engines' files in one log directory nobody knows whose log these
                # describe: set them aside and let the partition rebuild its epochs from its own
                # log (and start its HW from 0, as before checkpoints)
                os.replace(checkpoint, target / name if len(found) <= 1 else d / (name + ".ambiguous"))
        fsync_directory(d)
        log.info("%s: moved the log of storage engine %s into %s/", d.name, engine, engine)

    def set_aside(self, key: Key) -> str:
        """Rename the partition's directory to ``<name>.<topic id>.stray``; returns the new name.
        The caller has closed the partition. "" if there was no directory. Raises OSError."""
        d = self.path(key)
        topic_id = self.topic_id(key)
        if not d.exists():
            return ""
        base = f"{d.name}.{topic_id or 'no-topic-id'}"
        for n in range(STRAY_NAME_ATTEMPTS_MAX):
            name = base + (f".{n}" if n else "") + STRAY_SUFFIX
            if not (self.data_dir / name).exists():
                break
        else:
            raise OSError(f"no free stray name for {d}")
        os.replace(d, self.data_dir / name)
        # forgotten before the fsync, which may fail with the directory already moved
        self._topic_ids.pop(key, None)
        self._durable.discard(key)
        self._made_at.pop(key, None)
        self.strays[name] = topic_id
        fsync_directory(self.data_dir)
        return name

    def delete(self, key: Key) -> None:
        """Delete the partition's directory (its topic id was deleted explicitly)."""
        shutil.rmtree(self.path(key), ignore_errors=True)
        self._topic_ids.pop(key, None)
        self._durable.discard(key)
        if not self.path(key).exists():
            self._made_at.pop(key, None)

    def delete_strays(self, deleted_topic_ids: tuple[str, ...] | list[str]) -> list[str]:
        """Delete the strays of explicitly deleted topic ids; returns their names."""
        if not self.strays or not deleted_topic_ids:
            return []
        deleted = set(deleted_topic_ids)
        gone = [name for name, tid in self.strays.items() if tid and tid in deleted]
        for name in gone:
            shutil.rmtree(self.data_dir / name, ignore_errors=True)
            log.info("deleted %s: its topic %s was deleted", name, self.strays.pop(name))
        return gone

    @staticmethod
    def _read_topic_id(d: Path) -> str:
        try:
            text = (d / PARTITION_METADATA).read_text()
        except (FileNotFoundError, NotADirectoryError):
            return ""
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "topic_id":
                return value.strip()
        return ""
