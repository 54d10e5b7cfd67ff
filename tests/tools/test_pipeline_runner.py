"""The generic runner on small real inputs: the Shibuya extract and the real trip files.

Order, parallel execution, skipping what is current, re-running only what a change reaches,
failure that stops dependants and resumes, atomic outputs, dry-run reasons, spec errors.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import OSM, REPO, TRIPS
from tools.pipeline import (
    PipelineSpecError,
    RunOptions,
    RunsDB,
    StepEvent,
    load_pipeline,
    run_pipeline,
)
from tools.pipeline.hashing import sha256_path


def _write(tmp: Path, steps: list[dict[str, object]], name: str = "small") -> Path:
    doc = {
        "schema_version": 1,
        "name": name,
        "workdir": "work",
        "runs_db": "work/runs.sqlite",
        "steps": steps,
    }
    p = tmp / "pipeline.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def _small(tmp: Path, osm: Path, tile_deg: float = 0.01) -> Path:
    return _write(
        tmp,
        [
            {
                "name": "tiles",
                "kind": "import_tiles",
                "inputs": {"osm": str(osm)},
                "params": {"tile_deg": tile_deg},
            },
            {
                "name": "ingest",
                "kind": "ingest_trips",
                "inputs": {"train": str(TRIPS["gcp_train"]), "valid": [str(TRIPS["gcp_valid"])]},
            },
        ],
    )


def test_runs_in_parallel_then_skips_then_reruns_only_what_changed(tmp_path: Path) -> None:
    osm = tmp_path / "shibuya.osm.pbf"
    shutil.copyfile(OSM["shibuya"], osm)
    events: list[StepEvent] = []
    first = run_pipeline(
        load_pipeline(_small(tmp_path, osm)), RunOptions(jobs=2), progress=events.append
    )
    assert first.status == "ok"
    assert first.names("ran") == ["tiles", "ingest"]
    assert {e.status for e in events} == {"running", "ran"}
    tiles_out = tmp_path / "work" / "tiles" / "tiles.sqlite"
    assert tiles_out.is_file() and first.step("tiles").metrics["directed_edges"] > 1000
    assert first.step("ingest").metrics["trips_by_label"]["train"] > 7000

    again = run_pipeline(load_pipeline(_small(tmp_path, osm)))
    assert again.names("skipped") == ["tiles", "ingest"] and again.names("ran") == []
    assert again.step("tiles").metrics == first.step("tiles").metrics  # carried forward

    changed = run_pipeline(load_pipeline(_small(tmp_path, osm, tile_deg=0.02)))
    assert changed.names("ran") == ["tiles"] and changed.names("skipped") == ["ingest"]
    assert changed.step("tiles").reason == "parameters changed: tile_deg"

    with RunsDB(tmp_path / "work" / "runs.sqlite") as db:
        runs = db.list_runs()
        rec = db.get_run(changed.run_id or -1)
    assert [r["id"] for r in runs] == [3, 2, 1]
    assert [r["status"] for r in runs] == ["ok", "ok", "ok"]
    tiles_rec = rec["steps"][0]
    assert tiles_rec["params"] == {"tile_deg": 0.02}
    assert tiles_rec["input_hashes"]["osm"][0][1] == sha256_path(OSM["shibuya"])
    assert tiles_rec["output_hashes"]["tiles"] == sha256_path(tiles_out)
    code = tiles_rec["code_sources"]  # the import closure of the step, module by module
    assert {"tiles", "tiles.build", "tools.pipeline.steps_data"} <= set(code)
    assert not [m for m in code if m.startswith(("agent", "sync", "tools.sim"))]
    assert code["tiles.build"] == sha256_path(REPO / "tiles" / "build.py")
    assert rec["steps"][1]["produced_by_run"] == 1


def test_failed_step_stops_nothing_else_and_resumes(tmp_path: Path) -> None:
    osm = tmp_path / "shibuya.osm.pbf"
    osm.write_bytes(OSM["shibuya"].read_bytes()[:5000])  # a truncated download
    spec = load_pipeline(_small(tmp_path, osm))
    failed = run_pipeline(spec)
    assert failed.status == "failed"
    assert failed.step("tiles").status == "failed" and failed.step("tiles").error
    assert failed.step("ingest").status == "ran"
    tiles_dir = tmp_path / "work" / "tiles"
    assert not (tiles_dir / "tiles.sqlite").exists()
    assert not tiles_dir.exists() or not any(tiles_dir.iterdir())  # nothing partial left
    csv = tmp_path / "work" / "ingest" / "train.csv"
    before = csv.read_bytes()

    shutil.copyfile(OSM["shibuya"], osm)  # the download is fixed
    resumed = run_pipeline(load_pipeline(_small(tmp_path, osm)))
    assert resumed.status == "ok"
    assert resumed.names("ran") == ["tiles"] and resumed.names("skipped") == ["ingest"]
    assert csv.read_bytes() == before


def test_dependants_of_a_failed_step_are_blocked(tmp_path: Path) -> None:
    osm = tmp_path / "m.osm.pbf"
    osm.write_bytes(b"not a pbf")
    p = _write(
        tmp_path,
        [
            {"name": "tiles", "kind": "import_tiles", "inputs": {"osm": str(osm)}},
            {
                "name": "ingest",
                "kind": "ingest_trips",
                "inputs": {"train": str(TRIPS["gcp_valid"])},
            },
            {
                "name": "demand",
                "kind": "build_demand",
                "inputs": {"tiles": "@tiles.tiles", "trips": ["@ingest.train"]},
            },
        ],
    )
    report = run_pipeline(load_pipeline(p))
    assert report.status == "failed"
    assert [(s.name, s.status) for s in report.steps] == [
        ("tiles", "failed"),
        ("ingest", "ran"),
        ("demand", "blocked"),
    ]
    assert report.step("demand").reason == "blocked: tiles failed"


def test_modified_or_partial_outputs_are_never_taken_as_complete(tmp_path: Path) -> None:
    spec = load_pipeline(_small(tmp_path, OSM["shibuya"]))
    assert run_pipeline(spec).status == "ok"
    out = tmp_path / "work" / "tiles" / "tiles.sqlite"
    good = out.read_bytes()
    out.write_bytes(good[: len(good) // 2])  # truncated behind the runner's back
    stale = out.with_name(".tiles.tmp-deadbeef.sqlite")  # what a killed run leaves
    stale.write_bytes(b"partial")
    events: list[StepEvent] = []
    report = run_pipeline(spec, progress=events.append)
    assert report.names("ran") == ["tiles"]
    assert report.step("tiles").reason == "output tiles modified since it was written"
    assert out.read_bytes() == good and not stale.exists()
    out.unlink()
    assert run_pipeline(spec).step("tiles").reason == "output tiles missing"


def test_dry_run_says_what_would_run_and_why_and_records_nothing(tmp_path: Path) -> None:
    p = _small(tmp_path, OSM["shibuya"])
    events: list[StepEvent] = []
    dry = run_pipeline(load_pipeline(p), RunOptions(dry_run=True), progress=events.append)
    assert dry.status == "dry_run" and dry.run_id is None
    assert [(e.step, e.status, e.reason) for e in events] == [
        ("tiles", "would_run", "no previous successful run"),
        ("ingest", "would_run", "no previous successful run"),
    ]
    assert not (tmp_path / "work" / "tiles").exists()
    run_pipeline(load_pipeline(p))
    p2 = _small(tmp_path, OSM["shibuya"], tile_deg=0.005)
    events.clear()
    run_pipeline(load_pipeline(p2), RunOptions(dry_run=True), progress=events.append)
    assert [(e.step, e.status, e.reason) for e in events] == [
        ("tiles", "would_run", "parameters changed: tile_deg"),
        ("ingest", "up_to_date", "up to date"),
    ]
    with RunsDB(tmp_path / "work" / "runs.sqlite") as db:
        assert len(db.list_runs()) == 1


def test_only_and_force(tmp_path: Path) -> None:
    spec = load_pipeline(_small(tmp_path, OSM["shibuya"]))
    only = run_pipeline(spec, RunOptions(only=("ingest",)))
    assert [(s.name, s.status) for s in only.steps] == [
        ("tiles", "not_selected"),
        ("ingest", "ran"),
    ]
    forced = run_pipeline(spec, RunOptions(only=("ingest",), force=True))
    assert forced.step("ingest").status == "ran" and forced.step("ingest").reason == "forced"
    with pytest.raises(PipelineSpecError, match="no step 'nope'"):
        run_pipeline(spec, RunOptions(only=("nope",)))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(colour="red"), "colour: unknown key"),
        (lambda d: d["steps"][0].update(kind="teleport"), "unknown step kind 'teleport'"),
        (lambda d: d["steps"][0]["params"].update(tile_size=1), "tile_size: unknown parameter"),
        (lambda d: d["steps"][0]["params"].update(tile_deg="big"), "expected a number"),
        (lambda d: d["steps"][0]["params"].update(tile_deg=5.0), "tile_deg must be within"),
        (lambda d: d["steps"][1]["inputs"].update(train="@nowhere.x"), "no step named 'nowhere'"),
        (lambda d: d["steps"][1]["inputs"].update(train="@tiles.nope"), "has no output 'nope'"),
        (lambda d: d["steps"][1]["inputs"].pop("train"), "inputs.train: missing"),
        (lambda d: d["steps"][1].update(outputs={"db": "../x"}), "a path inside workdir"),
        (lambda d: d["steps"][1].update(outputs={"db": "tiles"}), "overlaps the output"),
    ],
)
def test_spec_errors_name_the_key(
    tmp_path: Path, mutate: Callable[[Any], object], message: str
) -> None:
    doc = yaml.safe_load(_small(tmp_path, OSM["shibuya"]).read_text())
    mutate(doc)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(PipelineSpecError, match=message.replace("(", r"\(")):
        load_pipeline(p)


def test_cycle_is_rejected(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        [
            {
                "name": "a",
                "kind": "build_demand",
                "inputs": {"tiles": "@b.demand", "trips": ["x.csv"]},
            },
            {
                "name": "b",
                "kind": "build_demand",
                "inputs": {"tiles": "@a.demand", "trips": ["x.csv"]},
            },
        ],
    )
    with pytest.raises(PipelineSpecError, match="dependency cycle: a, b"):
        load_pipeline(p)


def test_cli_kinds_dry_run_and_ingest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tools.cli import main

    assert main(["pipeline", "kinds"]) == 0
    out = capsys.readouterr().out
    assert "timezone=(required)" in out and "publish:" in out
    p = _small(tmp_path, OSM["shibuya"])
    assert main(["pipeline", "run", str(p), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "tiles          would run   no previous successful run" in out
    db = str(tmp_path / "trips.sqlite")
    for _ in range(2):
        assert (
            main(["pipeline", "ingest", "--db", db, "--label", "valid", str(TRIPS["gcp_valid"])])
            == 0
        )
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == lines[1] == "trips: valid 1571"  # the second ingest added nothing
    assert "1571 new" in lines[0] and "0 new, 1571 already present" in lines[2]
    assert main(["pipeline", "run", str(tmp_path / "absent.yaml")]) == 2
    assert "cannot read pipeline" in capsys.readouterr().err


def test_a_second_run_in_the_same_workdir_is_refused(tmp_path: Path) -> None:
    import fcntl
    import os

    from tools.pipeline import PipelineError

    spec = load_pipeline(_small(tmp_path, OSM["shibuya"]))
    spec.workdir.mkdir(parents=True)
    fd = os.open(spec.workdir / ".pipeline.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds the workdir
        with pytest.raises(PipelineError, match="in use by another pipeline run"):
            run_pipeline(spec)
        assert run_pipeline(spec, RunOptions(dry_run=True)).status == "dry_run"
    finally:
        os.close(fd)
    assert run_pipeline(spec).status == "ok"  # released: the next run goes ahead
    with RunsDB(tmp_path / "work" / "runs.sqlite") as db:
        assert [r["status"] for r in db.list_runs()] == ["ok"]
