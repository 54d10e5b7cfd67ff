"""The pipeline's planner gate on real held-out passengers: ``build_demand`` on a day range, the
``simulate`` step replaying the Uber pickups of a later day against it (the verdict names the
days on both sides), the in-sample refusal and its override (flagged), the synthetic gate
labelled in-sample, and the parameters checked when the pipeline is loaded.

Small real configurations: the Uber April 2014 month over the real Midtown tiles, a shift of
six minutes, two seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import TRIPS
from tools.pipeline import RunReport, load_pipeline, run_pipeline
from tools.pipeline.errors import PipelineSpecError

UBER = TRIPS["uber_2014_04"]
DEMAND_DAYS = "2014-04-01..2014-04-20"


def _spec(tmp: Path, tiles: Path, simulate: dict[str, Any], passengers: bool = True) -> Path:
    """A two-step pipeline: demand from the first twenty days, then the gate."""
    sim_inputs: dict[str, Any] = {"tiles": str(tiles), "demand": "@gate-demand.demand"}
    if passengers:
        sim_inputs["passengers"] = [str(UBER)]
    params = {
        "start": "2014-04-22T17:00",
        "hours": 0.1,
        "seeds": 2,
        "policies": ["nagashi"],
        "gate_policy": "nagashi",
    }
    doc = {
        "schema_version": 1,
        "name": "gate",
        "workdir": str(tmp / "work"),
        "runs_db": str(tmp / "runs.sqlite"),
        "steps": [
            {
                "name": "gate-demand",
                "kind": "build_demand",
                "inputs": {"tiles": str(tiles), "trips": [str(UBER), str(TRIPS["reuven_2015_06"])]},
                "params": {"days": DEMAND_DAYS},
            },
            {
                "name": "simulate",
                "kind": "simulate",
                "inputs": sim_inputs,
                "params": {**params, **simulate},
            },
        ],
    }
    p = tmp / "gate.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def _read(tmp: Path, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((tmp / "work" / "simulate" / name).read_text())
    return doc


@pytest.fixture(scope="module")
def held_out(
    tmp_path_factory: pytest.TempPathFactory, manhattan_tiles: Path
) -> tuple[Path, RunReport]:
    tmp = tmp_path_factory.mktemp("pipeline-gate")
    spec = _spec(tmp, manhattan_tiles, {"days": "2014-04-22", "taxis": "auto"})
    return tmp, run_pipeline(load_pipeline(spec))


def test_build_demand_on_a_day_range_records_its_days(held_out: tuple[Path, RunReport]) -> None:
    tmp, report = held_out
    step = report.step("gate-demand")
    assert step.status == "ran", step.error
    meta = json.loads((tmp / "work" / "gate-demand" / "demand" / "demand.json").read_text())
    assert meta["days"]["filter"] == [["2014-04-01", "2014-04-20"]]
    assert meta["days"]["first"] == "2014-04-01" and meta["days"]["last"] == "2014-04-20"
    assert step.metrics["days"] == meta["days"]
    uber = step.metrics["inputs"][0]
    assert uber["outside_days"] > 0 and uber["kept"] > 0  # the later April days were left out


def test_the_gate_replays_held_out_passengers_and_names_both_sides(
    held_out: tuple[Path, RunReport],
) -> None:
    tmp, report = held_out
    step = report.step("simulate")
    assert step.status == "ran", step.error
    verdict = _read(tmp, "verdict.json")
    table = _read(tmp, "simulation.json")
    assert verdict["reason"].startswith("held-out passengers 2014-04-22 17:00-17:06 (")
    assert f"demand from {DEMAND_DAYS}" in verdict["reason"]
    assert "paired" in verdict["reason"] and "cabs (auto)" in verdict["reason"]
    sample = verdict["sample"]
    assert sample == table["sample"] == step.metrics["sample"]
    assert sample["passengers"] == "replay" and sample["passenger_days"] == ["2014-04-22"]
    assert sample["demand_days"] == DEMAND_DAYS and sample["window"] == "17:00-17:06"
    assert sample["held_out"] and not sample["in_sample"] and sample["leakage_checked"]
    assert sample["records"] == table["passengers"]["records"] > 0
    # the gate is the simulator's own, on the same table; nothing forces it to pass
    assert step.verdict is not None  # the simulate step always gives the planner verdict
    assert table["gate"]["pass"] == verdict["passed"] == step.verdict["passed"]
    assert table["gate"]["verdict"] == verdict["reason"] == step.verdict["reason"]
    assert ("gate PASS" in verdict["reason"]) == verdict["passed"]
    assert table["fleet"]["sized"] == "auto" and step.metrics["fleet"] == table["fleet"]
    assert table["demand_days"]["filter"] == [["2014-04-01", "2014-04-20"]]


def test_an_in_sample_day_fails_the_step_unless_allowed(
    held_out: tuple[Path, RunReport], manhattan_tiles: Path
) -> None:
    tmp, _ = held_out
    sizes = {"taxis": 4, "test_taxis": 4}
    refused = run_pipeline(
        load_pipeline(_spec(tmp, manhattan_tiles, {**sizes, "days": "2014-04-20,2014-04-22"}))
    )
    assert refused.status == "failed"
    assert refused.step("gate-demand").status == "skipped"  # the demand is reused as it was
    error = str(refused.step("simulate").error)
    assert "\n" not in error and "refusing to replay 2014-04-20:" in error
    assert "2014-04-22" not in error and "allow_in_sample: true" in error
    allowed = run_pipeline(
        load_pipeline(
            _spec(tmp, manhattan_tiles, {**sizes, "days": "2014-04-20", "allow_in_sample": True})
        )
    )
    step = allowed.step("simulate")
    assert step.status == "ran", step.error
    verdict = _read(tmp, "verdict.json")
    reason = verdict["reason"]
    assert reason.startswith("IN-SAMPLE passengers 2014-04-20 17:00-17:06 (")
    assert f"allow_in_sample: the demand from {DEMAND_DAYS} includes 2014-04-20" in reason
    sample = verdict["sample"]
    assert sample["in_sample"] and not sample["held_out"]
    assert sample["in_sample_days"] == ["2014-04-20"]
    assert _read(tmp, "simulation.json")["passengers"]["in_sample"] is True


def test_synthetic_passengers_are_labelled_in_sample(tmp_path: Path, manhattan_tiles: Path) -> None:
    spec = _spec(tmp_path, manhattan_tiles, {"taxis": 4, "test_taxis": 4}, passengers=False)
    report = run_pipeline(load_pipeline(spec))
    step = report.step("simulate")
    assert step.status == "ran", step.error
    verdict = _read(tmp_path, "verdict.json")
    assert verdict["reason"].startswith("IN-SAMPLE synthetic passengers (")
    assert f"demand from {DEMAND_DAYS}" in verdict["reason"]
    assert verdict["sample"]["passengers"] == "synthetic"
    assert verdict["sample"]["in_sample"] and not verdict["sample"]["held_out"]
    assert verdict["sample"]["passenger_days"] is None


@pytest.mark.parametrize(
    ("simulate", "passengers", "message"),
    [
        ({"taxis": "many"}, True, "steps.simulate.params: taxis: a number of cabs or auto"),
        ({"days": "2014-04-31"}, True, "steps.simulate.params: days: expected YYYY-MM-DD"),
        ({"taxis": 2.5}, True, "steps.simulate.params.taxis: expected an integer"),
    ],
)
def test_bad_gate_parameters_are_refused_when_loaded(
    tmp_path: Path, manhattan_tiles: Path, simulate: dict[str, Any], passengers: bool, message: str
) -> None:
    with pytest.raises(PipelineSpecError) as e:
        load_pipeline(_spec(tmp_path, manhattan_tiles, simulate, passengers))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_bad_demand_days_are_refused_when_loaded(tmp_path: Path, manhattan_tiles: Path) -> None:
    p = _spec(tmp_path, manhattan_tiles, {})
    p.write_text(p.read_text().replace(DEMAND_DAYS, "2014-04-20..2014-04-01"))
    with pytest.raises(PipelineSpecError, match=r"^steps\.gate-demand\.params: days: .* ends"):
        load_pipeline(p)


def test_days_without_passengers_fail_the_step(tmp_path: Path, manhattan_tiles: Path) -> None:
    spec = _spec(tmp_path, manhattan_tiles, {"days": "2014-04-22"}, passengers=False)
    report = run_pipeline(load_pipeline(spec))
    assert report.status == "failed"
    assert "need the input passengers" in str(report.step("simulate").error)
