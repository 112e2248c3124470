"""Packaging: every folder of the three layers is installed, under names that cannot collide.

``cli/`` and ``stores/`` are generic names; pyproject installs them as ``clipcache.cli`` and
``clipcache.stores`` (package-dir), so another distribution's top-level ``cli`` or ``stores``
can neither shadow them nor be shadowed.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"cachekit": "cachekit", "cli": "clipcache.cli", "stores": "clipcache.stores"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed():
    """A new sub-package must be added to pyproject's list, or the wheel would lack it."""
    setup = _pyproject()["tool"]["setuptools"]
    listed = set(setup["packages"])
    for folder, dotted in FOLDERS.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT / folder).parts
            name = ".".join([dotted, *rel])
            assert name in listed, f"{init.parent} is not in pyproject's [tool.setuptools] packages as {name}"
    assert setup["package-dir"] == {"clipcache.cli": "cli", "clipcache.stores": "stores"}


def test_installed_names_are_namespaced():
    """The console script and the layers resolve to this checkout under their installed names."""
    assert _pyproject()["project"]["scripts"]["clipcache"] == "clipcache.cli.main:main"
    for folder, dotted in FOLDERS.items():
        mod = importlib.import_module(dotted)
        assert Path(mod.__file__).resolve().parent == (ROOT / folder).resolve(), dotted
