"""A compromised or buggy publisher signs metadata whose names are not safe as paths: the cab
refuses them (a SyncDataError, the active bundle kept) and touches nothing outside its store."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from sync import BundleStore, PullConfig, SyncDataError, UnsafeNameError, Updater
from sync._fixtures import sign_forged_index
from sync.names import check_bundle_id, check_chunk_hash, check_file_name
from tests.sync.conftest import Fleet, accept_all, utcnow


def pull(fleet: Fleet, url: str) -> Any:
    u = Updater(
        fleet.store(), PullConfig(url, "monaco"), fleet.trusted_root, health_check=accept_all
    )
    try:
        return u.pull()
    finally:
        u.close()


def forged_v2(fleet: Fleet) -> dict[str, Any]:
    """The v2 index as the fleet published it (a copy to tamper with, then sign)."""
    fleet.repo.publish(fleet.bundles["v2"].path, "monaco", utcnow())
    return copy.deepcopy(fleet.repo.published()["monaco"])


def assert_v1_active(fleet: Fleet) -> None:
    store = fleet.store()
    p = store.pointer()
    assert p.current == fleet.bundles["v1"].bundle_id and not p.trial
    active = store.active()
    assert active is not None
    active.verify()


@pytest.fixture
def on_v1(fleet: Fleet, serve: Any) -> Any:
    with serve(fleet.root) as url:
        assert pull(fleet, url).bundle_id == fleet.bundles["v1"].bundle_id
        yield url


BAD_IDS = ["../../victim", "a/b", "../bundles", "", "A" * 64, "x\0y", "0" * 63, 7, None]
BAD_NAMES = [
    "../escape",
    "/etc/passwd",
    "demand/../../escape",
    "a\\..\\b",
    "C:evil",
    "x\0y",
    "",
    ".",
    "./x",
    "demand//x",
    "demand/",
    "x\ny",
    "a" * 256,
    3,
]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_check_bundle_id_refuses_anything_but_a_sha256(bad: Any) -> None:
    with pytest.raises(UnsafeNameError):
        check_bundle_id(bad)
    with pytest.raises(UnsafeNameError):
        check_chunk_hash(bad)
    assert check_bundle_id("0a" * 32) == "0a" * 32


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_check_file_name_refuses_anything_but_a_plain_relative_name(bad: Any) -> None:
    with pytest.raises(UnsafeNameError):
        check_file_name(bad)
    assert check_file_name("demand/model.onnx") == "demand/model.onnx"


@pytest.mark.parametrize("bad_id", ["../../victim", "a/b", "x\0y"])
def test_signed_bundle_id_that_is_not_a_hash_is_refused(
    fleet: Fleet, on_v1: str, tmp_path: Path, bad_id: str
) -> None:
    # a real directory outside the store, where bundles/../../victim points
    victim = fleet.device.parent / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("the cab's own data")
    index = forged_v2(fleet)
    index["bundle_id"] = bad_id
    index["files"]["manifest.yaml"]["sha256"] = bad_id  # consistent, as a publisher would sign
    sign_forged_index(fleet.repo, "monaco", index, utcnow())
    with pytest.raises(SyncDataError, match="bundle id"):
        pull(fleet, on_v1)
    assert (victim / "precious.txt").read_text() == "the cab's own data"
    assert_v1_active(fleet)
    assert not list(fleet.store().trash_dir.iterdir())


@pytest.mark.parametrize("bad_name", ["a\\..\\b", "x\0y", "demand//x"])
def test_signed_file_name_that_is_not_a_plain_relative_name_is_refused(
    fleet: Fleet, on_v1: str, bad_name: str
) -> None:
    index = forged_v2(fleet)
    index["files"][bad_name] = index["files"].pop("params.yaml")
    sign_forged_index(fleet.repo, "monaco", index, utcnow())
    with pytest.raises(SyncDataError, match="file name"):
        pull(fleet, on_v1)
    assert_v1_active(fleet)
    assert not (fleet.device / "escape").exists() and not (fleet.device.parent / "escape").exists()


@pytest.mark.parametrize(
    "field,value",
    [
        ("chunk", "../../../escape"),
        ("chunk_bytes", "lots"),
        ("size_bytes", -1),
        ("chunks", "not-a-list"),
    ],
)
def test_malformed_signed_index_is_refused_not_a_crash(
    fleet: Fleet, on_v1: str, field: str, value: Any
) -> None:
    index = forged_v2(fleet)
    ent = index["files"]["params.yaml"]
    if field == "chunk":
        ent["chunks"][0] = value
    elif field == "chunk_bytes":
        index["chunk_bytes"] = value
    else:
        ent[field] = value
    sign_forged_index(fleet.repo, "monaco", index, utcnow())
    with pytest.raises(SyncDataError):
        pull(fleet, on_v1)
    assert_v1_active(fleet)


def test_corrupt_pointer_naming_a_path_is_refused(fleet: Fleet, on_v1: str) -> None:
    """current.json naming ``../..`` (a bad earlier version, a hand edit) is a corrupt store,
    not a path to open or delete."""
    store = fleet.store()
    store.pointer_path.write_text('{"schema_version": 1, "current": "../..", "last_good": null}')
    with pytest.raises(Exception, match="corrupt") as ei:
        BundleStore(fleet.device).active()
    assert "SyncStorageError" in type(ei.value).__name__


@pytest.mark.parametrize("bad_name", ["a\\b", "../x", "x\0y", "", "demand//x", "C:x", "./x"])
def test_bundle_manifest_file_name_that_is_not_plain_is_refused(
    tmp_path: Path, bad_name: str
) -> None:
    """``manifest.yaml`` names files too: an unsafe one refuses the bundle (never a crash)."""
    import yaml

    from sync import Bundle, BundleVerifyError
    from sync._fs import sha256_bytes

    doc = {
        "bundle_format": 1,
        "files": {bad_name: {"sha256": "0" * 64, "size_bytes": 1}},
        "manifest": {},
    }
    data = yaml.safe_dump(doc).encode()
    d = tmp_path / sha256_bytes(data)
    d.mkdir()
    (d / "manifest.yaml").write_bytes(data)
    with pytest.raises(BundleVerifyError, match="file name"):
        Bundle(d)
