"""TUF cases against a real server on loopback: each attack is rejected and the bundle that was
active before stays active and verifies."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]  # no __all__ there
from tuf.api.metadata import Metadata

from sync import PullConfig, Updater, UpdateRejectedError
from sync.errors import SyncStorageError
from sync.repository import FleetRepository, index_target_path
from tests.sync.conftest import Fleet, accept_all, utcnow


def pull(fleet: Fleet, url: str) -> Any:
    u = Updater(
        fleet.store(), PullConfig(url, "monaco"), fleet.trusted_root, health_check=accept_all
    )
    try:
        return u.pull()
    finally:
        u.close()


def assert_still_active(fleet: Fleet, bundle_id: str) -> None:
    store = fleet.store()
    p = store.pointer()
    assert p.current == bundle_id and not p.trial
    active = store.active()
    assert active is not None and active.bundle_id == bundle_id
    active.verify()


def new_chunk_paths(fleet: Fleet, old_id: str) -> list[Path]:
    """Server files of chunks the newest monaco bundle has and the old one lacks."""
    pub = fleet.repo.published()["monaco"]
    old = {h for f in _index_of(fleet, old_id)["files"].values() for h in f["chunks"]}
    new = [h for f in pub["files"].values() for h in f["chunks"] if h not in old]
    return [fleet.repo.targets_dir / "chunks" / f"{h}.{h}" for h in new]


_INDEXES: dict[str, dict[str, Any]] = {}


def _index_of(fleet: Fleet, bundle_id: str) -> dict[str, Any]:
    for p in (fleet.repo.targets_dir / "areas" / "monaco").glob("*.index.json"):
        doc = json.loads(p.read_bytes())
        if doc["bundle_id"] == bundle_id:
            return dict(doc)
    raise AssertionError("index not found")


@pytest.fixture
def on_v1(fleet: Fleet, serve: Any) -> Any:
    """The device runs v1; the server then publishes v2. Yields the server URL."""
    with serve(fleet.root) as url:
        assert pull(fleet, url).bundle_id == fleet.bundles["v1"].bundle_id
        yield url


def test_tampered_target_is_rejected(fleet: Fleet, on_v1: str) -> None:
    v1, v2 = fleet.bundles["v1"], fleet.bundles["v2"]
    fleet.repo.publish(v2.path, "monaco", utcnow())
    victim = new_chunk_paths(fleet, v1.bundle_id)[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same length, one byte flipped
    victim.write_bytes(bytes(data))
    with pytest.raises(UpdateRejectedError, match="LengthOrHashMismatch"):
        pull(fleet, on_v1)
    assert_still_active(fleet, v1.bundle_id)


def test_oversize_target_is_rejected(fleet: Fleet, on_v1: str) -> None:
    v1, v2 = fleet.bundles["v1"], fleet.bundles["v2"]
    fleet.repo.publish(v2.path, "monaco", utcnow())
    victim = new_chunk_paths(fleet, v1.bundle_id)[0]
    victim.write_bytes(victim.read_bytes() + b"\0" * 100_000)  # endless-data attack
    with pytest.raises(UpdateRejectedError, match="more than the signed length"):
        pull(fleet, on_v1)
    assert_still_active(fleet, v1.bundle_id)


def test_expired_timestamp_is_rejected(fleet: Fleet, on_v1: str) -> None:
    v1, v2 = fleet.bundles["v1"], fleet.bundles["v2"]
    fleet.repo.publish(v2.path, "monaco", utcnow() - timedelta(days=2))  # expired a day ago
    with pytest.raises(UpdateRejectedError, match="expired"):
        pull(fleet, on_v1)
    assert_still_active(fleet, v1.bundle_id)


def test_rolled_back_metadata_is_rejected(fleet: Fleet, on_v1: str) -> None:
    v2, v3 = fleet.bundles["v2"], fleet.bundles["v3"]
    saved = fleet.work / "metadata-at-v2"
    fleet.repo.publish(v2.path, "monaco", utcnow())
    shutil.copytree(fleet.repo.metadata_dir, saved)
    assert pull(fleet, on_v1).bundle_id == v2.bundle_id
    fleet.repo.publish(v3.path, "monaco", utcnow())
    assert pull(fleet, on_v1).bundle_id == v3.bundle_id
    # the server (or a man in the middle) serves the older, validly signed state again
    shutil.rmtree(fleet.repo.metadata_dir)
    shutil.copytree(saved, fleet.repo.metadata_dir)
    with pytest.raises(UpdateRejectedError, match=r"BadVersionNumber"):
        pull(fleet, on_v1)
    assert_still_active(fleet, v3.bundle_id)


@pytest.mark.parametrize("what", ["index", "chunk", "targets_metadata"])
def test_mix_and_match_is_rejected(fleet: Fleet, on_v1: str, what: str) -> None:
    v1, v2, v3 = fleet.bundles["v1"], fleet.bundles["v2"], fleet.bundles["v3"]
    r2 = fleet.repo.publish(v2.path, "monaco", utcnow())
    if what == "index":
        # serve the v1 index (validly signed earlier) where the v2 index is expected
        h = fleet.repo.targets_md().signed.targets[index_target_path("monaco")].hashes["sha256"]
        target = fleet.repo.targets_dir / "areas" / "monaco" / f"{h}.index.json"
        old = [p for p in target.parent.glob("*.index.json") if p != target]
        shutil.copyfile(old[0], target)
    elif what == "chunk":
        # a v2 tiles chunk replaced by the same-length chunk of another bundle (v3)
        idx2 = _index_of(fleet, v2.bundle_id)["files"]["tiles.sqlite"]["chunks"]
        work3 = fleet.work / "fleet3"
        from sync import FleetRepository

        other = FleetRepository(work3)
        other.init(utcnow())
        other.publish(v3.path, "monaco", utcnow())
        idx3 = other.published()["monaco"]["files"]["tiles.sqlite"]["chunks"]
        i = next(i for i, (a, b) in enumerate(zip(idx2, idx3, strict=False)) if a != b)
        src = other.targets_dir / "chunks" / f"{idx3[i]}.{idx3[i]}"
        dst = fleet.repo.targets_dir / "chunks" / f"{idx2[i]}.{idx2[i]}"
        assert src.stat().st_size == dst.stat().st_size
        shutil.copyfile(src, dst)
    else:
        # the new snapshot names targets v{n}; serve the older targets under that name
        n = r2.targets_version
        shutil.copyfile(
            fleet.repo.metadata_dir / f"{n - 1}.targets.json",
            fleet.repo.metadata_dir / f"{n}.targets.json",
        )
    expected = "BadVersionNumber" if what == "targets_metadata" else "LengthOrHashMismatch"
    with pytest.raises(UpdateRejectedError, match=expected):
        pull(fleet, on_v1)
    assert_still_active(fleet, v1.bundle_id)


def test_key_rotation_is_followed_and_the_retired_key_is_refused(
    fleet: Fleet, on_v1: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    v2, v3 = fleet.bundles["v2"], fleet.bundles["v3"]
    root_v = fleet.repo.rotate_key("targets", utcnow())
    assert root_v == 2
    fleet.repo.publish(v2.path, "monaco", utcnow())
    assert pull(fleet, on_v1).bundle_id == v2.bundle_id  # follows root v2, new targets key
    assert (fleet.store().tuf_dir / "root_history" / "2.root.json").is_file()
    # an attacker holding the retired targets key (and the online keys) signs v3
    keys = fleet.repo.keys_dir
    shutil.copyfile(keys / "targets.pem", fleet.work / "current-targets.pem")
    shutil.copyfile(fleet.repo.retired_key_paths("targets")[0], keys / "targets.pem")
    with pytest.raises(SyncStorageError, match="not the targets key root version 2 trusts"):
        fleet.repo.publish(v3.path, "monaco", utcnow())  # our publisher refuses to sign
    # the attacker's own tooling signs anyway (no check of the key against root)
    monkeypatch.setattr(FleetRepository, "_check_can_publish", lambda self: None)
    fleet.repo.publish(v3.path, "monaco", utcnow())
    with pytest.raises(UpdateRejectedError, match=r"Unsigned|signature|threshold"):
        pull(fleet, on_v1)
    assert_still_active(fleet, v2.bundle_id)


def test_root_rotation_and_forged_root_are_told_apart(fleet: Fleet, on_v1: str) -> None:
    v1, v2 = fleet.bundles["v1"], fleet.bundles["v2"]
    fleet.repo.rotate_key("root", utcnow())  # root v2 signed by old and new root keys
    fleet.repo.publish(v2.path, "monaco", utcnow())
    assert pull(fleet, on_v1).bundle_id == v2.bundle_id
    # a forged root v3 signed only by a key of the attacker's
    md: Metadata[Any] = Metadata.from_file(str(fleet.repo.metadata_dir / "2.root.json"))
    evil = CryptoSigner.generate_ed25519()
    for keyid in list(md.signed.roles["root"].keyids):
        md.signed.revoke_key(keyid, "root")
    md.signed.add_key(evil.public_key, "root")
    md.signed.version = 3
    md.signatures.clear()
    md.sign(evil)
    md.to_file(str(fleet.repo.metadata_dir / "3.root.json"))
    with pytest.raises(UpdateRejectedError, match=r"Unsigned|signature|threshold"):
        pull(fleet, on_v1)
    assert_still_active(fleet, v2.bundle_id)
    assert v1.bundle_id != v2.bundle_id


def test_expired_root_is_refused_until_renewed(fleet: Fleet, on_v1: str) -> None:
    v1, v2 = fleet.bundles["v1"], fleet.bundles["v2"]
    # root v2 written a year and a day ago: expired now
    fleet.repo.renew_root(utcnow() - timedelta(days=366))
    fleet.repo.publish(v2.path, "monaco", utcnow())
    with pytest.raises(UpdateRejectedError, match="expired"):
        pull(fleet, on_v1)
    assert_still_active(fleet, v1.bundle_id)
    assert fleet.repo.renew_root(utcnow()) == 3
    assert pull(fleet, on_v1).bundle_id == v2.bundle_id
