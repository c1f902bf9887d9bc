"""``loom bench pagecache`` writes, syncs and (in "drop") drops what it wrote, reports both
modes, and leaves no file behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench import pagecache


def test_it_reports_both_modes_and_cleans_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    data = tmp_path / "data"
    data.mkdir()
    assert pagecache.main(["--files", "2", "--mb", "2", "--sync-mb", "1", "--runs", "1", "--dir", str(data),
                           "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["median_sys_ms_per_mb"]) == {"keep", "drop"}
    assert [len(r["files"]) for m in ("keep", "drop") for r in doc["runs"][m]] == [2, 2]
    assert list(data.iterdir()) == []
    assert "median system CPU per MB written: keep" in capsys.readouterr().out


def test_the_drop_mode_advises_only_over_synced_bytes(tmp_path: Path, monkeypatch) -> None:
    calls: list[tuple[int, int]] = []
    synced: list[int] = []
    real_fdatasync = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(os.fstat(fd).st_size), real_fdatasync(fd)))
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, off, n, adv: calls.append((off, n)))
    pagecache.write_files(str(tmp_path), "drop", 1, 2, 1)
    assert calls == [(0, 1 << 20), (0, 2 << 20)]
    assert all(n <= s for (_, n), s in zip(calls, synced))
