"""Durable file helpers shared by every layer (tiles is the one package all may import).

* :func:`atomic_write_bytes`: temp file in the same folder, fsync, ``os.replace``, fsync of the
  folder: a reader (or a power cut) sees the old file or the new one, never a part.
* :func:`sha256_file`: the one file hash of the project (bundles, manifests, pipeline inputs).
* :func:`one_line_error`: an exception (a YAML syntax error, say) as one line for the user.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

HASH_BLOCK_BYTES = 1 << 20


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` atomically and durably (see the module docstring); returns
    the path. OSError (disk full, permissions) is the caller's to wrap."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(p.parent)
    return p


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = HASH_BLOCK_BYTES) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def one_line_error(e: BaseException) -> str:
    """``e`` as one line: a YAML error (PyYAML's are several lines, with a source excerpt)
    becomes ``line L, column C: problem (context)``; any other message has its lines joined.
    Duck-typed on PyYAML's ``problem``/``problem_mark`` so that tiles needs no YAML."""
    problem = getattr(e, "problem", None)
    mark = getattr(e, "problem_mark", None)
    if isinstance(problem, str) and mark is not None:
        where = f"line {getattr(mark, 'line', 0) + 1}, column {getattr(mark, 'column', 0) + 1}"
        context = getattr(e, "context", None)
        return f"{where}: {problem}" + (f" ({context})" if isinstance(context, str) else "")
    reason, position = getattr(e, "reason", None), getattr(e, "position", None)
    if isinstance(reason, str) and isinstance(position, int):  # yaml.reader.ReaderError
        return f"character {position}: {reason}"
    return "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
