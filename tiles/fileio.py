"""Durable file helpers shared by every layer (tiles is the one package all may import).

* :func:`atomic_write_bytes`: temp file in the same folder, fsync, ``os.replace``, fsync of the
  folder: a reader (or a power cut) sees the old file or the new one, never a part.
* :func:`sha256_file`: the one file hash of the project (bundles, manifests, pipeline inputs).
* :func:`real_data_dir`: where the real data (OSM extracts, trip records) lives: the demo, the
  benchmarks and the tests all find it here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

HASH_BLOCK_BYTES = 1 << 20
#: the checkout this package was imported from (an editable install or a source tree)
REPO_DIR = Path(__file__).resolve().parent.parent


def sqlite_readonly_uri(path: str | os.PathLike[str]) -> str:
    """The SQLite URI that opens ``path`` read-only and immutable (for files never written while
    open: bundle tiles). Built with ``Path.as_uri()``, so a ``?``, ``#`` or ``%`` in the path is
    escaped instead of being read as the start of the URI's query."""
    return Path(path).resolve().as_uri() + "?mode=ro&immutable=1"


def real_data_dir() -> Path:
    """The folder of real data: ``$NAGASHI_DATA`` if set, else the repository's own ``data/``;
    a ``../shared/data`` beside the checkout only when the repository has no ``data/``."""
    env = os.environ.get("NAGASHI_DATA")
    if env:
        return Path(env).resolve()
    own = REPO_DIR / "data"
    if (own / "osm").is_dir():
        return own
    shared = REPO_DIR.parent / "shared" / "data"
    return shared if shared.is_dir() else own


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
