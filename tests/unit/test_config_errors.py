"""Config files that are not text, and YAML errors, are one line naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.config import ConfigError, load_config


def test_binary_config_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"nodes:\n  \xd0\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=rf"^{path}: "):
        load_config(path, environ={})


def test_yaml_syntax_error_is_one_line_with_the_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("nodes:\n  a: [1, 2\n  b: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: not valid YAML") and "line " in message
