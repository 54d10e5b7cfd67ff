"""Power loss while installing: SIGKILL the installing process at random points.

Each run starts from a device running v1 while the server offers v2, forks a process that
pulls and installs v2, and kills it with SIGKILL: half of the runs at a random instant
(uniform over the measured install time), half at a random step between two filesystem
operations (every chunk, the assembly of each file, verify, fsync, rename, pointer write).
Afterwards the active bundle must be exactly v1 or v2 and verify by hash, and a device left on
v1 must complete the update on its next pull (resuming what was downloaded).

Limitation: SIGKILL loses the process but not the page cache; real power loss also drops
unsynced writes, which this test cannot observe (the code fsyncs files and directories before
every rename that publishes them).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from sync import BundleStore, PullConfig, Updater
from tests.sync.conftest import Fleet, accept_all, utcnow

RUNS = int(os.environ.get("NAGASHI_POWER_LOSS_RUNS", "100"))


def _copy_device(src: Path, dst: Path) -> None:
    # bundle files are immutable: hard links keep each run cheap; a run that wrote into an
    # installed file would corrupt the template and fail every later run's hash check
    shutil.copytree(src, dst, copy_function=os.link, ignore=shutil.ignore_patterns("tuf"))
    shutil.copytree(src / "tuf", dst / "tuf", symlinks=True)


def _pull(device: Path, url: str, trusted_root: bytes, kill_at_step: int | None) -> None:
    steps = 0

    def checkpoint(step: str) -> None:
        nonlocal steps
        steps += 1
        if kill_at_step is not None and steps >= kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)

    store = BundleStore(device, checkpoint=checkpoint)
    u = Updater(store, PullConfig(url, "monaco"), trusted_root, health_check=accept_all)
    u.pull()
    u.close()


def test_sigkill_at_random_points_leaves_old_or_new(
    fleet: Fleet, serve: Any, tmp_path: Path
) -> None:
    v1, v2 = fleet.bundles["v1"], fleet.bundles["v2"]
    rng = random.Random(20261127)
    template = tmp_path / "template"
    with serve(fleet.root) as url:
        Updater(
            BundleStore(template),
            PullConfig(url, "monaco"),
            fleet.trusted_root,
            health_check=accept_all,
        ).pull()
        fleet.repo.publish(v2.path, "monaco", utcnow())
        # one uninterrupted install: its duration and number of steps
        probe = tmp_path / "probe"
        _copy_device(template, probe)
        steps: list[str] = []
        store = BundleStore(probe, checkpoint=steps.append)
        t0 = time.monotonic()
        Updater(
            store, PullConfig(url, "monaco"), fleet.trusted_root, health_check=accept_all
        ).pull()
        install_s = time.monotonic() - t0
        assert store.pointer().current == v2.bundle_id
        assert any(s.startswith("chunk:") for s in steps) and "install:renamed" in steps

        outcomes: dict[str, int] = {"old": 0, "new": 0}
        left_on_old: list[Path] = []
        for i in range(RUNS):
            device = tmp_path / f"run{i}"
            _copy_device(template, device)
            by_step = i % 2 == 0
            kill_step = rng.randint(1, len(steps)) if by_step else None
            pid = os.fork()
            if pid == 0:  # the installing process
                code = 0
                try:
                    _pull(device, url, fleet.trusted_root, kill_step)
                except BaseException:
                    code = 1
                os._exit(code)
            if not by_step:
                time.sleep(rng.uniform(0.0, install_s * 1.3))
                os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            assert not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1), f"run {i} raised"

            after = BundleStore(device)
            p = after.pointer()
            assert p.current in (v1.bundle_id, v2.bundle_id), f"run {i}: pointer {p}"
            active = after.active()
            assert active is not None
            active.verify()
            want = v1 if p.current == v1.bundle_id else v2
            assert active.tiles_path.read_bytes() == want.tiles_path.read_bytes()
            if p.current == v1.bundle_id:
                assert not p.trial and p.last_good == v1.bundle_id
                outcomes["old"] += 1
                left_on_old.append(device)
            else:
                outcomes["new"] += 1
                assert p.last_good in (v1.bundle_id, v2.bundle_id)
                if p.trial:  # killed during the trial: the restart finishes it
                    assert p.last_good == v1.bundle_id
                    after.resume_trial(accept_all)
                    assert after.pointer().last_good == v2.bundle_id
            if i % 10 != 0 and device not in left_on_old[-5:]:
                shutil.rmtree(device)

        assert outcomes["old"] > 0 and outcomes["new"] > 0, outcomes
        # a device killed mid-install completes the update on its next pull
        for device in left_on_old[-5:]:
            res = Updater(
                BundleStore(device),
                PullConfig(url, "monaco"),
                fleet.trusted_root,
                health_check=accept_all,
            ).pull()
            assert res.bundle_id == v2.bundle_id
            active = BundleStore(device).active()
            assert active is not None
            active.verify()
