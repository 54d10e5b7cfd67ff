"""The code version a decision was made with: the package version and a hash of the sources.

Replay compares it with the logged one: the same bundle and inputs give the same decision only
with the same decision code (``tiles``, ``models``, ``safety``, ``agent``). Computed once per
process, on the first call (the trip log's ``start`` record).
"""

from __future__ import annotations

import functools
import hashlib
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DECISION_PACKAGES = ("tiles", "models", "safety", "agent")


@functools.cache
def code_version() -> dict[str, Any]:
    """``{"package": "0.1.0", "sha256": <hash of the decision packages' .py files>}``."""
    h = hashlib.sha256()
    for pkg in DECISION_PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            if p.name.startswith("bench_"):
                continue
            h.update(p.relative_to(ROOT).as_posix().encode())
            h.update(b"\0")
            h.update(p.read_bytes())
            h.update(b"\0")
    return {"package": package_version(), "sha256": h.hexdigest()}


@functools.cache
def package_version() -> str:
    """nagashi's version: the source tree's ``pyproject.toml`` when the sources run from one
    (a checkout, an editable install: the version of the sources hashed, read in ~1 ms),
    else the installed distribution's metadata (``importlib.metadata``: ~40 ms of imports and
    a scan of sys.path, which the first tick no longer pays, issue 20); "unknown" without."""
    try:
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        if project["name"] == "nagashi" and isinstance(project["version"], str):
            return str(project["version"])
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError):
        pass
    from importlib import metadata

    try:
        return metadata.version("nagashi")
    except metadata.PackageNotFoundError:
        return "unknown"
