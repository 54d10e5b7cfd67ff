"""The layer length bundles ship (``agent.planner.SHIPPED_STEP_S``, 20 s; docs/planner.md,
"20-second layers"): the demo's and the pipeline's ``params.yaml`` carry it, the agent plans
with it, and the planner's own default stays the exact 10 s solver."""

from __future__ import annotations

from pathlib import Path

from agent.bundle import load_bundle
from agent.decide import TickInputs, decide
from agent.gps import read_csv_trace
from agent.planner import SHIPPED_STEP_S, PlannerParams
from tests.conftest import DRIVE_CSV
from tools.field.replay import replay_tick


def test_the_planner_default_is_the_exact_solver_and_bundles_ship_coarser_layers() -> None:
    from tools.pipeline.steps_release import BundleParamsParams

    assert PlannerParams().step_s == 10.0
    assert SHIPPED_STEP_S == 20.0
    assert BundleParamsParams(timezone="America/New_York").step_s == SHIPPED_STEP_S


def test_the_demo_bundle_plans_with_the_shipped_layers(manhattan_bundle: Path) -> None:
    lb = load_bundle(manhattan_bundle)
    try:
        assert lb.planner.step_s == SHIPPED_STEP_S
        f = read_csv_trace(DRIVE_CSV)[40]
        r = decide(lb, TickInputs(f.time_s, f, None, "en", "interval"))
        assert r.plan is not None
        # the plan names the layer length it was solved with, so replay solves it the same way
        assert r.plan.params.step_s == SHIPPED_STEP_S
        assert b'"step_s":20.0' in r.plan.to_json()
        rec = r.to_record(lb)
        rec["seq"] = 1
        assert replay_tick(rec, lb).identical
    finally:
        lb.close()
