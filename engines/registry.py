"""Open the engine named in config: the built-ins plus every ``loom.engines`` entry point.

A third-party engine registers itself in its own pyproject.toml::

    [project.entry-points."loom.engines"]
    rocks = "loom_rocks:RocksEngine"

Thread-safe (the entry-point table is read once and cached; a racing first call just reads it
twice).
"""

from __future__ import annotations

import importlib
from importlib import metadata

from engines.api import Engine, EngineConfig, EngineError

ENTRY_POINT_GROUP = "loom.engines"

# Built-ins resolve without entry points so that a source checkout (not pip-installed) works.
_BUILTINS: dict[str, str] = {
    "segment": "engines.segment:SegmentEngine",
    "lmdb": "engines.lmdb_engine:LmdbEngine",
    "memory": "engines.memory:MemoryEngine",
}
_entry_points_cache: dict[str, metadata.EntryPoint] | None = None
_conforming: set[type] = set()  # engine classes whose instances implement Engine


def _entry_points() -> dict[str, metadata.EntryPoint]:
    global _entry_points_cache
    if _entry_points_cache is None:
        _entry_points_cache = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return _entry_points_cache


def available() -> list[str]:
    """Names of every engine that open_engine accepts, sorted."""
    return sorted(set(_BUILTINS) | set(_entry_points()))


def _load_spec(spec: str) -> type:
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def engine_class(name: str) -> type:
    """The class registered as ``name``. Raises EngineError (naming the available engines) for
    an unknown name or an engine that fails to import."""
    try:
        if name in _BUILTINS:
            return _load_spec(_BUILTINS[name])
        eps = _entry_points()
        if name in eps:
            return eps[name].load()
    except (ImportError, AttributeError) as e:
        raise EngineError(f"storage engine {name!r} failed to load: {e}") from e
    raise EngineError(f"unknown storage engine {name!r}; available: {', '.join(available())}")


def open_engine(name: str, directory: str, config: EngineConfig) -> Engine:
    """Open (creating and recovering as needed) the partition log in ``directory`` with the
    engine called ``name``. Raises EngineError (or a subclass) on failure."""
    cls = engine_class(name)
    engine = cls(directory, config)
    if cls not in _conforming:  # checked once per class: the Protocol check costs ~0.2 ms
        if not isinstance(engine, Engine):
            raise EngineError(f"storage engine {name!r} ({cls.__module__}.{cls.__qualname__}) "
                              "does not implement engines.api.Engine")
        _conforming.add(cls)
    return engine
