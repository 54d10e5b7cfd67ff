"""Content hashes of inputs and outputs, the code version of a step, and the git state.

A file's hash is the sha256 of its bytes. A directory's hash is the sha256 of its sorted
``relative path NUL file sha256 LF`` lines, so it depends on names and contents only (not on
mtimes or the order the filesystem lists them). A step's code version is the sha256 of the
sources of the packages and modules that implement it, hashed the same way.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiles.fileio import sha256_file

log = logging.getLogger(__name__)

GIT_TIMEOUT_S = 10.0


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


#: top-level packages of this project: imports of anything else (numpy, sklearn...) are not
#: followed (their versions are the environment's, see docs/pipeline.md)
PROJECT_PACKAGES = ("agent", "models", "safety", "sync", "tiles", "tools")


def _package_root(top: str) -> Path | None:
    """The directory of a top-level package, found without importing it."""
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def module_file(name: str) -> Path | None:
    """The source file of a project module or package (its ``__init__.py``), or None."""
    parts = name.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return None
    root = _package_root(parts[0])
    if root is None:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(name: str, path: Path) -> set[str]:
    """Project modules that ``name`` imports anywhere (function bodies included)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        return set()
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # kept if it is a module
    return {m for m in out if m.split(".")[0] in PROJECT_PACKAGES}


def import_closure(entries: tuple[str, ...]) -> dict[str, Path]:
    """Every project module reachable from ``entries`` by import statements, with its file.

    Imports inside functions count (steps import lazily). A package's ``__init__`` is followed
    when the package itself is imported (``from models import DemandTable``), not when only one
    of its submodules is (``from tools.pipeline.step import ...``), so a step does not depend
    on every sibling its package happens to re-export.
    """
    found: dict[str, Path] = {}
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        path = module_file(name)
        if path is None:
            continue
        found[name] = path
        todo.extend(_imports(name, path) - set(found))
    return found


def code_version(sources: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """(combined hash, per-module hash) of the project sources a step runs.

    ``sources`` are entry modules (the step's own module, packages it calls); the hash covers
    their import closure within this project (:func:`import_closure`). An entry that cannot be
    found hashes as ``missing``, so the step re-runs once it appears.
    """
    closure = import_closure(sources)
    parts: dict[str, str] = {name: sha256_file(p) for name, p in sorted(closure.items())}
    for name in sources:
        if name not in closure:
            parts[name] = "missing"
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
