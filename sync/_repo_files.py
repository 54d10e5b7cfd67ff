"""The fleet root's files under :class:`~sync.repository.FleetRepository`: its layout, the
signing keys, the lock, the TUF metadata and target files, the published and rollout documents,
and putting back what a failed change wrote. The layout is in :mod:`sync.repository`."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]  # no __all__ there
from tuf.api.metadata import (  # type: ignore[attr-defined]  # no __all__ there
    Metadata,
    Root,
    Snapshot,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from sync._fs import atomic_write_bytes, read_bounded, sha256_bytes
from sync.errors import SyncStorageError

ROLES = ("root", "targets", "snapshot", "timestamp")
LIVE_ROLE = "live"  # delegated by targets (see the docstring of sync.repository)
LIVE_PATHS = ["live/*"]
INDEX_SCHEMA = 1
DEFAULT_CHUNK_BYTES = 64 * 1024
MAX_METADATA_BYTES = 5_000_000
_AREA = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def index_target_path(area: str) -> str:
    return f"areas/{area}/index.json"


def chunk_target_path(sha256: str) -> str:
    return f"chunks/{sha256}"


@dataclass(frozen=True)
class RepoConfig:
    """Lifetimes of the signed metadata and the chunk size of published files."""

    root_expiry_s: int = 365 * 86400
    targets_expiry_s: int = 90 * 86400
    snapshot_expiry_s: int = 7 * 86400
    timestamp_expiry_s: int = 86400  # re-sign at least daily: `nagashi fleet timestamp`
    chunk_bytes: int = DEFAULT_CHUNK_BYTES


def _serializer() -> JSONSerializer:
    return JSONSerializer(compact=False)


def _missing_dirs(folder: Path, stop: Path) -> list[Path]:
    """The folders from ``stop`` (exclusive) down to ``folder`` that do not exist yet,
    outermost first."""
    out: list[Path] = []
    while folder != stop and not folder.exists() and folder != folder.parent:
        out.append(folder)
        folder = folder.parent
    return out[::-1]


class RepoFiles:
    """The files of a TUF repository on the local filesystem (see :mod:`sync.repository`)."""

    def __init__(self, root: str | os.PathLike[str], config: RepoConfig | None = None) -> None:
        self.root = Path(root)
        self.config = config or RepoConfig()
        self.keys_dir = self.root / "keys"
        self.metadata_dir = self.root / "repo" / "metadata"
        self.targets_dir = self.root / "repo" / "targets"
        self.published_path = self.root / "published.json"
        self.rollouts_path = self.root / "rollouts.json"

    # ------------------------------------------------------------------ keys
    def _key_path(self, role: str) -> Path:
        return self.keys_dir / f"{role}.pem"

    def signer(self, role: str) -> CryptoSigner:
        p = self._key_path(role)
        try:
            pem = read_bounded(p, 64 * 1024)
            return CryptoSigner(load_pem_private_key(pem, password=None))
        except FileNotFoundError as e:
            raise SyncStorageError(
                f"{role} key not found at {p} (is it kept offline? bring it back for this step)"
            ) from e
        except (OSError, ValueError, TypeError) as e:
            raise SyncStorageError(f"{role} key at {p} is unreadable: {e}") from e

    def _write_key(self, role: str, signer: CryptoSigner) -> None:
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.keys_dir, 0o700)
        atomic_write_bytes(self._key_path(role), signer.private_bytes, mode=0o600)

    @contextlib.contextmanager
    def _lock(self, *, create: bool = False) -> Iterator[None]:
        """The repository's lock; the fleet root is created only by ``init`` (``create``),
        so that a mistyped ``--root`` is an error, not a new empty directory."""
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.root.is_dir():
            raise SyncStorageError(f"fleet root {self.root} is not a directory (mistyped --root?)")
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # ------------------------------------------------------------------ metadata io
    def _write_md(self, name: str, md: Metadata[Any], created: list[Path] | None = None) -> None:
        p = self.metadata_dir / name
        if created is not None and not p.exists():
            created.append(p)
        atomic_write_bytes(p, md.to_bytes(_serializer()))

    def _read_md(self, name: str) -> Metadata[Any]:
        p = self.metadata_dir / name
        try:
            return Metadata.from_bytes(read_bounded(p, MAX_METADATA_BYTES))
        except FileNotFoundError as e:
            raise SyncStorageError(f"{p} not found: run `nagashi fleet keys init` first") from e
        except (OSError, DeserializationError) as e:
            raise SyncStorageError(f"{p} is unreadable: {e}") from e

    def root_version(self) -> int:
        versions = [
            int(p.name.split(".", 1)[0])
            for p in self.metadata_dir.glob("*.root.json")
            if p.name.split(".", 1)[0].isdigit()
        ]
        if not versions:
            raise SyncStorageError(f"no root metadata in {self.metadata_dir}: run keys init")
        return max(versions)

    def root_md(self) -> Metadata[Root]:
        return self._read_md(f"{self.root_version()}.root.json")

    def trusted_root_path(self, version: int = 1) -> Path:
        """The root metadata a vehicle is provisioned with (bootstrap of its TUF client)."""
        return self.metadata_dir / f"{version}.root.json"

    def timestamp_md(self) -> Metadata[Timestamp]:
        return self._read_md("timestamp.json")

    def snapshot_md(self) -> Metadata[Snapshot]:
        v = self.timestamp_md().signed.snapshot_meta.version
        return self._read_md(f"{v}.snapshot.json")

    def targets_md(self) -> Metadata[Targets]:
        v = self.snapshot_md().signed.meta["targets.json"].version
        return self._read_md(f"{v}.targets.json")

    # ------------------------------------------------------------------ documents and targets
    def published(self) -> dict[str, Any]:
        try:
            doc = json.loads(read_bounded(self.published_path, MAX_METADATA_BYTES))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise SyncStorageError(f"{self.published_path} is unreadable: {e}") from e
        return doc if isinstance(doc, dict) else {}

    def _write_target(
        self, target_path: str, data: bytes, created: list[Path] | None = None
    ) -> bool:
        """Store a target under its consistent-snapshot name; False if it was there.
        A file (or folder) that did not exist before is appended to ``created``."""
        h = sha256_bytes(data)
        dirname, _, basename = target_path.rpartition("/")
        p = self.targets_dir / dirname / f"{h}.{basename}"
        existed = p.exists()
        if existed and p.stat().st_size == len(data):
            return False
        if created is not None:
            created.extend(_missing_dirs(p.parent, self.targets_dir))
        atomic_write_bytes(p, data)
        if created is not None and not existed:
            created.append(p)
        return True

    def rollouts(self) -> dict[str, Any]:
        """``"<area>/<cohort or _all>"`` -> rollout state (sync.rollout); running ones are
        signed as targets (sync.cohorts)."""
        try:
            doc = json.loads(read_bounded(self.rollouts_path, MAX_METADATA_BYTES))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise SyncStorageError(f"{self.rollouts_path} is unreadable: {e}") from e
        return doc if isinstance(doc, dict) else {}

    def _undo(self, created: list[Path], kept: dict[Path, bytes | None]) -> None:
        """Put back what a failed publish changed (best effort: the error is re-raised)."""
        for path, before in kept.items():
            with contextlib.suppress(OSError):
                if before is None:
                    path.unlink(missing_ok=True)
                elif not path.exists() or path.read_bytes() != before:
                    atomic_write_bytes(path, before)
        for path in reversed(created):
            with contextlib.suppress(OSError):
                if path.is_dir():
                    path.rmdir()
                else:
                    path.unlink(missing_ok=True)

    def retired_key_paths(self, role: str) -> list[Path]:
        return sorted((self.keys_dir / "retired").glob(f"{role}-*.pem"))
