"""The example pipelines as shipped (pipelines/*.yaml), the Shibuya transfer, publishing behind
the release gate, reproduction and its refusal when a raw input changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import OSM, REPO
from tools.cli import main
from tools.pipeline import (
    ReproduceError,
    RunOptions,
    RunReport,
    load_pipeline,
    run_pipeline,
)
from tools.pipeline.reproduce import reproduce_run

PIPELINES = REPO / "pipelines"
NOT_HERE = ("simulate", "publish")  # the examples' 30-seed simulation is the operator's


@pytest.mark.parametrize("name", ["manhattan", "shibuya"])
def test_examples_load_and_name_real_inputs(name: str) -> None:
    spec = load_pipeline(PIPELINES / f"{name}.yaml")
    assert spec.name == name
    kinds = [s.kind.name for s in spec.steps]
    assert kinds[-2:] == ["build_bundle", "publish"] and "simulate" in kinds
    for s in spec.steps:
        for refs in s.inputs.values():
            for r in refs:
                assert r.step is not None or (r.path is not None and r.path.exists()), r
    assert spec.step("publish").inputs["planner_gate"][0].step == "simulate"


@pytest.fixture(scope="module")
def shibuya(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunReport]:
    """pipelines/shibuya.yaml up to the bundle, its Shibuya extract a private copy."""
    tmp = tmp_path_factory.mktemp("pipeline-shibuya")
    osm = tmp / "tokyo_shibuya_roads.osm.pbf"
    shutil.copyfile(OSM["shibuya"], osm)
    text = (PIPELINES / "shibuya.yaml").read_text()
    text = text.replace("../data/osm/tokyo_shibuya_roads.osm.pbf", str(osm))
    path = PIPELINES / "shibuya.yaml"  # relative inputs resolve from the example's directory
    spec = load_pipeline(path, text=text, workdir=tmp / "work", runs_db=tmp / "runs.sqlite")
    report = run_pipeline(spec, RunOptions(jobs=2, exclude_kinds=NOT_HERE))
    return tmp, report


def test_shibuya_bundle_ships_transferred_demand_and_says_so(
    shibuya: tuple[Path, RunReport],
) -> None:
    from models import DemandTable
    from sync import Bundle

    tmp, report = shibuya
    assert report.status == "ok", report.error
    assert report.names("not_selected") == list(NOT_HERE)
    bundle = Bundle(tmp / "work" / "bundle" / "bundles" / str(report.bundle_id))
    bundle.verify()
    m = bundle.manifest
    assert m["area"] == "shibuya" and m["predicted_demand"]["version"] == "none"
    assert "no predicted-demand model" in m["description"]
    table = DemandTable.load(bundle.demand_dir)
    assert table.version.startswith("transfer-")
    assert m["statistical_demand"]["version"] == table.version
    assert table.meta["source"] == "transferred" and table.meta["currency"] == "JPY"
    assert "transferred from stat-" in table.meta["note"]
    # spread over Shibuya by MLIT's people-flow (models/peopleflow.py), and it says so
    assert table.version.startswith("transfer-peopleflow-")
    assert table.sources is not None
    flow = table.sources["pickup_rate"][-1]
    assert flow["path"].endswith("jp_peopleflow_shibuya_2019.csv") and "MLIT" in flow["kind"]
    assert table.meta["people_flow"]["links_without_people_figure"] == 0
    assert report.step("demand").metrics["share_moved_between_meshes_week"] > 0
    cruising = table.pickups_per_h.sum(axis=(0, 1)) > 0
    assert cruising.sum() > 500  # every cruisable Shibuya link gets demand
    assert np.all(table.fare_mean[cruising] >= 500.0)  # Tokyo tariff: 500 JPY minimum
    params = yaml.safe_load(bundle.params_path.read_text())
    assert params["timezone"] == "Asia/Tokyo" and params["demand"]["source"] == "transferred"
    assert 0.05 <= params["planner"]["speed_factor"] <= 1.0


def test_publish_only_behind_a_passed_planner_gate(
    shibuya: tuple[Path, RunReport], tmp_path: Path
) -> None:
    from sync import FleetRepository

    tmp, report = shibuya
    verdict = tmp_path / "planner_verdict.json"
    doc = {
        "schema_version": 1,
        "name": "publish-only",
        "workdir": str(tmp_path / "work"),
        "steps": [
            {
                "name": "publish",
                "kind": "publish",
                "inputs": {
                    "bundle": str(tmp / "work" / "bundle" / "bundles"),
                    "planner_gate": str(verdict),
                },
                "params": {"fleet_root": str(tmp_path / "fleet"), "init_repository": True},
            }
        ],
    }
    p = tmp_path / "publish.yaml"
    p.write_text(yaml.safe_dump(doc))
    lost = "gate FAIL: nagashi revenue/h 10.00 [9.00, 11.00] vs hotspot 10.50 [9.50, 11.50]"
    verdict.write_text(json.dumps({"gate": "planner", "passed": False, "reason": lost}))
    refused = run_pipeline(load_pipeline(p))
    assert refused.status == "refused"
    assert refused.error == (
        f"refused to publish bundle {str(report.bundle_id)[:16]}: planner gate failed: {lost}"
    )
    assert not (tmp_path / "fleet").exists()  # nothing signed, nothing published
    assert main(["pipeline", "run", str(p)]) == 2  # the CLI says why, non-zero, no re-run

    verdict.write_text(json.dumps({"gate": "planner", "passed": True, "reason": "gate PASS"}))
    ok = run_pipeline(load_pipeline(p))
    assert ok.status == "ok" and ok.step("publish").reason == "inputs changed: planner_gate"
    repo = FleetRepository(tmp_path / "fleet")
    assert repo.published()["shibuya"]["bundle_id"] == report.bundle_id
    receipt = json.loads((tmp_path / "work" / "publish" / "published.json").read_text())
    assert receipt["published"] is True and receipt["targets_version"] >= 2


def test_reproduce_same_bytes_then_refuse_when_a_raw_input_changed(
    shibuya: tuple[Path, RunReport],
) -> None:
    tmp, report = shibuya
    assert report.run_id is not None
    result, _ = reproduce_run(tmp / "runs.sqlite", report.run_id)
    assert result.same_bytes and result.new_bundle_id == report.bundle_id
    osm = tmp / "tokyo_shibuya_roads.osm.pbf"
    osm.write_bytes(osm.read_bytes() + b"\0")
    with pytest.raises(ReproduceError, match=r"tiles\.osm: .* changed"):
        reproduce_run(tmp / "runs.sqlite", report.run_id)
