"""pyproject's mypy configuration keeps up with the package: every module the
public API comes from is checked strictly, and nothing is excluded."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def _mypy() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]


def _public_modules() -> set[str]:
    """tgreen itself, tgreen.monkey and every tgreen module tgreen/__init__.py imports from."""
    tree = ast.parse((ROOT / "tgreen" / "__init__.py").read_text())
    mods = {"tgreen", "tgreen.monkey"}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            mods.add(f"tgreen.{node.module}")
    mods.discard("tgreen._originals")   # imported for its side effect, exports nothing
    return mods


def test_every_module_of_the_public_api_is_checked_strictly():
    strict = [o for o in _mypy()["overrides"] if o.get("disallow_untyped_defs")]
    assert len(strict) == 1
    assert set(strict[0]["module"]) == _public_modules()


def test_mypy_checks_the_whole_package_and_excludes_nothing():
    cfg = _mypy()
    assert cfg["files"] == ["tgreen"]
    assert "exclude" not in cfg
    for override in cfg["overrides"]:
        assert not override.get("ignore_errors"), override
