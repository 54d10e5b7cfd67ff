"""Small filesystem helpers: atomic writes, fsync, hashing, bounded reads."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from sync.errors import SyncDataError, SyncStorageError

P = ParamSpec("P")
R = TypeVar("R")


def storage_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap an ``OSError`` escaping ``fn`` (disk full, permissions) as SyncStorageError."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except OSError as e:
            raise SyncStorageError(f"{fn.__qualname__}: {e}") from e

    return wrapper


HASH_BLOCK_BYTES = 1 << 20


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path``: temp file in the same folder, fsync, replace, fsync dir."""
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


def fsync_file(path: str | os.PathLike[str]) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(HASH_BLOCK_BYTES):
            h.update(block)
    return h.hexdigest()


def read_bounded(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """Read a whole file, refusing one larger than ``max_bytes``."""
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise SyncDataError(f"{path} is larger than {max_bytes} bytes")
    return data


def copy_file_durably(src: Path, dst: Path) -> None:
    """Hard-link ``src`` (an immutable bundle file) to ``dst``, or copy and fsync it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        dst.unlink()
    try:
        os.link(src, dst)
        return
    except OSError:
        pass
    tmp = dst.with_name(f".{dst.name}.tmp")
    with open(src, "rb") as fi, open(tmp, "wb") as fo:
        while block := fi.read(HASH_BLOCK_BYTES):
            fo.write(block)
        fo.flush()
        os.fsync(fo.fileno())
    os.replace(tmp, dst)
