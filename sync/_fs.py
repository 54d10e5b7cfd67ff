"""Small filesystem helpers: atomic writes, fsync, hashing, bounded reads."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from sync.errors import SyncDataError, SyncStorageError
from tiles.fileio import HASH_BLOCK_BYTES as HASH_BLOCK_BYTES  # re-exported for sync's modules
from tiles.fileio import atomic_write_bytes as atomic_write_bytes
from tiles.fileio import fsync_dir as fsync_dir
from tiles.fileio import sha256_file as sha256_file

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


def fsync_file(path: str | os.PathLike[str]) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
