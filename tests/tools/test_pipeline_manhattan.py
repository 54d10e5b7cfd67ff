"""The whole release pipeline on the real Manhattan data: pipelines/manhattan.yaml itself, with
only the expensive sizes made small (the recent-demand model: the GLM alone, 2 cross-fitting
folds, still 15-minute slots on 04-01..04-23 and gated on 04-24..04-30; the planner gate on one
held-out day, 30 cabs for 3 minutes, 2 seeds: the gate's intervals need two runs).

Run it, run it again (nothing recomputed), change one parameter (only its dependants re-run),
reproduce the first run from its record (same bundle bytes), compare runs side by side, and
plan one agent tick on the bundle it built (the shipped model's version in the tick log).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import OSM, REPO, TRIPS
from tiles.fileio import sha256_file
from tools.cli import main
from tools.cmd_runs import compare_rows
from tools.pipeline import RunOptions, RunReport, RunsDB, load_pipeline, run_pipeline
from tools.pipeline.reproduce import reproduce_run

EXAMPLE = REPO / "pipelines" / "manhattan.yaml"
SMALL = {
    # the fastest recent-model config that still trains (and gates) a real model
    "train": {"kinds": ["poisson"], "folds": 2},
    # the gate's policy is nagashi-agent (the agent's own tick in every cab, ~2.3 CPU-s per
    # cab-hour): 30 cabs for 3 minutes keep each run of the step to seconds (it runs three
    # times in this module; 6 minutes made it the longest step, 23 s of the first run's 36)
    "simulate": {"seeds": 2, "hours": 0.05, "taxis": 30, "days": "2014-04-22"},
}
STEPS = [
    "tiles", "trips", "demand", "train", "evaluate", "params", "gate-demand", "simulate",
    "bundle", "publish",
]  # fmt: skip


def small_pipeline(tmp: Path, **changes: dict[str, Any]) -> Path:
    """pipelines/manhattan.yaml with absolute inputs, a scratch workdir and small sizes."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["workdir"] = str(tmp / "work")
    doc["runs_db"] = str(tmp / "runs.sqlite")
    for step in doc["steps"]:
        for k, v in step.get("inputs", {}).items():
            vals = v if isinstance(v, list) else [v]
            fixed = [x if x.startswith("@") else str((EXAMPLE.parent / x).resolve()) for x in vals]
            step["inputs"][k] = fixed if isinstance(v, list) else fixed[0]
        params = step.setdefault("params", {})
        params.update(SMALL.get(step["name"], {}))
        params.update(changes.get(step["name"], {}))
        if step["kind"] == "publish":
            params["fleet_root"] = str(tmp / "fleet")
    p = tmp / "manhattan.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunReport, float]:
    tmp = tmp_path_factory.mktemp("pipeline-manhattan")
    t0 = time.monotonic()
    report = run_pipeline(load_pipeline(small_pipeline(tmp)), RunOptions(jobs=2))
    return tmp, report, time.monotonic() - t0


def _why(report: RunReport) -> list[tuple[str, str, str]]:
    return [(s.name, s.status, s.reason) for s in report.steps]


def _verdict(report: RunReport, step: str) -> dict[str, Any]:
    v = report.step(step).verdict
    assert v is not None, step
    return v


