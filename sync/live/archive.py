"""Every accepted snapshot kept once, content-addressed, as received (:class:`SnapshotArchive`):
what replay reads back."""

from __future__ import annotations

import re
from pathlib import Path

from sync._fs import atomic_write_bytes, sha256_bytes, storage_errors
from sync.errors import LiveInputError, SyncStorageError
from sync.live.envelope import envelope_body
from sync.live.protocol import _AREA
from sync.live.snapshot import Snapshot, decode_body


class SnapshotArchive:
    """Every accepted snapshot, once per version: ``<dir>/<area>/<version>.<sha256>.live``
    holds the signed envelope exactly as received (atomic write). Replay reads it back with
    :meth:`get`; the tick log names a snapshot by its version and sha256."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def _area_dir(self, area: str) -> Path:
        if not _AREA.match(area):
            raise LiveInputError(f"bad area name {area!r}")
        return self.dir / area

    @storage_errors
    def put(self, data: bytes, snap: Snapshot) -> Path:
        sha = sha256_bytes(data)
        p = self._area_dir(snap.area) / f"{snap.version}.{sha}.live"
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(p, data)
        return p

    def _find(self, area: str, version: int | None, sha256: str | None) -> Path | None:
        v = "*" if version is None else str(int(version))
        h = "*" if sha256 is None else sha256
        if h != "*" and not re.fullmatch(r"[0-9a-f]{64}", h):
            raise LiveInputError("sha256 must be 64 lowercase hex")
        found = sorted(self._area_dir(area).glob(f"{v}.{h}.live"))
        return found[0] if found else None

    @storage_errors
    def get(self, area: str, *, version: int | None = None, sha256: str | None = None) -> Snapshot:
        """The stored snapshot of ``area`` with this version and/or sha256 (content checked;
        the signature was checked when it was accepted). SyncStorageError if absent."""
        if version is None and sha256 is None:
            raise LiveInputError("name a snapshot by version or sha256")
        p = self._find(area, version, sha256)
        if p is None:
            raise SyncStorageError(
                f"no live snapshot of {area} with version {version} / sha256 {sha256}"
            )
        data = p.read_bytes()
        sha = sha256_bytes(data)
        if sha != p.name.split(".")[1]:
            raise SyncStorageError(f"{p} is damaged (its content hash differs from its name)")
        body = envelope_body(data)
        return decode_body(body, sha256=sha)

    def highest_version(self, area: str) -> int:
        d = self._area_dir(area)
        if not d.is_dir():
            return 0
        vs = [int(p.name.split(".")[0]) for p in d.glob("*.live") if p.name.split(".")[0].isdigit()]
        return max(vs, default=0)

    @storage_errors
    def prune(self, area: str, keep: int) -> int:
        """Keep the ``keep`` highest versions of ``area``; returns the files removed."""
        d = self._area_dir(area)
        files = sorted(
            (p for p in d.glob("*.live") if p.name.split(".")[0].isdigit()),
            key=lambda p: int(p.name.split(".")[0]),
        )
        gone = files[: max(0, len(files) - keep)]
        for p in gone:
            p.unlink(missing_ok=True)
        return len(gone)
