"""The bundle store on the device: staging, atomic activation, trial, rollback.

Layout under the store root::

    current.json           the pointer: {"current": id, "trial": bool, "last_good": id,
                           "previous": id, ...}
    bundles/<id>/          installed bundles (immutable, named by bundle id)
    stamps/<id>.json       size, mtime and inode of every file of a bundle, recorded when its
                           hashes were last checked (the cheap "still intact?" test)
    staging/<id>/          a bundle being downloaded/assembled (resumable)
    trash/                 bundles being deleted (renamed here first, then removed)
    tuf/                   trusted TUF metadata of the fleet repository

Activation is one atomic replace of ``current.json`` (temp file in the same folder, fsync,
``os.replace``, fsync dir). A new bundle is installed on *trial*: ``current`` names it,
``last_good`` still names the previous one. :meth:`commit` ends the trial; :meth:`rollback`
points ``current`` back at ``last_good``. ``previous`` names the good bundle before the last
good one (kept after a commit, so a damaged active bundle has something to fall back on).
:meth:`gc` never deletes the current, the last good nor the previous bundle. After a crash the
pointer names a complete, verified bundle: the old one, or the new one (possibly still on trial,
see :meth:`resume_trial`).

Damage after installation (a bad SD card, a hand edit, a deleted folder) is found by
:meth:`check_bundle`: cheaply (each file's size, mtime and inode against its stamp) or fully
(every sha256); the client re-fetches a damaged active bundle through TUF (see sync.client).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sync._fs import atomic_write_bytes, fsync_dir, fsync_file, read_bounded, storage_errors
from sync.bundle import Bundle
from sync.errors import (
    BundleVerifyError,
    HealthCheckError,
    SyncDataError,
    SyncError,
    SyncStorageError,
)
from sync.names import check_bundle_id, is_hex64

log = logging.getLogger(__name__)

POINTER_FILE = "current.json"
POINTER_SCHEMA = 1
MAX_POINTER_BYTES = 1 << 20
MAX_REJECTED = 32

HealthCheck = Callable[[Bundle], None]
"""Raises (anything) when the bundle is not fit to drive with; returns when it is."""

Checkpoint = Callable[[str], None]


def _no_checkpoint(step: str) -> None:
    return None


@dataclass(frozen=True)
class Pointer:
    current: str | None = None
    trial: bool = False
    last_good: str | None = None
    previous: str | None = None  # the good bundle before last_good (a fallback)
    rejected: tuple[str, ...] = ()  # bundle ids that failed their health check
    extra: tuple[tuple[str, Any], ...] = ()  # unknown fields, kept

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = dict(self.extra)
        doc.update(
            schema_version=POINTER_SCHEMA,
            current=self.current,
            trial=self.trial,
            last_good=self.last_good,
            previous=self.previous,
            rejected=list(self.rejected),
        )
        return json.dumps(doc, sort_keys=True, indent=1).encode()

    @staticmethod
    def from_bytes(data: bytes) -> Pointer:
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise ValueError("pointer is not an object")
        known = {"schema_version", "current", "trial", "last_good", "previous", "rejected"}
        current, last_good = doc.get("current"), doc.get("last_good")
        previous = doc.get("previous")
        rejected = doc.get("rejected") or []
        if not isinstance(rejected, list):
            raise ValueError("rejected is not a list")
        for v in (current, last_good, previous):
            if v is not None and not is_hex64(v):
                raise ValueError(f"{v!r} is not a bundle id")
        return Pointer(
            current=current,
            trial=bool(doc.get("trial", False)),
            last_good=last_good,
            previous=previous,
            rejected=tuple(r for r in rejected if is_hex64(r)),
            extra=tuple(sorted((k, v) for k, v in doc.items() if k not in known)),
        )


class BundleStore:
    """Installed bundles and the ``current`` pointer under ``root``.

    ``checkpoint`` is called between every filesystem step of an install (tests use it to
    kill the process at each step).
    """

    def __init__(self, root: str | os.PathLike[str], checkpoint: Checkpoint | None = None) -> None:
        self.root = Path(root)
        self.bundles_dir = self.root / "bundles"
        self.staging_dir = self.root / "staging"
        self.trash_dir = self.root / "trash"
        self.tuf_dir = self.root / "tuf"
        self.stamps_dir = self.root / "stamps"
        self._checkpoint = checkpoint or _no_checkpoint
        try:
            dirs = (self.bundles_dir, self.staging_dir, self.trash_dir, self.tuf_dir)
            for d in (*dirs, self.stamps_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SyncStorageError(f"cannot create bundle store at {self.root}: {e}") from e

    def checkpoint(self, step: str) -> None:
        """Called between filesystem steps of an install (a test hook; no-op by default)."""
        self._checkpoint(step)

    # ------------------------------------------------------------------ pointer
    @property
    def pointer_path(self) -> Path:
        return self.root / POINTER_FILE

    def pointer(self) -> Pointer:
        try:
            data = read_bounded(self.pointer_path, MAX_POINTER_BYTES)
        except FileNotFoundError:
            return Pointer()
        except OSError as e:
            raise SyncStorageError(f"cannot read {self.pointer_path}: {e}") from e
        try:
            return Pointer.from_bytes(data)
        except ValueError as e:
            raise SyncStorageError(f"{self.pointer_path} is corrupt: {e}") from e

    def _write_pointer(self, p: Pointer) -> None:
        self._checkpoint("pointer:before")
        try:
            atomic_write_bytes(self.pointer_path, p.to_bytes())
        except OSError as e:
            raise SyncStorageError(f"cannot write {self.pointer_path}: {e}") from e
        self._checkpoint("pointer:after")

    # ------------------------------------------------------------------ reading
    def bundle_path(self, bundle_id: str) -> Path:
        """``bundles/<bundle_id>``; an id that is not a sha256 raises UnsafeNameError."""
        return self.bundles_dir / check_bundle_id(bundle_id, "bundle store")

    def current_id(self) -> str | None:
        return self.pointer().current

    def active(self) -> Bundle | None:
        """The bundle to drive with (on trial or good), or None before the first install."""
        cur = self.pointer().current
        return Bundle(self.bundle_path(cur)) if cur else None

    def installed(self) -> list[str]:
        return sorted(p.name for p in self.bundles_dir.iterdir() if p.is_dir())

    def staging_path(self, bundle_id: str) -> Path:
        return self.staging_dir / check_bundle_id(bundle_id, "bundle store")

    # ------------------------------------------------------------------ install
    @storage_errors
    def install(self, staged: Path, bundle_id: str) -> Bundle:
        """Move a fully staged bundle into ``bundles/`` (one rename), after verifying it.

        Does not activate it. Idempotent: an already installed, valid copy is kept.
        """
        final = self.bundle_path(bundle_id)
        if final.is_symlink() or (final.exists() and not final.is_dir()):
            log.warning("bundles/%s is not a folder: replacing it", bundle_id[:12])
            self._discard(final)
        if final.is_dir():
            try:
                b = Bundle(final)
                b.verify()
                shutil.rmtree(staged, ignore_errors=True)
                self.record_stamp(bundle_id)
                return b
            except BundleVerifyError:
                log.warning("installed copy of %s is damaged: replacing it", bundle_id[:12])
                self._discard(final)
        b = Bundle(staged, expect_id=bundle_id)
        b.verify()
        self._checkpoint("install:verified")
        for p in sorted(staged.rglob("*"), reverse=True):
            if p.is_file():
                fsync_file(p)
            elif p.is_dir():
                fsync_dir(p)
        fsync_dir(staged)
        self._checkpoint("install:fsynced")
        os.rename(staged, final)
        self._checkpoint("install:renamed")
        fsync_dir(self.bundles_dir)
        fsync_dir(self.staging_dir)
        self._checkpoint("install:done")
        self.record_stamp(bundle_id)  # hashed just above: the cheap check's reference
        return Bundle(final)

    def activate(self, bundle_id: str, *, trial: bool = True) -> None:
        """Point ``current`` at an installed bundle (on trial unless ``trial=False``)."""
        if not self.bundle_path(bundle_id).is_dir():
            raise SyncStorageError(f"bundle {bundle_id[:12]} is not installed")
        p = self.pointer()
        if p.current == bundle_id and not p.trial:
            return
        last_good = p.last_good if p.trial else p.current
        previous = p.previous
        if not trial:
            if last_good not in (None, bundle_id):
                previous = last_good
            last_good = bundle_id
        self._write_pointer(
            replace(p, current=bundle_id, trial=trial, last_good=last_good, previous=previous)
        )

    def commit(self) -> None:
        """The bundle on trial passed its health check: it becomes the last good one."""
        p = self.pointer()
        if p.current and p.trial:
            previous = p.last_good if p.last_good not in (None, p.current) else p.previous
            self._write_pointer(replace(p, trial=False, last_good=p.current, previous=previous))

    def rollback(self, reason: str, *, reject: bool = True) -> str | None:
        """Point ``current`` back at the last good bundle; remember the rejected one (unless
        ``reject`` is False: a bundle damaged on disk is fetched again, not refused)."""
        p = self.pointer()
        if not p.trial or p.current is None:
            return p.current
        bad = p.current
        rejected = (*[r for r in p.rejected if r != bad], bad)[-MAX_REJECTED:]
        if not reject:
            rejected = p.rejected
        log.warning("rolling back bundle %s: %s", bad[:12], reason)
        self._write_pointer(replace(p, current=p.last_good, trial=False, rejected=rejected))
        return p.last_good

    def try_bundle(self, bundle_id: str, health_check: HealthCheck) -> Bundle:
        """Activate on trial, run the health check, commit or roll back (then raise)."""
        self.activate(bundle_id, trial=True)
        return self.resume_trial(health_check)

    def resume_trial(self, health_check: HealthCheck) -> Bundle:
        """Finish a trial (e.g. after a restart): health check, commit or roll back."""
        p = self.pointer()
        if p.current is None:
            raise SyncStorageError("no bundle installed")
        if not p.trial:
            return Bundle(self.bundle_path(p.current))
        try:
            bundle = Bundle(self.bundle_path(p.current))
            bundle.verify()
        except BundleVerifyError as e:  # damaged on disk since its install: fetch, not reject
            self.rollback(f"damaged: {e}", reject=False)
            raise BundleVerifyError(f"bundle {p.current[:12]} on trial is damaged: {e}") from e
        try:
            health_check(bundle)
        except Exception as e:  # any failure of the injected check means "not fit"
            self.rollback(f"health check failed: {e}")
            raise HealthCheckError(f"bundle {p.current[:12]} failed its health check: {e}") from e
        self.commit()
        return bundle

    # ------------------------------------------------------------------ cleanup
    def _discard(self, path: Path) -> None:
        """Rename into trash (atomic: never a half-deleted bundle under its id), then delete."""
        if not path.exists() and not path.is_symlink():
            return
        dest = self.trash_dir / f"{path.name}.{os.getpid()}.{id(path)}"
        os.rename(path, dest)
        fsync_dir(path.parent)
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest, ignore_errors=True)
        else:  # a file or a link where a folder was: remove the entry, never what it names
            dest.unlink()

    @storage_errors
    def gc(self, keep_staging: str | None = None) -> list[str]:
        """Delete bundles other than the current and the last good one, and stale staging.

        ``keep_staging``: a staging id to keep (a download to resume). Returns what went.
        """
        p = self.pointer()
        keep = {x for x in (p.current, p.last_good, p.previous) if x}
        gone: list[str] = []
        for d in self.bundles_dir.iterdir():
            if d.name not in keep:
                self._discard(d)
                gone.append(d.name)
        for d in self.staging_dir.iterdir():
            if d.name != keep_staging:
                with contextlib.suppress(OSError):
                    self._discard(d)
                gone.append(f"staging/{d.name}")
        for d in self.trash_dir.iterdir():
            if d.is_dir() and not d.is_symlink():
                shutil.rmtree(d, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    d.unlink()
        for f in self.stamps_dir.iterdir():
            if f.name.removesuffix(".json") not in keep:
                with contextlib.suppress(OSError):
                    f.unlink()
        return gone

    def status(self, *, full: bool = False) -> dict[str, Any]:
        """The pointer, what is installed, and whether the active bundle is intact (checked
        cheaply by its stamp, every hash with ``full``)."""
        p = self.pointer()
        active: dict[str, Any] | None = None
        if p.current is not None:
            problem = self.check_bundle(p.current, full=full)
            active = {
                "id": p.current,
                "state": "damaged" if problem else "ok",
                "check": "sha256" if full else "stamp",
                "problem": problem,
            }
        return {
            "current": p.current,
            "trial": p.trial,
            "last_good": p.last_good,
            "previous": p.previous,
            "rejected": list(p.rejected),
            "installed": self.installed(),
            "active": active,
            "fallbacks": self.fallback_ids(),
        }

    # ------------------------------------------------------------------ damage
    def _stamp_path(self, bundle_id: str) -> Path:
        return self.stamps_dir / f"{check_bundle_id(bundle_id, 'bundle store')}.json"

    def _stat_files(self, bundle_id: str) -> dict[str, list[int]]:
        root = self.bundle_path(bundle_id)
        out: dict[str, list[int]] = {}
        for f in sorted(root.rglob("*")):
            if f.is_file() or f.is_symlink():
                st = f.lstat()
                out[f.relative_to(root).as_posix()] = [st.st_size, st.st_mtime_ns, st.st_ino]
        return out

    def record_stamp(self, bundle_id: str) -> None:
        """Remember every file's size, mtime and inode (call right after a full verify)."""
        doc = {"bundle_id": bundle_id, "files": self._stat_files(bundle_id)}
        atomic_write_bytes(self._stamp_path(bundle_id), json.dumps(doc, sort_keys=True).encode())

    def _stamp_matches(self, bundle_id: str) -> bool:
        try:
            doc = json.loads(read_bounded(self._stamp_path(bundle_id), MAX_POINTER_BYTES))
            return isinstance(doc, dict) and doc.get("files") == self._stat_files(bundle_id)
        except (OSError, ValueError, SyncError):
            return False

    @storage_errors
    def check_bundle(self, bundle_id: str, *, full: bool = False) -> str | None:
        """None when the installed bundle is intact, else what is wrong with it.

        Cheap by default: when every file's size, mtime and inode still match the stamp taken
        at the last full check, the bundle is taken as intact (damage that keeps all three, e.g.
        bit rot, is found only by ``full``). Otherwise, or with ``full``, every file is hashed;
        an intact bundle gets a fresh stamp.
        """
        path = self.bundle_path(bundle_id)
        if path.is_symlink() or not path.is_dir():
            return f"bundle {bundle_id[:12]} is missing ({path} is not a folder)"
        if not full and self._stamp_matches(bundle_id):
            return None
        try:
            Bundle(path).verify()
        except SyncDataError as e:
            return str(e)
        try:
            self.record_stamp(bundle_id)
        except OSError as e:  # a read-only store: the next cheap check hashes again
            log.info("cannot record the stamp of %s: %s", bundle_id[:12], e)
        return None

    def fallback_ids(self) -> list[str]:
        """Good bundles other than the current one, newest first (what to start on when the
        active bundle is damaged): the last good one (when a trial is on) and the previous."""
        p = self.pointer()
        out: list[str] = []
        for bid in (p.last_good, p.previous):
            if bid and bid != p.current and bid not in out and self.bundle_path(bid).is_dir():
                out.append(bid)
        return out
