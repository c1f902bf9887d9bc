"""``loom keys add`` writes the new key's hash into the config through
``engines.durable.replace_file``: the whole file or nothing, its mode kept (it holds the key
hashes), no temp file left; the key is printed once and the edited config loads."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from click.testing import CliRunner

from fabric.apikeys import hash_key
from fabric.config import load_config
from nodes.cli import main

SOURCE = Path(__file__).resolve().parents[2] / "config" / "single-node.yaml"


def test_a_key_is_added_to_the_config_keeping_its_mode(tmp_path: Path) -> None:
    config = tmp_path / "cluster.yaml"
    shutil.copy(SOURCE, config)
    os.chmod(config, 0o600)
    result = CliRunner().invoke(main, ["keys", "add", "ci", "--roles", "produce,read", "-c", str(config)])
    assert result.exit_code == 0, result.output
    key = result.output.splitlines()[0].strip()
    keys = {k.name: k for k in load_config(str(config), environ={}).security.api_keys}
    assert keys["ci"].key_hash == hash_key(key) and list(keys["ci"].roles) == ["produce", "read"]
    assert config.stat().st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path)) == ["cluster.yaml"]


def test_keys_list_says_so_when_there_are_none(tmp_path: Path) -> None:
    config = tmp_path / "cluster.yaml"
    shutil.copy(SOURCE, config)
    assert not load_config(str(config), environ={}).security.api_keys
    result = CliRunner().invoke(main, ["keys", "list", "-c", str(config)])
    assert result.exit_code == 0 and result.stdout == "" and "no API keys" in result.stderr, result.stderr