def test_first_run_builds_everything_and_records_it(first: tuple[Path, RunReport, float]) -> None:
    tmp, report, _ = first
    assert [s.name for s in report.steps] == STEPS
    assert report.names("ran") == STEPS, [(s.name, s.status, s.error) for s in report.steps]
    assert report.bundle_id is not None and report.run_id == 1
    with RunsDB(tmp / "runs.sqlite") as db:
        rec = db.get_run(1)
    steps = {s["step"]: s for s in rec["steps"]}
    # inputs by content: the OSM extract's hash is the one ../shared/data/README.md lists
    assert steps["tiles"]["input_hashes"]["osm"][0][1] == sha256_file(OSM["manhattan"])
    assert rec["git_commit"] and rec["git_dirty"] is not None
    assert rec["manifest"]["area"] == "manhattan" and rec["manifest_sha256"]
    assert rec["bundle_id"] == report.bundle_id
    # the recent-demand model, trained as `demand train --train-days` on 04-01..04-23
    tr = steps["train"]["metrics"]
    assert tr["kind"] == "poisson" and tr["slot_minutes"] == 15
    assert tr["train_days"] == ["2014-04-01", "2014-04-23"]
    assert tr["valid_days"] == ["2014-04-10", "2014-04-23"]  # two validation weeks inside them
    # metrics: the held-out table of the demand gate (against statistics and the recent-level
    # baseline, on the week after the training dates) and the simulation table
    ev = steps["evaluate"]["metrics"]
    metric_keys = {"poisson_deviance", "mae", "rmse", "link_loglik_per_pickup"}
    for source in ("model", "statistics", "recent_baseline", "model_offline"):
        assert metric_keys <= set(ev[source]), source
    assert set(ev["ratio_model_over_recent_baseline"]) == metric_keys
    assert ev["slot_minutes"] == 15 and ev["model_version"] == tr["version"]
    assert ev["evaluated_on"][0]["days"] == [f"2014-04-{d}" for d in range(24, 31)]
    assert ev["heldout_pickups"] > 10_000
    sim = steps["simulate"]["metrics"]["policies"]
    assert set(sim) == {"hotspot", "nagashi-live", "nagashi-agent"}
    assert steps["simulate"]["metrics"]["gate_policy"] == "nagashi-agent"  # the policy as shipped
    assert sim["nagashi-agent"]["revenue_per_h"]["mean"] > 0
    assert len(sim["hotspot"]["empty_km_per_pickup"]["ci95"]) == 2
    for s in STEPS:
        assert steps[s]["code_version"] and steps[s]["output_hashes"], s


def test_gates_decide_what_ships_and_whether_it_is_published(
    first: tuple[Path, RunReport, float],
) -> None:
    from sync import Bundle, FleetRepository

    tmp, report, _ = first
    bundle = Bundle(tmp / "work" / "bundle" / "bundles" / str(report.bundle_id))
    demand = _verdict(report, "evaluate")
    manifest_model = bundle.manifest["predicted_demand"]["version"]
    # measured: even the small model beats the recent-level baseline on 04-24..04-30 (Poisson
    # deviance 0.959x), offline it is statistics (1.000x): the gated model ships
    assert demand["passed"], demand["reason"]
    assert demand["reason"].startswith("the recent-demand model beats the recent-level baseline")
    assert "held-out days 2014-04-24..2014-04-30, 15-min slots" in demand["reason"]
    gated = json.loads((tmp / "work" / "evaluate" / "gated" / "model.json").read_text())
    assert gated["shipped"] and gated["gate"]["compared_with"] == "recent_baseline"
    assert bundle.onnx_path is not None and manifest_model == gated["version"]
    assert {"demand/model.onnx", "demand/features.npz", "demand/model.json"} <= set(bundle.files)
    # the demand that ships with it is the model's own table (rates of 04-01..04-23)
    assert bundle.manifest["statistical_demand"]["version"] == gated["statistics_version"]
    assert "statistics + predicted model" in bundle.manifest["description"]
    planner = _verdict(report, "simulate")
    release = _verdict(report, "publish")
    receipt = json.loads((tmp / "work" / "publish" / "published.json").read_text())
    published = FleetRepository(tmp / "fleet").published()
    if planner["passed"]:
        assert report.status == "ok" and release["passed"] and receipt["published"]
        assert published["manhattan"]["bundle_id"] == report.bundle_id
    else:
        assert report.status == "refused" and not release["passed"]
        assert "planner gate failed" in str(report.error) and "hotspot" in str(report.error)
        # the refusal says what the gate measured: held-out passengers, demand from other days
        assert "held-out passengers 2014-04-22 17:00-17:03" in str(report.error)
        assert "demand from 2014-04-01..2014-04-20" in str(report.error)
        assert receipt["published"] is False and "manhattan" not in published


