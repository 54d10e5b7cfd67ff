"""Content hashes of inputs and outputs, the code version of a step, and the git state.

A file's hash is the sha256 of its bytes. A directory's hash is the sha256 of its sorted
``relative path NUL file sha256 LF`` lines, so it depends on names and contents only (not on
mtimes or the order the filesystem lists them). A step's code version is the sha256 of the
sources of the packages and modules that implement it, hashed the same way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 20
GIT_TIMEOUT_S = 10.0


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def _tree_lines(root: Path, suffixes: tuple[str, ...] | None) -> list[str]:
    lines: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in filenames:
            if suffixes is not None and not name.endswith(suffixes):
                continue
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            lines.append(f"{rel}\0{sha256_file(p)}\n")
    lines.sort()
    return lines


def sha256_tree(root: str | os.PathLike[str], suffixes: tuple[str, ...] | None = None) -> str:
    """Hash of a directory's files (names and contents), optionally only those with suffixes."""
    h = hashlib.sha256()
    for line in _tree_lines(Path(root), suffixes):
        h.update(line.encode("utf-8"))
    return h.hexdigest()


def sha256_path(path: str | os.PathLike[str]) -> str:
    """Hash of a file, or of a directory tree; raises FileNotFoundError when absent."""
    p = Path(path)
    if p.is_dir():
        return "tree:" + sha256_tree(p)
    if p.is_file():
        return sha256_file(p)
    raise FileNotFoundError(str(p))


def sha256_json(value: Any) -> str:
    """Hash of a JSON-able value in canonical form (sorted keys, no spaces)."""
    data = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def source_paths(name: str) -> Path:
    """Where a package (its directory) or a module (its file) lives, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ModuleNotFoundError(name)
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if spec.origin is None:
        raise ModuleNotFoundError(f"{name} has no source file")
    return Path(spec.origin)


def code_version(sources: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """(combined hash, per-source hash) of the Python sources of packages/modules ``sources``.

    A source that cannot be found hashes as ``missing`` (so the step re-runs once it appears).
    """
    parts: dict[str, str] = {}
    for name in sorted(set(sources)):
        try:
            p = source_paths(name)
        except (ModuleNotFoundError, ValueError):
            parts[name] = "missing"
            continue
        parts[name] = sha256_tree(p, (".py",)) if p.is_dir() else sha256_file(p)
    return sha256_json(parts), parts


@dataclass(frozen=True)
class GitState:
    commit: str | None  # None outside a git checkout
    dirty: bool | None  # tracked or untracked changes in the working tree

    def to_json(self) -> dict[str, Any]:
        return {"commit": self.commit, "dirty": self.dirty}


def git_state(repo: Path) -> GitState:
    """The checked-out commit and whether the working tree differs from it."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain"],
            check=True,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("no git state for %s: %s", repo, e)
        return GitState(None, None)
    return GitState(commit, bool(status.strip()))
