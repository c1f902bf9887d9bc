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
    assert "median system CPU per MiB written: keep" in capsys.readouterr().out


def test_the_drop_mode_advises_only_over_synced_bytes(tmp_path: Path, monkeypatch) -> None:
    calls: list[tuple[int, int]] = []
    synced: list[int] = []
    real_fdatasync = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(os.fstat(fd).st_size), real_fdatasync(fd)))
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, off, n, adv: calls.append((off, n)))
    pagecache.write_files(str(tmp_path), "drop", 1, 2, 1)
    assert calls == [(0, 1 << 20), (0, 2 << 20)]
    assert all(n <= s for (_, n), s in zip(calls, synced))


def test_direct_writes_and_parallel_writers_report_their_total(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    data = tmp_path / "data"
    data.mkdir()
    probe = data / "probe"
    try:  # a file system without O_DIRECT (tmpfs) cannot run the direct mode
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644))
    except OSError:
        pytest.skip("no O_DIRECT on this file system")
    finally:
        probe.unlink(missing_ok=True)
    assert pagecache.main(["--modes", "direct,drop", "--writers", "2", "--files", "1", "--mb", "2", "--sync-mb", "1",
                           "--write-kb", "256", "--runs", "1", "--dir", str(data), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["median_sys_ms_per_mb"]) == set(doc["median_total_mb_per_s"]) == {"direct", "drop"}
    assert [len(r["files"]) for m in ("direct", "drop") for r in doc["runs"][m]] == [2, 2]  # one per writer
    assert all(r["total_mb_per_s"] > 0 for m in ("direct", "drop") for r in doc["runs"][m])
    assert list(data.iterdir()) == []
    assert "MiB/s of all writers together: direct" in capsys.readouterr().out


def test_the_direct_mode_opens_every_file_with_o_direct(tmp_path: Path) -> None:
    opened: list[int] = []
    real_open = os.open

    def recording_open(path, flags, *rest):  # noqa: ANN001, ANN202
        opened.append(flags)
        return real_open(path, flags, *rest)
    try:
        os.close(os.open(tmp_path / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644))
    except OSError:
        pytest.skip("no O_DIRECT on this file system")
    import unittest.mock
    with unittest.mock.patch.object(os, "open", recording_open):
        pagecache.write_files(str(tmp_path), "direct", 1, 1, 1, 64 * 1024)
    assert opened and all(f & os.O_DIRECT for f in opened)


@pytest.mark.parametrize("argv", [["--modes", "keep,fast"], ["--modes", "keep,keep"], ["--writers", "0"],
                                  ["--write-kb", "6"], ["--write-kb", "0"],
                                  # a file must be whole writes: 1 MiB is no 2 MiB write, nor 12 KiB ones
                                  ["--mb", "1", "--write-kb", "2048"], ["--mb", "1", "--write-kb", "12"]])
def test_bad_options_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        pagecache.main(argv)
    assert e.value.code == 2


@pytest.mark.parametrize("writers", [1, 2])
def test_a_directory_it_cannot_write_is_one_clear_error_not_a_hang(writers: int, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing"
    assert pagecache.main(["--writers", str(writers), "--files", "1", "--mb", "1", "--runs", "1",
                           "--dir", str(missing)]) == 1
    assert f"cannot open {missing}" in capsys.readouterr().err
