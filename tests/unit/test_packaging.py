"""The wheel contains every subpackage."""

from __future__ import annotations

import tomllib

from tests.harness import ROOT


def test_the_wheel_includes_every_subpackage() -> None:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = tool.get("packages")
    on_disk = {str(p.parent.relative_to(ROOT)).replace("/", ".")
               for top in ("fabric", "engines", "nodes", "webui", "bench") for p in (ROOT / top).rglob("__init__.py")}
    if isinstance(packages, list):
        missing = on_disk - set(packages)
    else:
        include = packages["find"]["include"]
        from fnmatch import fnmatch
        missing = {p for p in on_disk if not any(fnmatch(p, pat) for pat in include)}
    assert not missing, f"not packaged: {sorted(missing)}"
