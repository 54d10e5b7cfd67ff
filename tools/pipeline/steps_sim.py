"""``simulate``: the demand/supply simulator (tools/sim) on the area's tiles and demand, with
the planner parameters the bundle will carry, and the planner release gate: nagashi must beat
the hotspot policy on revenue per hour with non-overlapping 95 % confidence intervals."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Any

import yaml

from tools.pipeline.step import OutputDecl, StepContext, StepKind, StepResult, Verdict

log = logging.getLogger(__name__)

DEFAULT_POLICIES = ("random", "hotspot", "greedy", "nagashi")


@dataclass(frozen=True)
class SimulateParams:
    """``nagashi simulate`` settings (None: tools.sim.world.SimConfig's default)."""

    seeds: int = 30  # issue 4: confidence intervals over at least 30 seeds
    first_seed: int = 0
    policies: tuple[str, ...] = DEFAULT_POLICIES  # the gate adds hotspot and nagashi if missing
    taxis: int | None = None
    test_taxis: int | None = None
    hours: float | None = None
    start: str | None = None  # local ISO time of the shift start (None: SimConfig's)
    replan_s: float | None = None

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError("seeds must be at least 1 (the gate's intervals need 2)")
        if self.start is not None:
            dt.datetime.fromisoformat(self.start)


def run_simulate(ctx: StepContext) -> StepResult:
    from agent.planner import minute_of_week_of
    from models import DemandTable
    from tiles import TileStore
    from tiles.fileio import atomic_write_bytes as write_atomic
    from tools.sim.experiment import gate, json_finite, run_experiment
    from tools.sim.world import SimConfig

    p: SimulateParams = ctx.params
    over: dict[str, Any] = {
        k: getattr(p, k)
        for k in ("taxis", "test_taxis", "hours", "replan_s")
        if getattr(p, k) is not None
    }
    if p.start is not None:
        over["start_minute_of_week"] = minute_of_week_of(dt.datetime.fromisoformat(p.start))
    config = dataclasses.replace(SimConfig(), **over)
    if config.test_taxis > config.taxis:
        config = dataclasses.replace(config, test_taxis=config.taxis)
    policies = list(p.policies)
    for needed in ("hotspot", "nagashi"):
        if needed not in policies:
            policies.append(needed)
    table = DemandTable.load(ctx.input("demand"))
    planner: dict[str, Any] = {}
    params_path = ctx.optional_input("params")
    if params_path is not None:
        doc = yaml.safe_load(params_path.read_text(encoding="utf-8")) or {}
        planner = dict(doc.get("planner") or {})
    seeds = list(range(p.first_seed, p.first_seed + p.seeds))
    with TileStore(ctx.input("tiles")) as store:
        if table.network_sha256 != store.meta.get("source_sha256"):
            raise ValueError("the demand table was built for another road network")
        # the planner the cabs will run: the bundle's parameters (params.yaml)
        exp = run_experiment(store.all(), table, config, policies, seeds, planner)
    doc_out: dict[str, Any] = json_finite(exp.to_json(table.version))
    passed, why = gate(doc_out)
    verdict = Verdict("planner", bool(passed), why)
    write_atomic(ctx.output("table"), json.dumps(doc_out, indent=2, sort_keys=True).encode())
    write_atomic(
        ctx.output("verdict"),
        json.dumps({**verdict.to_json(), "simulation": doc_out}, indent=2, sort_keys=True).encode(),
    )
    gain = doc_out["nagashi_vs_hotspot"].get("relative_gain")
    return StepResult(
        metrics={
            # the simulation table: per policy, each metric's mean and 95 % interval
            "policies": doc_out["policies"],
            "nagashi_vs_hotspot": doc_out["nagashi_vs_hotspot"],
            "nagashi_vs_hotspot_gain": gain,
            "paired": doc_out["paired"],
            "gate_rule": doc_out["gate_rule"],
            "calibration": doc_out["calibration"],
            "seeds": p.seeds,
        },
        verdict=verdict,
        summary=why,
    )


KINDS: tuple[StepKind, ...] = (
    StepKind(
        name="simulate",
        run=run_simulate,
        params_type=SimulateParams,
        inputs=("tiles", "demand"),
        optional_inputs=("params",),
        outputs=(OutputDecl("table", "simulation.json"), OutputDecl("verdict", "verdict.json")),
        sources=(
            "tools.sim",
            "agent",
            "models",
            "tiles",
            "safety",
            "tools.pipeline.steps_sim",
            "tools.pipeline.step",
        ),
        description="simulate policies (tools/sim) + the planner gate: nagashi's paired "
        "revenue/h difference against hotspot must be above zero (95 % interval)",
    ),
)
