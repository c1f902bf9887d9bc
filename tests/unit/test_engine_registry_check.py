"""open_engine refuses a class that does not implement engines.api.Engine (a plug-in engine
missing a method), naming it -- the Protocol check runs once per class, not per open."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines import registry
from engines.api import EngineConfig, EngineError


class NotAnEngine:
    def __init__(self, directory: str, config: EngineConfig) -> None:
        self.directory = directory


def test_a_class_that_is_not_an_engine_is_refused_every_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._BUILTINS, "broken", f"{__name__}:NotAnEngine")
    for _ in range(2):
        with pytest.raises(EngineError, match="NotAnEngine.*does not implement"):
            registry.open_engine("broken", str(tmp_path), EngineConfig())
    engine = registry.open_engine("memory", str(tmp_path), EngineConfig())
    assert registry.open_engine("memory", str(tmp_path), EngineConfig()).log_end_offset == engine.log_end_offset == 0
