"""The signed chain of the fleet's TUF repository: which targets a targets version lists (the
areas' indexes, their chunks, running rollouts and their candidates), the live role's
delegation, and signing targets -> snapshot -> timestamp (timestamp last)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]  # no __all__ there
from tuf.api.metadata import (  # type: ignore[attr-defined]  # no __all__ there
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from sync._fs import storage_errors
from sync._repo_files import (
    LIVE_PATHS,
    LIVE_ROLE,
    RepoFiles,
    chunk_target_path,
    index_target_path,
)
from sync.cohorts import ROLLOUT_SCHEMA, candidate_target_path, rollout_target_path
from sync.errors import SyncStorageError


def _expiry(now: datetime, seconds: int) -> datetime:
    return (now + timedelta(seconds=seconds)).replace(microsecond=0)


def _live_delegations(signer: CryptoSigner) -> Delegations:
    role = DelegatedRole(
        LIVE_ROLE, [signer.public_key.keyid], 1, terminating=True, paths=list(LIVE_PATHS)
    )
    return Delegations({signer.public_key.keyid: signer.public_key}, {LIVE_ROLE: role})


class RepoSigning(RepoFiles):
    """The repository's files and the signing of its metadata chain."""

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
