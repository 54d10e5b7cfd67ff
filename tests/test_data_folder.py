"""The repository carries the real data it runs on: every file present, intact and described."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import OSM, REPO, SHARED_DATA, TRIPS
from tiles.fileio import real_data_dir, sha256_file

DATA = REPO / "data"


def test_every_file_the_tests_use_is_in_the_repository_with_its_sha256() -> None:
    sources = json.loads((DATA / "sources.json").read_text())["files"]
    listed = {s["path"]: s for s in sources}
    for path in [*OSM.values(), *TRIPS.values()]:
        rel = path.relative_to(SHARED_DATA).as_posix()
        assert rel in listed, f"{rel} has no entry in data/sources.json"
        assert sha256_file(DATA / rel) == listed[rel]["sha256"]
        assert listed[rel]["licence"] and len(listed[rel]["commit"]) == 40
    readme = (DATA / "README.md").read_text()
    assert "© OpenStreetMap contributors, ODbL 1.0" in readme
    assert all(Path(p).name in readme for p in listed)


def test_fetch_check_reports_a_damaged_copy(tmp_path: Path) -> None:
    # a copy of the folder with one file changed: --check names it and exits 2
    work = tmp_path / "data"
    (work / "osm").mkdir(parents=True)
    (work / "trips").mkdir()
    for name in ("fetch.py", "sources.json"):
        (work / name).write_bytes((DATA / name).read_bytes())
    for s in json.loads((DATA / "sources.json").read_text())["files"]:
        (work / s["path"]).write_bytes((DATA / s["path"]).read_bytes())
    ok = subprocess.run([sys.executable, str(work / "fetch.py"), "--check"], capture_output=True)
    assert ok.returncode == 0, ok.stderr
    victim = work / "osm" / "tokyo_shibuya_roads.osm.pbf"
    victim.write_bytes(victim.read_bytes()[:-1])
    bad = subprocess.run(
        [sys.executable, str(work / "fetch.py"), "--check"], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert (
        bad.stderr.strip()
        == "data: osm/tokyo_shibuya_roads.osm.pbf: sha256 differs from sources.json"
    )


def test_the_code_finds_the_repositorys_data_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("NAGASHI_DATA", raising=False)
    assert real_data_dir() == DATA
    monkeypatch.setenv("NAGASHI_DATA", str(tmp_path))
    assert real_data_dir() == tmp_path.resolve()