def test_second_run_recomputes_nothing(first: tuple[Path, RunReport, float]) -> None:
    tmp, report, _ = first
    again = run_pipeline(load_pipeline(tmp / "manhattan.yaml"), RunOptions(jobs=2))
    assert again.names("ran") == [], _why(again)
    assert again.names("skipped") == STEPS
    assert again.status == report.status and again.bundle_id == report.bundle_id
    assert {s.name: s.reason for s in again.steps} == {s: "up to date" for s in STEPS}


def test_one_parameter_reruns_only_its_dependants(first: tuple[Path, RunReport, float]) -> None:
    tmp, _, _ = first
    # a smaller fleet (the cheapest change that re-runs the simulation: 20 s against 31 s for a
    # third seed, measured on this machine)
    taxis = run_pipeline(load_pipeline(small_pipeline(tmp, simulate={"taxis": 20})))
    assert taxis.names("ran") == ["simulate", "publish"], _why(taxis)
    assert taxis.step("simulate").reason == "parameters changed: taxis"
    assert taxis.step("publish").reason == "inputs changed: planner_gate"
    assert taxis.names("skipped") == [s for s in STEPS if s not in ("simulate", "publish")]
    # a change that stops early: the area's name changes area.geojson only, not params.yaml,
    # so the simulation (which reads params.yaml) is not re-run
    name = run_pipeline(
        load_pipeline(small_pipeline(tmp, simulate={"taxis": 20}, params={"area_name": "Midtown"}))
    )
    assert name.names("ran") == ["params", "bundle", "publish"], _why(name)
    assert name.step("simulate").status == "skipped"
    assert name.bundle_id != taxis.bundle_id


def test_runs_compare_and_cli(
    first: tuple[Path, RunReport, float], capsys: pytest.CaptureFixture[str]
) -> None:
    tmp, _, _ = first
    with RunsDB(tmp / "runs.sqlite") as db:
        rows = {k: (a, b) for k, a, b in compare_rows(db.get_run(1), db.get_run(3))}
    assert rows["simulate.params.taxis"] == (30, 20)
    assert rows["tiles.params.tile_deg"] == (0.01, 0.01)
    assert "simulate.metrics.policies.nagashi-live.revenue_per_h.mean" in rows
    assert "simulate.metrics.policies.hotspot.occupied_share.ci95" in rows
    assert rows["evaluate.metrics.model.poisson_deviance"][0] is not None
    runs_db = str(tmp / "runs.sqlite")
    assert main(["runs", "list", "--db", runs_db]) == 0
    assert main(["runs", "compare", "1", "3", "--db", runs_db]) == 0
    out = capsys.readouterr().out
    assert "simulate.params.taxis" in out
    assert main(["runs", "show", "1", "--db", runs_db]) == 0
    assert "gate demand:" in capsys.readouterr().out
    assert main(["runs", "show", "99", "--db", runs_db]) == 2  # one clear line, no traceback
    assert "no run 99" in capsys.readouterr().err


def test_reproduce_gives_the_same_bundle_bytes(first: tuple[Path, RunReport, float]) -> None:
    tmp, report, _ = first
    result, rerun = reproduce_run(tmp / "runs.sqlite", 1, jobs=2)
    assert rerun.names("ran") == [s for s in STEPS if s != "publish"]
    assert rerun.step("publish").status == "not_selected"
    assert result.new_bundle_id == report.bundle_id
    assert result.same_bytes
    with RunsDB(tmp / "runs.sqlite") as db:
        assert db.get_run(result.new_run_id or -1)["options"]["reproduce_of"] == 1


