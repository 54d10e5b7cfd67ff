"""``simulate``: the demand/supply simulator (tools/sim) on the area's tiles and demand, with
the planner parameters the bundle will carry, and the planner release gate: nagashi must beat
the hotspot policy on revenue per hour with non-overlapping 95 % confidence intervals."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from tools.pipeline.step import OutputDecl, StepContext, StepKind, StepResult, Verdict

if TYPE_CHECKING:
    pass

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
    #: with the optional input ``passengers`` (trip files): the held-out days to replay; a day
    #: the demand was built from is refused unless ``allow_in_sample``
    days: str | None = None
    allow_in_sample: bool = False
    matching: str | None = None  # hail (default) or dispatch
    max_wait_s: float | None = None
    taxis_auto: bool = False  # size the fleet to the reference occupancy band (needs passengers)
    adoption: tuple[float, ...] = ()  # shares of the fleet on the policy under test
    jobs: int = 1

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError("seeds must be at least 1 (the gate's intervals need 2)")
        if self.jobs < 1:
            raise ValueError("jobs must be at least 1")
        if any(not 0 < a <= 1 for a in self.adoption):
            raise ValueError("adoption shares must be in (0, 1]")
        if self.days is not None:
            from models.trips import parse_days

            parse_days(self.days)
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
        for k in ("taxis", "test_taxis", "hours", "replan_s", "matching", "max_wait_s")
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
    passengers = ctx.input_list("passengers")
    with TileStore(ctx.input("tiles")) as store:
        if table.network_sha256 != store.meta.get("source_sha256"):
            raise ValueError("the demand table was built for another road network")
        graph = store.all()
    replay = None
    if passengers:
        replay = _replay(p, table, graph, list(passengers), config)
    elif p.days is not None or p.taxis_auto:
        raise ValueError("days and taxis_auto need the input passengers (trip files)")
    # the planner the cabs will run: the bundle's parameters (params.yaml)
    exp = run_experiment(
        graph,
        table,
        config,
        policies,
        seeds,
        planner,
        replay=replay,
        taxis_auto=p.taxis_auto,
        adoption=p.adoption,
        jobs=p.jobs,
    )
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


def _replay(p: SimulateParams, table: Any, graph: Any, passengers: list[Any], config: Any) -> Any:
    from models.trips import parse_days
    from tools.sim.replay import describe_days, in_sample_days, load_replay

    if p.days is None:
        raise ValueError("the input passengers needs the param days (the held-out days)")
    days = parse_days(p.days)
    leaked = in_sample_days(table, days)
    if not p.allow_in_sample and (leaked is None or leaked):
        raise ValueError(
            "refusing to replay "
            + (describe_days(leaked) if leaked else "days the demand table does not list")
            + ": the demand table was built from them (allow_in_sample: true to replay anyway)"
        )
    start = config.start_minute_of_week % 1440
    if start + config.hours * 60 > 1440:
        raise ValueError("with passengers the shift must end by midnight of its day")
    return load_replay(graph, table, passengers, days, start, config.hours)


KINDS: tuple[StepKind, ...] = (
    StepKind(
        name="simulate",
        run=run_simulate,
        params_type=SimulateParams,
        inputs=("tiles", "demand"),
        optional_inputs=("params", "passengers"),
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
