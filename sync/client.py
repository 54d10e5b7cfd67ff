"""Pulling bundles: TUF-verified download into staging, install, trial, commit or rollback.

``Updater.pull()`` refreshes the fleet repository's metadata with python-tuf's ngclient (root
chain, timestamp, snapshot, targets: signatures, versions, expiry), reads the area's bundle
index target, and assembles every file of the new bundle in ``staging/<id>/`` from chunks: a
chunk already present in the current bundle (same sha256) is copied locally, one downloaded
before an interruption is reused from ``staging/<id>.parts/``, and only the rest is fetched,
each verified against its TUF target length and hash. The assembled bundle is verified file by
file, fsynced, renamed into ``bundles/`` and activated on trial; the health check decides
between commit and rollback.

Nothing here changes the current bundle unless the whole new one verified: any refusal raises
a :class:`~sync.errors.SyncError` and the agent keeps driving with what it has. python-tuf has
no offline mode: when ``refresh()`` fails (no network, expired timestamp, wrong clock) the
error says why and the current bundle stays.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]  # no __all__ there
from tuf.ngclient.config import UpdaterConfig as TufConfig
from tuf.ngclient.updater import Updater as TufUpdater

from sync._fs import (
    atomic_write_bytes,
    copy_file_durably,
    fsync_dir,
    sha256_bytes,
    sha256_file,
    storage_errors,
)
from sync._tls import certificate_refused
from sync.bundle import MANIFEST_FILE, Bundle
from sync.cohorts import ROLLOUT_SCHEMA, candidate_target_path, in_stage, rollout_target_path
from sync.errors import (
    BundleVerifyError,
    HealthCheckError,
    SyncDataError,
    SyncError,
    SyncStorageError,
    SyncTransportError,
    UpdateRejectedError,
)
from sync.fetcher import CertificateRejected, FetchConfig, HttpxFetcher
from sync.health import default_health_check
from sync.logs import LogClient
from sync.names import check_bundle_id, check_chunk_hash, check_file_name, is_hex64
from sync.repository import INDEX_SCHEMA, chunk_target_path, index_target_path
from sync.store import BundleStore, HealthCheck

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PullConfig:
    """Where to pull from and the bounds of one pull."""

    server_url: str  # e.g. https://fleet.example:8443 (metadata/ and targets/ below it)
    area: str
    max_bundle_bytes: int = 4 << 30
    max_files: int = 64
    max_targets_metadata_bytes: int = 8 << 20
    fetch: FetchConfig = field(default_factory=FetchConfig)
    gc_after_install: bool = True
    #: staged rollouts (sync.cohorts): this cab's id and cohort, from its local configuration
    #: only; without a vehicle id the cab takes the area's published bundle
    vehicle_id: str | None = None
    cohort: str | None = None


@dataclass(frozen=True)
class PullResult:
    status: str  # "up_to_date", "installed" or "repaired" (the active bundle was damaged)
    bundle_id: str
    bytes_downloaded: int  # body bytes read from the network (metadata + targets)
    chunks_downloaded: int
    chunks_reused: int  # taken from the current bundle or an interrupted earlier pull


def _int(value: object, lo: int, hi: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise UpdateRejectedError(f"bundle index: {what} {value!r} is not an integer in range")
    return value


def _check_index(index: dict[str, Any], config: PullConfig) -> None:
    """Every name and number of a signed bundle index, checked before any of it is used.

    The signature says the fleet wrote it; this says it is safe to act on (names that cannot
    leave the store, sizes and chunk lists that agree, bounds). Raises a SyncDataError.
    """
    bundle_id = check_bundle_id(index.get("bundle_id"), "bundle index")
    step = _int(index.get("chunk_bytes"), 1, config.fetch.max_response_bytes, "chunk_bytes")
    files = index.get("files")
    if not isinstance(files, dict) or MANIFEST_FILE not in files:
        raise UpdateRejectedError("bundle index lists no manifest")
    if len(files) > config.max_files:
        raise UpdateRejectedError(f"bundle index lists {len(files)} files")
    total = 0
    dirs: set[str] = set()
    for name, ent in files.items():
        check_file_name(name, "bundle index")
        parts = name.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        if not isinstance(ent, dict):
            raise UpdateRejectedError(f"bundle index: entry of {name!r} is not an object")
        if not is_hex64(ent.get("sha256")):
            raise UpdateRejectedError(f"bundle index: {name}: sha256 is not 64 lowercase hex")
        size = _int(ent.get("size_bytes"), 0, config.max_bundle_bytes, f"{name}: size_bytes")
        chunks = ent.get("chunks")
        if not isinstance(chunks, list) or len(chunks) != -(-size // step):
            raise UpdateRejectedError(f"bundle index: {name}: chunk list does not fit its size")
        for h in chunks:
            check_chunk_hash(h, f"bundle index: {name}")
        total += size
    clash = sorted(dirs & set(files))
    if clash:
        raise UpdateRejectedError(f"bundle index: {clash[0]!r} is both a file and a folder")
    if total > config.max_bundle_bytes:
        raise UpdateRejectedError(f"bundle of {total} bytes exceeds the configured bound")
    if files[MANIFEST_FILE]["sha256"] != bundle_id:
        raise UpdateRejectedError("bundle index: manifest hash is not the bundle id")


def _wrap_tuf(e: Exception, what: str) -> SyncError:
    rejected = e if isinstance(e, CertificateRejected) else e.__cause__
    if isinstance(rejected, CertificateRejected):  # a wrong CA or host name: not retried
        return certificate_refused(rejected.url, rejected.problem)
    if isinstance(e, tuf_exc.DownloadLengthMismatchError):
        return UpdateRejectedError(f"{what}: server sent more than the signed length ({e})")
    if isinstance(e, tuf_exc.DownloadError):
        return SyncTransportError(f"{what}: fleet server unreachable or failing ({e})")
    if isinstance(e, tuf_exc.ExpiredMetadataError):
        return UpdateRejectedError(f"{what}: metadata expired (server stale or clock wrong): {e}")
    if isinstance(e, tuf_exc.RepositoryError):
        return UpdateRejectedError(f"{what}: {type(e).__name__}: {e}")
    if isinstance(e, OSError):
        return SyncStorageError(f"{what}: {e}")
    return UpdateRejectedError(f"{what}: {type(e).__name__}: {e}")


class Updater:
    """The agent's pull client for one area (make one per pull or reuse: each ``pull()``
    starts a fresh TUF refresh)."""

    def __init__(
        self,
        store: BundleStore,
        config: PullConfig,
        trusted_root: bytes,
        *,
        fetcher: HttpxFetcher | None = None,
        health_check: HealthCheck = default_health_check,
    ) -> None:
        self.store = store
        self.config = config
        self._trusted_root = trusted_root
        self.fetcher = fetcher or HttpxFetcher(config.fetch)
        self._health_check = health_check
        base = config.server_url.rstrip("/")
        self._metadata_url = f"{base}/metadata/"
        self._targets_url = f"{base}/targets/"

    def close(self) -> None:
        self.fetcher.close()

    def _tuf(self) -> TufUpdater:
        cfg = TufConfig(targets_max_length=self.config.max_targets_metadata_bytes)
        try:
            return TufUpdater(
                metadata_dir=str(self.store.tuf_dir),
                metadata_base_url=self._metadata_url,
                target_base_url=self._targets_url,
                fetcher=self.fetcher,
                config=cfg,
                bootstrap=self._trusted_root,
            )
        except Exception as e:
            raise _wrap_tuf(e, "trusted root") from e

    def _download(self, tu: TufUpdater, info: TargetFile) -> bytes:
        h = info.hashes["sha256"]
        dirname, sep, basename = info.path.rpartition("/")
        url = f"{self._targets_url}{dirname}{sep}{h}.{basename}"
        try:
            data = self.fetcher.download_bytes(url, info.length)
            info.verify_length_and_hashes(data)
        except Exception as e:
            raise _wrap_tuf(e, f"target {info.path}") from e
        return data

    def _target(self, tu: TufUpdater, path: str) -> TargetFile:
        try:
            info = tu.get_targetinfo(path)
        except Exception as e:
            raise _wrap_tuf(e, f"target {path}") from e
        if info is None:
            raise UpdateRejectedError(f"{path} is not a signed target of the fleet repository")
        return info

    def fetch_index(self, tu: TufUpdater) -> dict[str, Any]:
        """Refresh the metadata and read this area's signed bundle index."""
        try:
            tu.refresh()
        except Exception as e:
            raise _wrap_tuf(e, "metadata refresh") from e
        path = self._rollout_index_path(tu) or index_target_path(self.config.area)
        data = self._download(tu, self._target(tu, path))
        try:
            index = json.loads(data)
        except ValueError as e:
            raise UpdateRejectedError(f"bundle index is not JSON: {e}") from e
        if not isinstance(index, dict) or index.get("schema_version") != INDEX_SCHEMA:
            raise UpdateRejectedError("bundle index has an unknown schema")
        if index.get("area") != self.config.area:
            raise UpdateRejectedError(
                f"bundle index is for area {index.get('area')!r}, not {self.config.area!r}"
            )
        _check_index(index, self.config)
        return index

    def _rollout_index_path(self, tu: TufUpdater) -> str | None:
        """The signed candidate index this cab is staged for (its cohort's rollout first, then
        the whole area's), or None: the area's published index."""
        c = self.config
        if c.vehicle_id is None:
            return None
        for cohort in ([c.cohort] if c.cohort else []) + [None]:
            try:
                info = tu.get_targetinfo(rollout_target_path(c.area, cohort))
            except Exception as e:
                raise _wrap_tuf(e, "rollout") from e
            if info is None:
                continue
            try:
                doc = json.loads(self._download(tu, info))
            except ValueError as e:
                raise UpdateRejectedError(f"rollout document is not JSON: {e}") from e
            if not isinstance(doc, dict) or doc.get("schema_version") != ROLLOUT_SCHEMA:
                raise UpdateRejectedError("rollout document has an unknown schema")
            if doc.get("area") != c.area or doc.get("cohort") != cohort:
                raise UpdateRejectedError("rollout document is for another area or cohort")
            if in_stage(doc, c.vehicle_id):
                bundle_id = doc.get("bundle_id")
                if not isinstance(bundle_id, str) or not is_hex64(bundle_id):
                    raise UpdateRejectedError("rollout document names no valid bundle id")
                return candidate_target_path(c.area, bundle_id)
            if cohort is not None:
                return None  # a cohort's rollout decides for its cabs: not the area's too
        return None

    @storage_errors
    def pull(self, *, verify: bool = False) -> PullResult:
        """Bring the area's published bundle in and activate it, or raise and change nothing.

        When the published bundle is the active one, the active one is checked first (cheaply
        by its stamp, every sha256 with ``verify``): a damaged or missing one is fetched again
        through TUF like a new bundle and put back in place (status ``repaired``).
        """
        start_bytes = self.fetcher.bytes_received
        p = self.store.pointer()
        if p.current and p.trial:  # a trial interrupted by a restart: finish it first
            try:
                self.store.resume_trial(self._health_check)
            except BundleVerifyError as e:  # damaged on disk, not unfit: fetch it again below
                log.warning("%s; rolled back, fetching it again", e)
            p = self.store.pointer()
        tu = self._tuf()
        index = self.fetch_index(tu)
        bundle_id = str(index["bundle_id"])
        if bundle_id == p.current:
            problem = self.store.check_bundle(bundle_id, full=verify)
            if problem is None:
                return PullResult(
                    "up_to_date", bundle_id, self.fetcher.bytes_received - start_bytes, 0, 0
                )
            log.warning("active bundle is damaged (%s): fetching it again", problem)
            downloaded, reused = self._stage(tu, index)
            self.store.install(self.store.staging_path(bundle_id), bundle_id)
            log.info("repaired bundle %s (%d chunks downloaded)", bundle_id[:12], downloaded)
            return PullResult(
                "repaired",
                bundle_id,
                self.fetcher.bytes_received - start_bytes,
                downloaded,
                reused,
            )
        if bundle_id in p.rejected:
            raise UpdateRejectedError(
                f"bundle {bundle_id[:12]} failed its health check before; waiting for a new one"
            )
        downloaded = reused = 0
        installed = self.store.bundle_path(bundle_id)
        if installed.is_dir():  # installed before an interruption: use it only if intact
            try:
                Bundle(installed).verify()
            except SyncDataError as e:
                log.warning("installed copy of %s is damaged (%s): fetching again", bundle_id, e)
                self.store._discard(installed)
        if not installed.is_dir():
            downloaded, reused = self._stage(tu, index)
            self.store.install(self.store.staging_path(bundle_id), bundle_id)
        try:
            self.store.try_bundle(bundle_id, self._health_check)
        except HealthCheckError as e:
            e.bundle_id = bundle_id  # what the cab reports (rollout health)
            raise
        if self.config.gc_after_install:
            self.store.gc()
        log.info(
            "installed bundle %s (%d chunks downloaded, %d reused)",
            bundle_id[:12],
            downloaded,
            reused,
        )
        return PullResult(
            "installed", bundle_id, self.fetcher.bytes_received - start_bytes, downloaded, reused
        )

    # ------------------------------------------------------------------ staging
    def _local_chunks(self, name: str, step: int) -> dict[str, tuple[Path, int, int]]:
        """Chunks (same boundaries) of the file ``name`` in the current and last good bundle."""
        out: dict[str, tuple[Path, int, int]] = {}
        p = self.store.pointer()
        for bid in {x for x in (p.current, p.last_good) if x}:
            path = self.store.bundle_path(bid) / name
            if not path.is_file():
                continue
            with open(path, "rb") as fh:
                off = 0
                while block := fh.read(step):
                    out.setdefault(sha256_bytes(block), (path, off, len(block)))
                    off += len(block)
        return out

    def _local_file(self, sha: str) -> Path | None:
        p = self.store.pointer()
        for bid in (p.current, p.last_good):
            if not bid:
                continue
            try:
                b = Bundle(self.store.bundle_path(bid))
            except SyncDataError:
                continue
            for name, ent in b.files.items():
                if ent.sha256 == sha:
                    return b.path / name
        return None

    def _stage(self, tu: TufUpdater, index: dict[str, Any]) -> tuple[int, int]:
        bundle_id = str(index["bundle_id"])
        stage = self.store.staging_path(bundle_id)
        parts = stage.with_name(f"{bundle_id}.parts")
        for d in self.store.staging_dir.iterdir():  # an older, abandoned download
            if not d.name.startswith(bundle_id):
                self.store._discard(d)
        stage.mkdir(parents=True, exist_ok=True)
        parts.mkdir(parents=True, exist_ok=True)
        step = int(index["chunk_bytes"])
        downloaded = reused = 0
        for name, ent in sorted(index["files"].items()):
            dst = stage / name
            sha, size = str(ent["sha256"]), int(ent["size_bytes"])
            if dst.is_file() and dst.stat().st_size == size and sha256_file(dst) == sha:
                continue  # assembled before an interruption
            local = self._local_file(sha)
            if local is not None and sha256_file(local) == sha:
                copy_file_durably(local, dst)
                reused += len(ent["chunks"])
                continue
            local_chunks = self._local_chunks(name, step)
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.part")
            with open(tmp, "wb") as out:
                for h in ent["chunks"]:
                    self.store.checkpoint(f"chunk:{name}:{h[:12]}")
                    data, fresh = self._chunk(tu, h, parts, local_chunks)
                    downloaded += fresh
                    reused += 1 - fresh
                    out.write(data)
                out.flush()
                os.fsync(out.fileno())
            if tmp.stat().st_size != size or sha256_file(tmp) != sha:
                tmp.unlink()
                raise UpdateRejectedError(f"{name} assembled from verified chunks mismatches")
            self.store.checkpoint(f"assembled:{name}")
            os.replace(tmp, dst)
            fsync_dir(dst.parent)
        for p in parts.iterdir():
            p.unlink()
        parts.rmdir()
        return downloaded, reused

    def _chunk(
        self,
        tu: TufUpdater,
        h: str,
        parts: Path,
        local: dict[str, tuple[Path, int, int]],
    ) -> tuple[bytes, int]:
        cached = parts / h
        if cached.is_file():
            data = cached.read_bytes()
            if sha256_bytes(data) == h:
                return data, 0
        if h in local:
            path, off, n = local[h]
            with open(path, "rb") as fh:
                fh.seek(off)
                data = fh.read(n)
            if sha256_bytes(data) == h:
                return data, 0
        info = self._target(tu, chunk_target_path(h))
        if info.hashes.get("sha256") != h:
            raise UpdateRejectedError(f"chunk target {h[:12]} is signed with another hash")
        data = self._download(tu, info)
        atomic_write_bytes(cached, data)
        return data, 1


def pull_reporting_health(
    updater: Updater, reporter: LogClient | None, vehicle_id: str
) -> PullResult:
    """``updater.pull()``, telling the fleet server how a bundle this cab tried did (staged
    rollouts, sync.rollout): healthy after an install, the reason after a failed health check
    (the cab has rolled back already). A report that cannot be sent is logged, not raised: the
    pull's outcome stands, and the next tried bundle reports again."""
    try:
        res = updater.pull()
    except HealthCheckError as e:
        if reporter is not None and e.bundle_id is not None:
            _report(reporter, vehicle_id, e.bundle_id, False, str(e))
        raise
    if reporter is not None and res.status == "installed":
        _report(reporter, vehicle_id, res.bundle_id, True, "")
    return res


def _report(reporter: LogClient, vehicle_id: str, bundle_id: str, ok: bool, detail: str) -> None:
    try:
        reporter.report_health(vehicle_id, bundle_id, ok, detail)
    except SyncError as e:
        log.warning("health report for %s not sent: %s", bundle_id[:12], e)
