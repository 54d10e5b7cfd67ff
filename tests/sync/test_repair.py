"""A damaged active bundle is found and fetched again (issue 13.2): real fleet repository and
server on loopback, the real ``nagashi`` command in subprocesses, real damage on disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sync import PullConfig, Updater
from sync.logstore import SqliteLogStorage
from tests.sync.conftest import Fleet, accept_all, utcnow

REPO = Path(__file__).resolve().parents[2]


def nagashi(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def inproc(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """``nagashi ARGS`` in this process (the quick read-only commands): rc, stdout, stderr."""
    from tools.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def pull(fleet: Fleet, url: str) -> Any:
    u = Updater(
        fleet.store(), PullConfig(url, "monaco"), fleet.trusted_root, health_check=accept_all
    )
    try:
        return u.pull()
    finally:
        u.close()


def cli_pull(fleet: Fleet, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    root = fleet.work / "root.json"
    root.write_bytes(fleet.trusted_root)
    return nagashi(
        "bundle", "pull", "--store", fleet.device, "--server", url, "--area", "monaco",
        "--trusted-root", root, "--json", *extra,
    )  # fmt: skip


def flip_a_byte(path: Path, *, keep_mtime: bool = False) -> None:
    """Damage in place: same size, same inode, one byte changed (a bad card, a stray write)."""
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(st.st_size // 2)
        b = fh.read(1)
        fh.seek(st.st_size // 2)
        fh.write(bytes([b[0] ^ 0xFF]))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def assert_intact(fleet: Fleet, bundle_id: str) -> None:
    store = fleet.store()
    p = store.pointer()
    assert p.current == bundle_id and not p.trial and bundle_id not in p.rejected
    assert store.check_bundle(bundle_id, full=True) is None


@pytest.mark.parametrize("damage", ["file", "folder"])
def test_pull_repairs_a_damaged_active_bundle_and_status_says_so(
    fleet: Fleet, serve: Any, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    v1 = fleet.bundles["v1"].bundle_id
    with serve(fleet.root) as url:
        assert pull(fleet, url).status == "installed"
        active = fleet.store().bundle_path(v1)
        if damage == "file":
            flip_a_byte(active / "tiles.sqlite")
        else:
            shutil.rmtree(active)
        rc, out, err = inproc(capsys, "bundle", "status", "--store", fleet.device)
        assert rc == 0, err
        assert json.loads(out)["active"]["state"] == "damaged" and "DAMAGED" in err
        r = cli_pull(fleet, url)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert res["status"] == "repaired" and res["bundle_id"] == v1
        assert res["chunks_downloaded"] > 0
        assert pull(fleet, url).status == "up_to_date"
    assert_intact(fleet, v1)
    rc, out, err = inproc(capsys, "bundle", "status", "--store", fleet.device, "--verify")
    assert json.loads(out)["active"]["state"] == "ok" and "DAMAGED" not in err


def test_damage_that_keeps_size_and_mtime_is_found_by_a_full_verify(
    fleet: Fleet, serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cheap check (size, mtime, inode) cannot see it; ``--verify`` hashes and repairs."""
    v1 = fleet.bundles["v1"].bundle_id
    with serve(fleet.root) as url:
        pull(fleet, url)
        flip_a_byte(fleet.store().bundle_path(v1) / "params.yaml", keep_mtime=True)
        assert pull(fleet, url).status == "up_to_date"
        rc, _, err = inproc(capsys, "bundle", "verify", "--store", fleet.device)
        assert rc == 2 and "damaged" in err and len(err.strip().splitlines()) == 1
        r = cli_pull(fleet, url, "--verify")
        assert r.returncode == 0 and json.loads(r.stdout)["status"] == "repaired", r.stderr
    assert_intact(fleet, v1)
    assert inproc(capsys, "bundle", "verify", "--store", fleet.device)[0] == 0


def test_damaged_bundle_on_trial_is_fetched_again_not_rejected(fleet: Fleet, serve: Any) -> None:
    v1, v2 = fleet.bundles["v1"].bundle_id, fleet.bundles["v2"]
    with serve(fleet.root) as url:
        pull(fleet, url)
        fleet.repo.publish(v2.path, "monaco", utcnow())
        store = fleet.store()  # v2 installed and on trial, then the power went
        staged = store.staging_path(v2.bundle_id)
        shutil.copytree(v2.path, staged)  # a copy: the damage below stays on the device
        store.install(staged, v2.bundle_id)
        store.activate(v2.bundle_id, trial=True)
        flip_a_byte(fleet.store().bundle_path(v2.bundle_id) / "tiles.sqlite")
        res = pull(fleet, url)
    assert res.status == "installed" and res.bundle_id == v2.bundle_id
    assert_intact(fleet, v2.bundle_id)
    assert fleet.store().pointer().previous == v1


MONACO_TRACE = "time,lon,lat,heading,speed,accuracy\n" + "".join(
    f"2015-06-02T10:00:{i:02d}Z,{7.4200 + i * 0.00005:.6f},43.7370,90,5.0,5\n" for i in range(8)
)


