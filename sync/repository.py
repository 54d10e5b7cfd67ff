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
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]  # no __all__ there
from tuf.api.metadata import (  # type: ignore[attr-defined]  # no __all__ there
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from sync._fs import atomic_write_bytes, read_bounded, sha256_bytes, storage_errors
from sync.bundle import MANIFEST_FILE, Bundle
from sync.cohorts import ROLLOUT_SCHEMA, candidate_target_path, rollout_target_path
from sync.errors import BundleVerifyError, SyncDataError, SyncStorageError

log = logging.getLogger(__name__)

ROLES = ("root", "targets", "snapshot", "timestamp")
LIVE_ROLE = "live"  # delegated by targets (see the module docstring)
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


@dataclass(frozen=True)
class PublishResult:
    area: str
    bundle_id: str
    targets_version: int
    chunks_total: int
    chunks_new: int
    bytes_new: int


def _serializer() -> JSONSerializer:
    return JSONSerializer(compact=False)


def _expiry(now: datetime, seconds: int) -> datetime:
    return (now + timedelta(seconds=seconds)).replace(microsecond=0)


def _live_delegations(signer: CryptoSigner) -> Delegations:
    role = DelegatedRole(
        LIVE_ROLE, [signer.public_key.keyid], 1, terminating=True, paths=list(LIVE_PATHS)
    )
    return Delegations({signer.public_key.keyid: signer.public_key}, {LIVE_ROLE: role})


def _missing_dirs(folder: Path, stop: Path) -> list[Path]:
    """The folders from ``stop`` (exclusive) down to ``folder`` that do not exist yet,
    outermost first."""
    out: list[Path] = []
    while folder != stop and not folder.exists() and folder != folder.parent:
        out.append(folder)
        folder = folder.parent
    return out[::-1]


class FleetRepository:
    """A TUF repository on the local filesystem, served by ``nagashi fleet serve``."""

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

    @staticmethod
    def _rollout_files(rollouts: dict[str, Any]) -> dict[str, bytes]:
        """Target path -> bytes of every running rollout's document and candidate index."""
        out: dict[str, bytes] = {}
        for r in rollouts.values():
            if r.get("state") != "running":
                continue
            area, cohort, index = r["area"], r.get("cohort"), r["index"]
            out[candidate_target_path(area, index["bundle_id"])] = json.dumps(
                index, sort_keys=True, indent=1
            ).encode()
            public = {
                "schema_version": ROLLOUT_SCHEMA,
                "area": area,
                "cohort": cohort,
                "bundle_id": index["bundle_id"],
                "state": "running",
                "salt": r["salt"],
                "threshold": int(r["threshold"]),
                "percent": r["stages"][r["stage"]],
            }
            out[rollout_target_path(area, cohort)] = json.dumps(
                public, sort_keys=True, indent=1
            ).encode()
        return out

    def _targets_for(self, published: dict[str, Any]) -> dict[str, TargetFile]:
        out: dict[str, TargetFile] = {}
        rollouts = self.rollouts()
        indexes = [(index_target_path(area), ix) for area, ix in sorted(published.items())]
        for r in rollouts.values():  # running rollouts: their candidates are signed too
            if r.get("state") == "running":
                indexes.append((candidate_target_path(r["area"], r["index"]["bundle_id"]), None))
        files = self._rollout_files(rollouts)
        for path, data in files.items():
            if "/rollouts/" in path:
                out[path] = TargetFile.from_data(path, data, ["sha256"])
        for path, maybe_index in indexes:
            index = maybe_index if maybe_index is not None else json.loads(files[path])
            data = json.dumps(index, sort_keys=True, indent=1).encode()
            out[path] = TargetFile.from_data(path, data, ["sha256"])
            step = int(index["chunk_bytes"])
            for ent in index["files"].values():
                size = int(ent["size_bytes"])
                for i, h in enumerate(ent["chunks"]):
                    cpath = chunk_target_path(h)
                    length = min(step, size - i * step)
                    out[cpath] = TargetFile(length, {"sha256": h}, cpath)
        return out

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

    def _sign_chain(
        self,
        now: datetime,
        published: dict[str, Any],
        *,
        bump_targets: bool,
        created: list[Path] | None = None,
        live_key: CryptoSigner | None = None,
    ) -> int:
        """Write a new targets (if asked), snapshot and timestamp; timestamp last. New
        metadata files are appended to ``created``. The targets keep the previous version's
        delegations (the live role), or delegate ``live`` to ``live_key`` when given."""
        cfg = self.config
        try:
            old_ts: Metadata[Timestamp] | None = self.timestamp_md()
        except SyncStorageError:
            old_ts = None
        if old_ts is None:
            tv, sv, tsv = 1, 1, 1
        else:
            sv = old_ts.signed.snapshot_meta.version + 1
            tsv = old_ts.signed.version + 1
            tv = self.targets_md().signed.version + (1 if bump_targets else 0)
        if bump_targets or old_ts is None:
            targets = Targets(version=tv, expires=_expiry(now, cfg.targets_expiry_s))
            targets.targets = self._targets_for(published)
            if live_key is not None:
                targets.delegations = _live_delegations(live_key)
            elif old_ts is not None:
                targets.delegations = self.targets_md().signed.delegations
            md_t = Metadata(targets)
            md_t.sign(self.signer("targets"))
            self._write_md(f"{tv}.targets.json", md_t, created)
        snapshot = Snapshot(
            version=sv,
            expires=_expiry(now, cfg.snapshot_expiry_s),
            meta={"targets.json": MetaFile(version=tv)},
        )
        md_s = Metadata(snapshot)
        md_s.sign(self.signer("snapshot"))
        self._write_md(f"{sv}.snapshot.json", md_s, created)
        ts = Timestamp(
            version=tsv,
            expires=_expiry(now, cfg.timestamp_expiry_s),
            snapshot_meta=MetaFile(version=sv),
        )
        md_ts = Metadata(ts)
        md_ts.sign(self.signer("timestamp"))
        self._write_md("timestamp.json", md_ts)
        return tv

    @storage_errors
    def resign(self, now: datetime, *, targets: bool = False) -> None:
        """Re-sign timestamp and snapshot (and targets) with fresh expiry (cron this)."""
        with self._lock():
            self._sign_chain(now, self.published(), bump_targets=targets)

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

    def live_signer(self) -> CryptoSigner | None:
        """The live key, if the targets metadata delegates ``live`` to it (else None: a
        repository from before the live role, or a key that is not the delegated one)."""
        if not self._key_path(LIVE_ROLE).is_file():
            return None
        signer = self.signer(LIVE_ROLE)
        delegations = self.targets_md().signed.delegations
        roles = delegations.roles if delegations is not None else None
        if not roles or LIVE_ROLE not in roles:
            return None
        if signer.public_key.keyid not in roles[LIVE_ROLE].keyids:
            return None
        return signer

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

    def retired_key_paths(self, role: str) -> list[Path]:
        return sorted((self.keys_dir / "retired").glob(f"{role}-*.pem"))

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
