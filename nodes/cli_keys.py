"""``loom keys add NAME --roles ...`` and ``loom keys list``: the gateway's API keys.

``add`` makes a random key, prints it once, and writes only its hash into the config file's
``security.api_keys`` (the line is added in place, so the file's comments and layout stay).
The edited file is validated before it is written; the key takes effect when the gateway
restarts.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import click
import yaml

from engines.durable import replace_file
from fabric.apikeys import ROLES, generate_key, hash_key
from fabric.config import DEFAULT_CONFIG_PATH, ConfigError, load_config, parse_config
from fabric.errors import FabricError, LoomError
from nodes.cli_common import CONFIG_HELP, from_group


def add_key_line(text: str, entry: str) -> str:
    """``text`` with ``entry`` (a flow mapping) appended to ``security.api_keys``."""
    lines = text.splitlines()
    top = [i for i, ln in enumerate(lines) if re.match(r"^security:\s*(#.*)?$", ln)]
    if not top:
        return text.rstrip("\n") + f"\n\nsecurity:\n  api_keys:\n    - {entry}\n"
    start = top[0]
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^[^\s#]", lines[i])), len(lines))
    for j in range(start + 1, end):
        m = re.match(r"^(\s+)api_keys:\s*(\[\s*\])?\s*(#.*)?$", lines[j])
        if m is None:
            if re.match(r"^\s+api_keys:", lines[j]):
                raise FabricError("security.api_keys is written in a form `loom keys add` cannot extend: "
                                  "use a block list (one `- {...}` per line)")
            continue
        indent = m.group(1)
        if m.group(2) is not None:
            lines[j] = f"{indent}api_keys:"
        last = j
        while last + 1 < end and (lines[last + 1].startswith(indent + " ") or lines[last + 1].startswith(indent + "-")):
            last += 1
        lines.insert(last + 1, f"{indent}  - {entry}")
        return "\n".join(lines) + "\n"
    lines.insert(start + 1, f"  api_keys:\n    - {entry}")
    return "\n".join(lines) + "\n"


@click.group()
def keys() -> None:
    """API keys of the gateway (the config holds only their hashes)."""


@keys.command("add")
@click.argument("name")
@click.option("--roles", required=True, help=f"comma-separated: {', '.join(ROLES)}")
@click.option("-c", "--config", "config", default=None, envvar="LOOM_CONFIG", callback=from_group,
              help="the config file to add the key to")
def add(name: str, roles: str, config: str | None) -> None:
    """Make a key NAME with ROLES: prints the key once and writes its hash into the config."""
    path = Path(config or DEFAULT_CONFIG_PATH)
    wanted = [r.strip() for r in roles.split(",") if r.strip()]
    bad = [r for r in wanted if r not in ROLES]
    if not wanted or bad:
        raise FabricError(f"--roles must be a comma-separated subset of {', '.join(ROLES)}" + (f" (not {', '.join(bad)})" if bad else ""))
    if not re.match(r"^[A-Za-z0-9._-]{1,64}$", name):
        raise FabricError("NAME must be 1 to 64 letters, digits, '.', '_' or '-'")
    current = load_config(path)
    if any(k.name == name for k in current.security.api_keys):
        raise FabricError(f"{path}: a key named {name!r} exists already")
    key = generate_key()
    entry = f'{{name: {name}, key_hash: "{hash_key(key)}", roles: [{", ".join(wanted)}]}}'
    text = add_key_line(path.read_text(encoding="utf-8"), entry)
    try:
        checked = parse_config(yaml.safe_load(text), str(path), environ={})
    except (ConfigError, yaml.YAMLError) as e:
        raise FabricError(f"{path}: the edited config would not load ({e}); nothing written") from e
    if not any(k.name == name for k in checked.security.api_keys):
        raise FabricError(f"{path}: could not add the key; nothing written")
    try:  # atomically and durably, keeping the file's mode (it holds the key hashes)
        replace_file(path, text.encode("utf-8"), mode=stat.S_IMODE(path.stat().st_mode))
    except (OSError, LoomError) as e:
        raise FabricError(f"{path}: cannot write the config ({e}); nothing written") from e
    click.echo(key)
    click.echo(f"loom: key {name!r} ({', '.join(wanted)}) added to {path}; it is shown only now. "
               "Restart the gateway to use it (kill the gateway's pid that `loom status` shows: the supervisor "
               "starts it again, reading the config anew).", err=True)


@keys.command("list")
@click.option("-c", "--config", "config", default=None, envvar="LOOM_CONFIG", callback=from_group,
              help=CONFIG_HELP)
def list_keys(config: str | None) -> None:
    """Names and roles of the configured keys (the keys themselves are not stored)."""
    cfg = load_config(config)
    for k in cfg.security.api_keys:
        click.echo(f"{k.name}\t{','.join(k.roles)}")
    if not cfg.security.api_keys:  # said on stderr: stdout stays one line per key for scripts
        click.echo(f"no API keys in {cfg.source} (the dev admin key in the data dir works; "
                   "add one with: loom keys add NAME --roles ...)", err=True)


COMMANDS = [keys]
