"""Names taken from metadata, checked before they touch the filesystem.

Bundle ids and chunk hashes come from the fleet's signed index, file names from the index and
from a bundle's ``manifest.yaml``, ids again from the store's ``current.json``. A valid signature
says who wrote a name, not that it is safe as a path: a compromised or buggy publisher could sign
``../../victim``. Every such name goes through one of these checks first:

* a bundle id or a chunk hash is exactly 64 lowercase hex characters (a sha256);
* a bundle file name is a plain relative POSIX name: components separated by single ``/``, each
  non-empty, not ``.`` or ``..``, with no ``\\``, NUL or other control character, and no drive
  letter (``C:``) or leading ``/``.

A refusal is an :class:`~sync.errors.UnsafeNameError` (bad data: reject, keep the current bundle).
"""

from __future__ import annotations

import re

from sync.errors import UnsafeNameError

HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_FILE_NAME_CHARS = 255
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\:]")


def is_hex64(value: object) -> bool:
    return isinstance(value, str) and HEX64.fullmatch(value) is not None


def check_bundle_id(value: object, where: str = "metadata") -> str:
    """``value`` if it is a bundle id (64 lowercase hex), else UnsafeNameError."""
    if not is_hex64(value):
        raise UnsafeNameError(f"{where}: bundle id {value!r} is not 64 lowercase hex characters")
    assert isinstance(value, str)
    return value


def check_chunk_hash(value: object, where: str = "metadata") -> str:
    if not is_hex64(value):
        raise UnsafeNameError(f"{where}: chunk hash {value!r} is not 64 lowercase hex characters")
    assert isinstance(value, str)
    return value


def check_file_name(value: object, where: str = "metadata") -> str:
    """``value`` if it is a plain relative file name inside a bundle, else UnsafeNameError."""
    ok = (
        isinstance(value, str)
        and 0 < len(value) <= MAX_FILE_NAME_CHARS
        and not value.startswith("/")
        and _BAD_CHARS.search(value) is None
        and all(part not in ("", ".", "..") for part in value.split("/"))
    )
    if not ok:
        raise UnsafeNameError(f"{where}: file name {value!r} is not a plain relative name")
    assert isinstance(value, str)
    return value
