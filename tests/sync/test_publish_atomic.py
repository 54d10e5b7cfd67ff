"""``fleet publish`` checks everything before it writes, and a failure leaves the fleet
directory exactly as it was (issue 13, item 9)."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sync import FleetRepository
from sync.errors import SyncError
from tests.sync.conftest import Fleet, utcnow
from tools.cli import main


def tree(top: Path) -> dict[str, str]:
    """Every file and folder under ``top``, with the sha256 of each file's bytes."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), top) + "/"] = "dir"
        for f in filenames:
            p = Path(dirpath, f)
            out[os.path.relpath(p, top)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _typo(fleet: Fleet) -> Path:
    return fleet.work / "fleet-typo"  # the mistyped --root: does not exist


def _empty_dir(fleet: Fleet) -> Path:
    p = fleet.work / "empty"
    p.mkdir()
    return p


def _key_offline(role: str) -> Callable[[Fleet], Path]:
    def setup(fleet: Fleet) -> Path:
        shutil.move(fleet.root / "keys" / f"{role}.pem", fleet.work / f"{role}.pem")
        return fleet.root

    return setup


def _key_garbage(fleet: Fleet) -> Path:
    (fleet.root / "keys" / "snapshot.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nxx\n")
    return fleet.root


def _key_of_another_role(fleet: Fleet) -> Path:
    keys = fleet.root / "keys"
    shutil.copyfile(keys / "targets.pem", keys / "timestamp.pem")
    return fleet.root


def _timestamp_garbled(fleet: Fleet) -> Path:
    p = fleet.root / "repo" / "metadata" / "timestamp.json"
    p.write_bytes(p.read_bytes()[:40])
    return fleet.root


CAUSES: dict[str, Callable[[Fleet], Path]] = {
    "mistyped root": _typo,
    "root without a repository": _empty_dir,
    "targets key offline": _key_offline("targets"),
    "timestamp key offline": _key_offline("timestamp"),
    "snapshot key unreadable": _key_garbage,
    "timestamp key of another role": _key_of_another_role,
    "timestamp.json damaged": _timestamp_garbled,
}


@pytest.mark.parametrize("cause", sorted(CAUSES))
def test_failing_publish_leaves_nothing_behind(fleet: Fleet, cause: str) -> None:
    root = CAUSES[cause](fleet)
    before = tree(fleet.work)
    with pytest.raises(SyncError):
        FleetRepository(root).publish(fleet.bundles["v2"].path, "monaco", utcnow())
    assert tree(fleet.work) == before


def test_damaged_bundle_is_refused_before_writing(fleet: Fleet) -> None:
    bad = fleet.work / "bad-bundle"
    shutil.copytree(fleet.bundles["v2"].path, bad)
    with open(bad / "params.yaml", "ab") as fh:
        fh.write(b"# tampered\n")
    before = tree(fleet.work)
    with pytest.raises(SyncError):
        fleet.repo.publish(bad, "monaco", utcnow())
    assert tree(fleet.work) == before


def test_disk_full_at_the_last_write_is_undone(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault injected where it hurts most: every chunk, the index, published.json, the new
    targets and snapshot are written, then timestamp.json cannot be."""
    real = FleetRepository._write_md

    def full_at_timestamp(self: FleetRepository, name: str, md: Any, *a: Any) -> None:
        if name == "timestamp.json":
            raise OSError(28, "No space left on device")
        real(self, name, md, *a)

    before = tree(fleet.work)
    monkeypatch.setattr(FleetRepository, "_write_md", full_at_timestamp)
    with pytest.raises(SyncError, match="No space left"):
        fleet.repo.publish(fleet.bundles["v2"].path, "monaco", utcnow())
    assert tree(fleet.work) == before
    monkeypatch.setattr(FleetRepository, "_write_md", real)
    r = fleet.repo.publish(fleet.bundles["v2"].path, "monaco", utcnow())  # and it still works
    assert r.bundle_id == fleet.bundles["v2"].bundle_id and r.chunks_new > 0


def test_cli_publish_to_a_mistyped_root_is_one_line(fleet: Fleet, capsys: Any) -> None:
    before = tree(fleet.work)
    bundle = str(fleet.bundles["v2"].path)
    rc = main(
        ["fleet", "publish", "--root", str(_typo(fleet)), "--bundle", bundle, "--area", "monaco"]
    )
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "fleet-typo" in err and "--root" in err
    assert tree(fleet.work) == before
