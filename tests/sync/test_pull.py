"""Pull, install, trial, commit and rollback against a real fleet server on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sync import (
    Bundle,
    BundleStore,
    HealthCheckError,
    PullConfig,
    SyncTransportError,
    Updater,
    default_health_check,
)
from sync.fetcher import FetchConfig
from tests.sync.conftest import Fleet, accept_all, utcnow


def updater(fleet: Fleet, url: str, health: Any = default_health_check, **kw: Any) -> Updater:
    cfg = PullConfig(url, "monaco", fetch=FetchConfig(**kw)) if kw else PullConfig(url, "monaco")
    return Updater(fleet.store(), cfg, fleet.trusted_root, health_check=health)


def test_first_pull_installs_and_commits_with_default_health_check(
    fleet: Fleet, serve: Any
) -> None:
    with serve(fleet.root) as url:
        u = updater(fleet, url)
        res = u.pull()
        u.close()
    v1 = fleet.bundles["v1"]
    assert res.status == "installed" and res.bundle_id == v1.bundle_id
    store = fleet.store()
    p = store.pointer()
    assert (p.current, p.trial, p.last_good) == (v1.bundle_id, False, v1.bundle_id)
    active = store.active()
    assert active is not None
    active.verify()
    assert active.tiles_path.read_bytes() == v1.tiles_path.read_bytes()
    assert active.path.parent == store.bundles_dir  # resolved, never through a pointer


def test_second_pull_is_up_to_date_and_moves_no_target_bytes(fleet: Fleet, serve: Any) -> None:
    with serve(fleet.root) as url:
        updater(fleet, url, accept_all).pull()
        res = updater(fleet, url, accept_all).pull()
    assert res.status == "up_to_date"
    assert res.chunks_downloaded == 0


def test_one_tile_update_downloads_only_changed_chunks(fleet: Fleet, serve: Any) -> None:
    v1, v2 = fleet.bundles["v1"], fleet.bundles["v2"]
    with serve(fleet.root) as url:
        updater(fleet, url, accept_all).pull()
        fleet.repo.publish(v2.path, "monaco", utcnow())
        res = updater(fleet, url, accept_all).pull()
    assert res.status == "installed" and res.bundle_id == v2.bundle_id
    changed = sum(
        ent.size_bytes
        for name, ent in v2.files.items()
        if v1.files.get(name) is None or v1.files[name].sha256 != ent.sha256
    )
    assert changed > v2.files["tiles.sqlite"].size_bytes  # tiles.sqlite changed
    assert 0 < res.chunks_downloaded < res.chunks_reused
    assert res.bytes_downloaded < changed
    store = fleet.store()
    assert store.pointer().last_good == v2.bundle_id
    assert store.installed() == sorted([v2.bundle_id, v1.bundle_id]) or store.installed() == [
        v2.bundle_id
    ]


def test_failed_health_check_rolls_back_and_is_not_retried(fleet: Fleet, serve: Any) -> None:
    v1, v2 = fleet.bundles["v1"], fleet.bundles["v2"]
    seen: list[str] = []

    def refuse_v2(b: Bundle) -> None:
        seen.append(b.bundle_id)
        if b.bundle_id == v2.bundle_id:
            raise RuntimeError("planner returned no validated route")

    with serve(fleet.root) as url:
        updater(fleet, url, refuse_v2).pull()
        fleet.repo.publish(v2.path, "monaco", utcnow())
        with pytest.raises(HealthCheckError, match="no validated route"):
            updater(fleet, url, refuse_v2).pull()
        store = fleet.store()
        p = store.pointer()
        assert (p.current, p.trial, p.last_good) == (v1.bundle_id, False, v1.bundle_id)
        assert v2.bundle_id in p.rejected
        Bundle(store.bundle_path(v1.bundle_id)).verify()  # last good never deleted
        from sync import UpdateRejectedError

        with pytest.raises(UpdateRejectedError, match="failed its health check before"):
            updater(fleet, url, refuse_v2).pull()
    assert seen == [v1.bundle_id, v2.bundle_id]


def test_trial_interrupted_by_restart_is_finished_on_next_pull(fleet: Fleet, serve: Any) -> None:
    v1, v2 = fleet.bundles["v1"], fleet.bundles["v2"]
    with serve(fleet.root) as url:
        updater(fleet, url, accept_all).pull()
        store = fleet.store()
        # v2 installed and activated on trial, then the process died before the health check
        from sync.bundle import Bundle as B

        staged = store.staging_path(v2.bundle_id)
        import shutil

        shutil.copytree(v2.path, staged)
        store.install(staged, v2.bundle_id)
        store.activate(v2.bundle_id, trial=True)
        assert store.pointer().trial
        fleet.repo.publish(v2.path, "monaco", utcnow())
        res = updater(fleet, url, accept_all).pull()
    assert res.status == "up_to_date"
    p = fleet.store().pointer()
    assert (p.current, p.trial, p.last_good) == (v2.bundle_id, False, v2.bundle_id)
    B(fleet.store().bundle_path(v1.bundle_id))  # kept as the previous good until gc


def test_offline_keeps_current_bundle(fleet: Fleet, serve: Any, tmp_path: Path) -> None:
    with serve(fleet.root) as url:
        updater(fleet, url, accept_all).pull()
    before = fleet.store().pointer()
    # the server is gone: connection refused on every attempt
    u = updater(fleet, url, accept_all, max_attempts=2, backoff_base_s=0.01)
    with pytest.raises(SyncTransportError, match="unreachable"):
        u.pull()
    assert fleet.store().pointer() == before
    active = BundleStore(fleet.device).active()
    assert active is not None
    active.verify()


def test_prune_removes_only_unsigned_aged_files_and_pulls_still_work(
    fleet: Fleet, serve: Any
) -> None:
    import time

    v2, v3 = fleet.bundles["v2"], fleet.bundles["v3"]
    fleet.repo.publish(v2.path, "monaco", utcnow())
    fleet.repo.publish(v3.path, "monaco", utcnow())
    chunks_before = len(list((fleet.repo.targets_dir / "chunks").iterdir()))
    assert fleet.repo.prune(time.time(), min_age_s=3600) == 0  # too recent: kept
    removed = fleet.repo.prune(time.time() + 7200, min_age_s=3600, keep_versions=1)
    assert removed > 0
    chunks_after = len(list((fleet.repo.targets_dir / "chunks").iterdir()))
    assert chunks_after < chunks_before
    assert len(list(fleet.repo.metadata_dir.glob("*.targets.json"))) == 1
    assert (fleet.repo.metadata_dir / "1.root.json").is_file()
    with serve(fleet.root) as url:
        res = updater(fleet, url, accept_all).pull()
    assert res.bundle_id == v3.bundle_id


def test_damaged_installed_copy_is_fetched_again_not_rejected(fleet: Fleet, serve: Any) -> None:
    import shutil

    v2 = fleet.bundles["v2"]
    with serve(fleet.root) as url:
        updater(fleet, url, accept_all).pull()
        store = fleet.store()
        damaged = store.bundle_path(v2.bundle_id)
        shutil.copytree(v2.path, damaged)
        p = damaged / "params.yaml"
        p.write_bytes(p.read_bytes().replace(b"params-2", b"params-X"))
        fleet.repo.publish(v2.path, "monaco", utcnow())
        res = updater(fleet, url, accept_all).pull()
    assert res.status == "installed" and res.bundle_id == v2.bundle_id
    assert res.chunks_downloaded > 0
    p2 = fleet.store().pointer()
    assert p2.current == v2.bundle_id and not p2.rejected
    active = fleet.store().active()
    assert active is not None
    active.verify()