def test_the_model_ships_only_with_a_passed_demand_verdict(
    first: tuple[Path, RunReport, float],
) -> None:
    from tools.pipeline.steps_release import _demand_decision

    tmp, _, _ = first
    stats = tmp / "work" / "demand" / "demand"
    model = tmp / "work" / "train" / "model"  # the trained model, before any gate
    version = json.loads((model / "model.json").read_text())["version"]
    won = {"gate": "demand", "passed": True, "reason": "beats statistics"}
    lost = {"gate": "demand", "passed": False, "reason": "lost to statistics"}
    assert _demand_decision(stats, model, won)[:2] == (model, version)
    assert _demand_decision(stats, model, lost)[:2] == (stats, "none")
    assert _demand_decision(stats, model, None)[:2] == (stats, "none")
    assert _demand_decision(stats, None, won)[:2] == (stats, "none")


def test_the_agent_plans_with_the_shipped_model(first: tuple[Path, RunReport, float]) -> None:
    """One agent tick on the bundle the pipeline built: the gated cell model gives the demand
    (``onnx:<version>``, offline here: no live snapshot) and the tick log names its version."""
    from agent.bundle import load_bundle
    from agent.decide import TickInputs, decide
    from agent.gps import read_csv_trace
    from tests.conftest import DRIVE_CSV
    from tools.field.replay import replay_tick

    tmp, _, _ = first
    (built,) = (tmp / "work" / "bundle" / "bundles").iterdir()  # the last run's only bundle
    lb = load_bundle(built)
    try:
        version = lb.manifest["predicted_demand"]["version"]
        assert lb.model is not None and lb.model.version == version
        assert lb.model.granularity == "cell" and lb.model.slot_minutes == 15
        f = read_csv_trace(DRIVE_CSV)[150]
        r = decide(lb, TickInputs(f.time_s, f, None, "en", "interval"))
        assert "demand model" not in r.planner_error  # the model answered
        assert r.demand is not None and r.demand.source == f"onnx:{version}"
        rec = r.to_record(lb)
        assert rec["params"]["demand_model"] == version
        rec["seq"] = 0
        assert replay_tick(rec, lb).identical
    finally:
        lb.close()


@pytest.mark.parametrize(
    ("step", "params", "message"),
    [
        ("train", {"slot_minutes": 20}, "slot_minutes must be 15 or 30"),
        ("train", {"kinds": ["lstm"]}, "kinds must be some of"),
        ("train", {"folds": 1}, "folds must be at least 2"),
        ("train", {"train_days": "2014-04-31"}, "steps.train.params"),
        ("evaluate", {"days": "yesterday"}, "steps.evaluate.params"),
    ],
)
def test_bad_recent_model_params_are_refused_when_loaded(
    tmp_path: Path, step: str, params: dict[str, Any], message: str
) -> None:
    from tools.pipeline import PipelineSpecError

    with pytest.raises(PipelineSpecError, match=message):
        load_pipeline(small_pipeline(tmp_path, **{step: params}))


def test_evaluate_refuses_windows_for_a_cell_model(
    first: tuple[Path, RunReport, float], tmp_path: Path
) -> None:
    """A cell model is evaluated on held-out days: ``windows`` (the link model's) is refused
    with one line, not ignored."""
    from tools.pipeline.step import StepContext
    from tools.pipeline.steps_demand import EvaluateDemandParams, run_evaluate_demand

    tmp, _, _ = first
    (tmp_path / "gated").mkdir()
    ctx = StepContext(
        step="evaluate",
        inputs={
            "tiles": (tmp / "work" / "tiles" / "tiles.sqlite",),
            "model": (tmp / "work" / "train" / "model",),
            "trips": (TRIPS["uber_2014_04"],),
        },
        outputs={"model": tmp_path / "gated", "verdict": tmp_path / "verdict.json"},
        params=EvaluateDemandParams(windows=(2, 3)),
        scratch=tmp_path,
        pipeline_dir=EXAMPLE.parent,
    )
    with pytest.raises(ValueError, match="the model is a cell model, evaluated on held-out days"):
        run_evaluate_demand(ctx)
    assert not (tmp_path / "verdict.json").exists()