def agent_run(fleet: Fleet, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    trace = fleet.work / "monaco.csv"
    trace.write_text(MONACO_TRACE)
    return nagashi(
        "agent", "run", "--bundle-dir", fleet.device, "--gps", trace, "--speed", "0",
        "--timezone", "Europe/Monaco", "--no-api", "--quiet", "--json",
        "--data-dir", fleet.work / f"data-{time.monotonic_ns()}", *extra,
    )  # fmt: skip


def test_agent_starts_on_the_previous_good_bundle_when_the_active_is_gone(
    fleet: Fleet, serve: Any
) -> None:
    v1, v2 = fleet.bundles["v1"].bundle_id, fleet.bundles["v2"]
    with serve(fleet.root) as url:
        pull(fleet, url)
        fleet.repo.publish(v2.path, "monaco", utcnow())
        assert pull(fleet, url).status == "installed"  # v2 committed; v1 kept as previous
    store = fleet.store()
    assert store.pointer().previous == v1 and v1 in store.installed()
    shutil.rmtree(store.bundle_path(v2.bundle_id))
    r = agent_run(fleet)  # no network at all
    assert r.returncode == 0, r.stderr
    assert f"bundle {v1[:12]}" in r.stderr and "previous good bundle" in r.stderr
    assert json.loads(r.stdout)["ticks"] > 0


def test_agent_with_no_fallback_pulls_the_damaged_active_bundle_again_at_start(
    fleet: Fleet, serve: Any
) -> None:
    v1 = fleet.bundles["v1"].bundle_id
    storage = SqliteLogStorage(fleet.root / "fleet.sqlite")
    token = storage.add_token("vehicle", "cab-1", time.time())
    storage.close()
    (fleet.work / "cab.token").write_text(token)
    (fleet.work / "root.json").write_bytes(fleet.trusted_root)
    with serve(fleet.root) as url:
        pull(fleet, url)
        assert fleet.store().fallback_ids() == []
        flip_a_byte(fleet.store().bundle_path(v1) / "demand" / "demand.npz")
        r = agent_run(
            fleet, "--sync-server", url, "--token-file", fleet.work / "cab.token",
            "--area", "monaco", "--trusted-root", fleet.work / "root.json",
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"bundle {v1[:12]}" in r.stderr and "re-pulling" in r.stderr
    assert_intact(fleet, v1)


def test_running_agent_on_the_fallback_switches_back_once_sync_repaired_the_active(
    fleet: Fleet, serve: Any
) -> None:
    from collections.abc import Iterator

    from agent.clock import ManualClock, SystemClock
    from agent.gps import Fix, TraceReplay, read_csv_trace
    from agent.runtime import Agent, AgentConfig, SyncSettings

    v1, v2 = fleet.bundles["v1"].bundle_id, fleet.bundles["v2"]
    storage = SqliteLogStorage(fleet.root / "fleet.sqlite")
    token = storage.add_token("vehicle", "cab-2", time.time())
    storage.close()
    root = fleet.work / "root.json"
    root.write_bytes(fleet.trusted_root)
    trace = fleet.work / "monaco.csv"
    trace.write_text(MONACO_TRACE)
    with serve(fleet.root) as url:
        pull(fleet, url)
        fleet.repo.publish(v2.path, "monaco", utcnow())
        pull(fleet, url)
        shutil.rmtree(fleet.store().bundle_path(v2.bundle_id))
        agent: Agent

        class Held(TraceReplay):
            def fixes(self) -> Iterator[Fix | None]:
                for i, f in enumerate(super().fixes()):
                    if i == 2:  # hold the drive until the background pull has run
                        end = time.monotonic() + 60
                        while time.monotonic() < end and not agent.sync_status().get("last_pull"):
                            time.sleep(0.05)
                    yield f

        sync = SyncSettings(url, token=token, area="monaco", trusted_root=root, pull_interval_s=60)
        config = AgentConfig(
            bundle_dir=fleet.device, data_dir=fleet.work / "data", timezone="Europe/Monaco",
            vehicle_id="cab-2", sync=sync,
        )  # fmt: skip
        agent = Agent(config, Held(read_csv_trace(trace), ManualClock(), speed=1.0), SystemClock())
        assert agent.bundle.bundle_id == v1  # started on the previous good bundle
        agent.run()
    assert agent.sync_status()["last_pull"] == {"status": "repaired", "bundle": v2.bundle_id}
    assert agent.bundle.bundle_id == v2.bundle_id  # and switched back at the next tick
    assert_intact(fleet, v2.bundle_id)


def test_active_folder_replaced_by_a_link_is_repaired_and_what_it_named_is_left_alone(
    fleet: Fleet, serve: Any
) -> None:
    """bundles/<id> turned into a symlink to a folder elsewhere: the repair removes the link,
    never the folder it points to, and leaves nothing in trash/."""
    v1 = fleet.bundles["v1"].bundle_id
    with serve(fleet.root) as url:
        pull(fleet, url)
        active = fleet.store().bundle_path(v1)
        elsewhere = fleet.work / "elsewhere"
        active.rename(elsewhere)
        active.symlink_to(elsewhere, target_is_directory=True)
        assert pull(fleet, url).status == "repaired"
    assert not fleet.store().bundle_path(v1).is_symlink()
    assert_intact(fleet, v1)
    assert (elsewhere / "manifest.yaml").is_file()  # the link's target survives
    assert not list(fleet.store().trash_dir.iterdir())
