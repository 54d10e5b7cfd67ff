"""The code version a decision was made with: the package version and a hash of the sources.

Replay compares it with the logged one: the same bundle and inputs give the same decision only
with the same decision code (``tiles``, ``models``, ``safety``, ``agent``).
"""

from __future__ import annotations

import functools
import hashlib
from importlib import metadata
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
    try:
        version = metadata.version("nagashi")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"package": version, "sha256": h.hexdigest()}
