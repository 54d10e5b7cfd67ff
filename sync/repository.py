"""The fleet's TUF repository: keys, publishing bundles, re-signing, key rotation.

Files under the fleet root (``nagashi fleet … --root DIR``)::

    keys/<role>.pem             ed25519 private keys (PKCS#8 PEM, mode 0600) of root, targets,
                                snapshot, timestamp and live; keys/retired/ keeps rotated-out keys
    repo/metadata/N.root.json   every root version (clients walk the chain)
    repo/metadata/N.targets.json, N.snapshot.json, timestamp.json
    repo/targets/chunks/<h>.<h> bundle file chunks, content-addressed (consistent snapshots)
    repo/targets/areas/<area>/<h>.index.json   the area's bundle index
    published.json              area -> index document (what the next targets must list)
    fleet.sqlite                log ingest and tokens (see sync.logstore)

Each bundle file is cut into fixed-size chunks (default 64 KiB, a multiple of the tile
database's 8 KiB page); every chunk is its own TUF target named by its sha256, so a bundle in
which one tile changed transfers only the chunks that differ. The area index (also a target)
lists the bundle's files with their sha256, size and chunk hashes. ``timestamp.json`` is
written last: until it is replaced, clients see the previous consistent state.

The ``live`` key signs the live snapshots (:mod:`sync.live`). python-tuf's ``Root`` holds only
the four top-level roles, so ``live`` is a role **delegated by targets**: targets.json lists its
key under ``delegations`` (terminating, paths ``live/*``, which match no bundle target, so the
key has no say over bundles and ngclient never looks it up). The cab trusts it through the
chain root -> targets it already verifies; ``fleet keys rotate --role live`` needs only the
targets key (kept on the server, like the live key that signs every 30 s) and signs a new
targets version; cabs take the new key at their next metadata refresh.

The class is laid out in three layers: :mod:`sync._repo_files` (the files: layout, keys,
lock, metadata, targets, undo), :mod:`sync._repo_signing` (the target lists and the signed
chain) and this module (the operations: init, publish, staged rollouts, rotation, prune).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]  # no __all__ there
from tuf.api.metadata import Metadata, Root  # type: ignore[attr-defined]  # no __all__ there

from sync._fs import atomic_write_bytes, sha256_bytes, storage_errors
from sync._repo_files import (
    _AREA,
    DEFAULT_CHUNK_BYTES,
    INDEX_SCHEMA,
    LIVE_PATHS,
    LIVE_ROLE,
    MAX_METADATA_BYTES,
    ROLES,
    RepoConfig,
    chunk_target_path,
    index_target_path,
)
from sync._repo_signing import RepoSigning, _expiry
from sync.bundle import MANIFEST_FILE, Bundle
from sync.errors import BundleVerifyError, SyncDataError, SyncStorageError

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "INDEX_SCHEMA",
    "LIVE_PATHS",
    "LIVE_ROLE",
    "MAX_METADATA_BYTES",
    "ROLES",
    "FleetRepository",
    "PublishResult",
    "RepoConfig",
    "chunk_target_path",
    "index_target_path",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishResult:
    area: str
    bundle_id: str
    targets_version: int
    chunks_total: int
    chunks_new: int
    bytes_new: int


class FleetRepository(RepoSigning):
    """A TUF repository on the local filesystem, served by ``nagashi fleet serve``."""

    # ------------------------------------------------------------------ init
    @storage_errors
    def init(self, now: datetime) -> Path:
        """Generate the keys (the four TUF roles and live) and version 1 of every metadata file."""
        if (self.metadata_dir / "1.root.json").exists():
            raise SyncStorageError(f"{self.root} already holds a repository")
        with self._lock(create=True):
            self.metadata_dir.mkdir(parents=True, exist_ok=True)
            self.targets_dir.mkdir(parents=True, exist_ok=True)
            signers = {role: CryptoSigner.generate_ed25519() for role in (*ROLES, LIVE_ROLE)}
            root = Root(expires=_expiry(now, self.config.root_expiry_s), consistent_snapshot=True)
            for role in ROLES:
                root.add_key(signers[role].public_key, role)
            for role, s in signers.items():
                self._write_key(role, s)
            md_root = Metadata(root)
            md_root.sign(signers["root"])
            self._write_md("1.root.json", md_root)
            atomic_write_bytes(self.published_path, b"{}")
            self._sign_chain(now, {}, bump_targets=True, live_key=signers[LIVE_ROLE])
        log.info("initialised fleet repository at %s", self.root)
        return self.trusted_root_path()

    # ------------------------------------------------------------------ publishing
    def _check_can_publish(self) -> None:
        """Everything ``publish`` needs, checked before it writes a byte: the fleet root is an
        initialised repository, its metadata is readable, and the targets, snapshot and
        timestamp keys are present, loadable and the ones root trusts for their role."""
        if not self.root.is_dir():
            raise SyncStorageError(f"fleet root {self.root} is not a directory (mistyped --root?)")
        if not (self.metadata_dir / "1.root.json").is_file():
            raise SyncStorageError(
                f"{self.root} holds no fleet repository: run `nagashi fleet keys init` first"
            )
        root = self.root_md().signed
        self.targets_md()  # timestamp -> snapshot -> targets, all readable
        self.published()
        for role in ("targets", "snapshot", "timestamp"):
            keyid = self.signer(role).public_key.keyid
            if keyid not in root.roles[role].keyids:
                raise SyncStorageError(
                    f"{role} key at {self._key_path(role)} is not the {role} key root "
                    f"version {root.version} trusts (a key of another role or repository?)"
                )

    @storage_errors
    def publish(
        self, bundle_dir: str | os.PathLike[str], area: str, now: datetime
    ) -> PublishResult:
        """Verify a bundle, store its chunks, sign a new targets/snapshot/timestamp."""
        if not _AREA.match(area):
            raise SyncDataError(f"bad area name {area!r} (use [a-z0-9_-])")
        bundle = Bundle(bundle_dir)
        bundle.verify()
        if bundle.area is not None and bundle.area != area:
            raise BundleVerifyError(f"bundle {bundle.bundle_id[:12]} is for area {bundle.area!r}")
        self._check_can_publish()  # before the lock: a mistyped root is not created
        with self._lock():
            # what a failure half-way must restore: files and folders created, and the two
            # files overwritten in place (published.json, timestamp.json)
            created: list[Path] = []
            kept = {
                path: path.read_bytes() if path.exists() else None
                for path in (self.published_path, self.metadata_dir / "timestamp.json")
            }
            try:
                index, total, new, new_bytes = self._store_bundle(bundle, area, created)
                data = json.dumps(index, sort_keys=True, indent=1).encode()
                self._write_target(index_target_path(area), data, created)
                published = self.published()
                published[area] = index
                atomic_write_bytes(
                    self.published_path, json.dumps(published, sort_keys=True).encode()
                )
                version = self._sign_chain(now, published, bump_targets=True, created=created)
            except BaseException:
                self._undo(created, kept)
                raise
        log.info(
            "published %s for %s: %d/%d chunks new (%d bytes), targets v%d",
            bundle.bundle_id[:12],
            area,
            new,
            total,
            new_bytes,
            version,
        )
        return PublishResult(area, bundle.bundle_id, version, total, new, new_bytes)

    def _store_bundle(
        self, bundle: Bundle, area: str, created: list[Path]
    ) -> tuple[dict[str, Any], int, int, int]:
        """Store a verified bundle's chunks; its index, and chunks total/new, bytes new."""
        step = self.config.chunk_bytes
        files: dict[str, Any] = {}
        new = total = new_bytes = 0
        for name in sorted([*bundle.files, MANIFEST_FILE]):
            chunks: list[str] = []
            p = bundle.path / name
            with open(p, "rb") as fh:
                while block := fh.read(step):
                    h = sha256_bytes(block)
                    chunks.append(h)
                    total += 1
                    if self._write_target(chunk_target_path(h), block, created):
                        new += 1
                        new_bytes += len(block)
            if name == MANIFEST_FILE:
                size, sha = p.stat().st_size, bundle.bundle_id
            else:
                size, sha = bundle.files[name].size_bytes, bundle.files[name].sha256
            files[name] = {"sha256": sha, "size_bytes": size, "chunks": chunks}
        index = {
            "schema_version": INDEX_SCHEMA,
            "area": area,
            "bundle_id": bundle.bundle_id,
            "manifest_sha256": bundle.manifest_sha256,
            "chunk_bytes": step,
            "files": files,
        }
        return index, total, new, new_bytes

    # ------------------------------------------------------------------ staged rollouts
    @storage_errors
    def stage_candidate(self, bundle_dir: str | os.PathLike[str], area: str) -> dict[str, Any]:
        """Verify a bundle and store its chunks (not yet signed); its index."""
        if not _AREA.match(area):
            raise SyncDataError(f"bad area name {area!r} (use [a-z0-9_-])")
        bundle = Bundle(bundle_dir)
        bundle.verify()
        if bundle.area is not None and bundle.area != area:
            raise BundleVerifyError(f"bundle {bundle.bundle_id[:12]} is for area {bundle.area!r}")
        self._check_can_publish()
        with self._lock():
            index, *_ = self._store_bundle(bundle, area, [])
        return index

    @storage_errors
    def sign_rollouts(
        self, rollouts: dict[str, Any], now: datetime, published: dict[str, Any] | None = None
    ) -> int:
        """Write the rollout state (and, when given, the areas' published indexes) and sign
        new targets, snapshot and timestamp; the new targets version."""
        self._check_can_publish()
        with self._lock():
            created: list[Path] = []
            kept = {
                path: path.read_bytes() if path.exists() else None
                for path in (
                    self.published_path,
                    self.rollouts_path,
                    self.metadata_dir / "timestamp.json",
                )
            }
            try:
                if published is not None:
                    for area, index in published.items():
                        data = json.dumps(index, sort_keys=True, indent=1).encode()
                        self._write_target(index_target_path(area), data, created)
                    atomic_write_bytes(
                        self.published_path, json.dumps(published, sort_keys=True).encode()
                    )
                for data_path, data in self._rollout_files(rollouts).items():
                    self._write_target(data_path, data, created)
                atomic_write_bytes(
                    self.rollouts_path, json.dumps(rollouts, sort_keys=True, indent=1).encode()
                )
                return self._sign_chain(now, self.published(), bump_targets=True, created=created)
            except BaseException:
                self._undo(created, kept)
                raise

    # ------------------------------------------------------------------ rotation
    @storage_errors
    def rotate_key(self, role: str, now: datetime) -> int:
        """Replace ``role``'s key: a new root version signed by the old and new root keys,
        then targets, snapshot and timestamp re-signed. Returns the new root version."""
        if role not in (*ROLES, LIVE_ROLE):
            raise SyncDataError(f"unknown role {role!r}; one of {', '.join((*ROLES, LIVE_ROLE))}")
        if role == LIVE_ROLE:
            return self._rotate_live(now)
        with self._lock():
            old_root_signer = self.signer("root")
            md_root: Metadata[Root] = self.root_md()
            root = md_root.signed
            new_signer = CryptoSigner.generate_ed25519()
            for keyid in list(root.roles[role].keyids):
                root.revoke_key(keyid, role)
            root.add_key(new_signer.public_key, role)
            root.version += 1
            root.expires = _expiry(now, self.config.root_expiry_s)
            md_root.signatures.clear()
            md_root.sign(old_root_signer, append=True)
            if role == "root":
                md_root.sign(new_signer, append=True)
            retired = self.keys_dir / "retired"
            retired.mkdir(parents=True, exist_ok=True)
            old_id = self.signer(role).public_key.keyid
            os.replace(self._key_path(role), retired / f"{role}-{old_id[:16]}.pem")
            self._write_key(role, new_signer)
            self._write_md(f"{root.version}.root.json", md_root)
            self._sign_chain(now, self.published(), bump_targets=True)
        log.info("rotated the %s key: root v%d", role, root.version)
        return root.version

    def _rotate_live(self, now: datetime) -> int:
        """A new live key delegated by a new targets version (the root is unchanged; the
        targets key is needed). Also gives a repository from before the live role its key."""
        with self._lock():
            self.signer("targets")  # present before anything changes
            new_signer = CryptoSigner.generate_ed25519()
            old = self._key_path(LIVE_ROLE)
            if old.exists():
                retired = self.keys_dir / "retired"
                retired.mkdir(parents=True, exist_ok=True)
                old_id = self.signer(LIVE_ROLE).public_key.keyid
                os.replace(old, retired / f"{LIVE_ROLE}-{old_id[:16]}.pem")
            self._write_key(LIVE_ROLE, new_signer)
            tv = self._sign_chain(now, self.published(), bump_targets=True, live_key=new_signer)
        log.info("rotated the live key: targets v%d", tv)
        return self.root_version()

    @storage_errors
    def prune(self, now_s: float, min_age_s: float = 7 * 86400, keep_versions: int = 10) -> int:
        """Delete targets no longer signed and metadata versions older than the last
        ``keep_versions``, when older than ``min_age_s`` (a cab mid-download can finish).
        Root versions are kept (cabs walk the chain). Returns the number of files removed."""
        removed = 0
        with self._lock():
            signed = self.targets_md().signed.targets
            keep: set[Path] = set()
            for path, info in signed.items():
                dirname, _, basename = path.rpartition("/")
                keep.add(self.targets_dir / dirname / f"{info.hashes['sha256']}.{basename}")
            for p in self.targets_dir.rglob("*"):
                if p.is_file() and p not in keep and now_s - p.stat().st_mtime >= min_age_s:
                    p.unlink()
                    removed += 1
            ts = self.timestamp_md().signed
            newest = {"snapshot": ts.snapshot_meta.version}
            newest["targets"] = self.snapshot_md().signed.meta["targets.json"].version
            for role, top in newest.items():
                for p in self.metadata_dir.glob(f"*.{role}.json"):
                    v = p.name.split(".", 1)[0]
                    if (
                        v.isdigit()
                        and int(v) <= top - keep_versions
                        and now_s - p.stat().st_mtime >= min_age_s
                    ):
                        p.unlink()
                        removed += 1
        log.info("pruned %d files from %s", removed, self.root)
        return removed

    @storage_errors
    def renew_root(self, now: datetime) -> int:
        """A new root version with the same keys and a fresh expiry (needs the root key).

        Do this well before ``root_expiry_s`` runs out: cabs refuse an expired root."""
        with self._lock():
            signer = self.signer("root")
            md_root: Metadata[Root] = self.root_md()
            md_root.signed.version += 1
            md_root.signed.expires = _expiry(now, self.config.root_expiry_s)
            md_root.signatures.clear()
            md_root.sign(signer)
            self._write_md(f"{md_root.signed.version}.root.json", md_root)
        return int(md_root.signed.version)

    def status(self) -> dict[str, Any]:
        ts = self.timestamp_md().signed
        return {
            "root_version": self.root_version(),
            "targets_version": self.targets_md().signed.version,
            "snapshot_version": ts.snapshot_meta.version,
            "timestamp_version": ts.version,
            "timestamp_expires": ts.expires.isoformat(),
            "areas": {a: i["bundle_id"] for a, i in sorted(self.published().items())},
        }
