"""``simulate``: the demand/supply simulator (tools/sim) on the area's tiles and demand, with
the planner parameters the bundle will carry, and the planner release gate: the 95 % interval of
nagashi's paired revenue/h difference against the hotspot policy must lie above zero
(``tools.sim.experiment.gate``; one path with ``nagashi simulate``: ``run_experiment``).

With the input ``passengers`` (trip files) and ``days`` the gate replays the recorded passengers
of those held-out days, against a demand table built from *other* days (``build_demand``
``days:``); a replayed day the table was built from fails the step unless ``allow_in_sample``.
Without passengers the passengers are synthetic, drawn from the very rates the planner plans
with (in-sample). The verdict's reason starts with which of the two it was and names the days
on both sides (the replayed days and window, the demand's days); ``sample`` in the verdict,
the simulation table and the step's metrics says the same as data.
"""

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
    from tools.sim.world import SimConfig

log = logging.getLogger(__name__)

DEFAULT_POLICIES = ("random", "hotspot", "greedy", "nagashi", "nagashi-live")


@dataclass(frozen=True)
class SimulateParams:
    """``nagashi simulate`` settings (None: tools.sim.world.SimConfig's default)."""

    seeds: int = 30  # issue 4: confidence intervals over at least 30 seeds
    first_seed: int = 0
    policies: tuple[str, ...] = DEFAULT_POLICIES  # the gate adds hotspot and gate_policy
    #: a number of cabs, or ``auto`` (with passengers): the size at which the reference fleet,
    #: all on hotspot, is occupied 40-50 % of its time
    taxis: int | str | None = None
    test_taxis: int | None = None
    hours: float | None = None
    #: local ISO time of the shift start (None: SimConfig's); with passengers only its time of
    #: day is used (the shift runs on each replayed day)
    start: str | None = None
    replan_s: float | None = None
    #: with the optional input ``passengers`` (trip files): the held-out days to replay; a day
    #: the demand was built from is refused unless ``allow_in_sample`` (the report flags it)
    days: str | None = None
    allow_in_sample: bool = False
    matching: str | None = None  # hail (default) or dispatch
    max_wait_s: float | None = None
    adoption: tuple[float, ...] = ()  # shares of the fleet on the policy under test
    jobs: int = 1
    #: a Dask scheduler's address (``tcp://HOST:PORT``, the ``sim`` extra): the runs go there
    #: instead of ``jobs`` processes (same results)
    dask: str | None = None
    #: the policy the gate judges (tools.sim.experiment.GATE_POLICY: the agent as shipped)
    gate_policy: str = "nagashi-live"

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError("seeds must be at least 1 (the gate's intervals need 2)")
        if self.jobs < 1:
            raise ValueError("jobs must be at least 1")
        if self.dask is not None and self.jobs > 1:
            raise ValueError("jobs and dask: the runs go to one or the other")
        if isinstance(self.taxis, str) and self.taxis != "auto":
            raise ValueError(f"taxis: a number of cabs or auto, not {self.taxis!r}")
        if any(not 0 < a <= 1 for a in self.adoption):
            raise ValueError("adoption shares must be in (0, 1]")
        if self.days is not None:
            from models.errors import ModelsError
            from models.trips import parse_days

            try:
                parse_days(self.days)
            except ModelsError as e:
                raise ValueError(str(e)) from None
        if self.start is not None:
            dt.datetime.fromisoformat(self.start)

    @property
    def taxis_auto(self) -> bool:
        return self.taxis == "auto"


def run_simulate(ctx: StepContext) -> StepResult:
    from models import DemandTable
    from tiles import TileStore
    from tools.sim.experiment import gate, json_finite, run_experiment

    p: SimulateParams = ctx.params
    config = _sim_config(p)
    policies = list(p.policies)
    for needed in ("hotspot", p.gate_policy):
        if needed not in policies:
            policies.append(needed)
    table = DemandTable.load(ctx.input("demand"))
    planner = _planner_params(ctx)
    seeds = list(range(p.first_seed, p.first_seed + p.seeds))
    passengers = ctx.input_list("passengers")
    if not passengers and (p.days is not None or p.taxis_auto or p.allow_in_sample):
        raise ValueError("days, taxis auto and allow_in_sample need the input passengers")
    with TileStore(ctx.input("tiles")) as store:
        if table.network_sha256 != store.meta.get("source_sha256"):
            raise ValueError("the demand table was built for another road network")
        graph = store.all()
    replay = None
    leaked: list[dt.date] | None = None
    if passengers:
        replay, leaked = _replay(p, table, graph, list(passengers), config)
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
        dask=p.dask,
    )
    doc_out: dict[str, Any] = json_finite(exp.to_json(table.version))
    passed, why = gate(doc_out, p.gate_policy)
    sample, label = _sample(doc_out, exp.world.config, replay is not None, leaked)
    reason = f"{label}: {why}"
    verdict = Verdict("planner", bool(passed), reason)
    doc_out["sample"] = sample
    doc_out["gate"] = {"pass": bool(passed), "verdict": reason, "rule": doc_out["gate_rule"]}
    _write_outputs(ctx, doc_out, verdict, sample)
    return StepResult(metrics=_metrics(doc_out, p, sample), verdict=verdict, summary=reason)


def _sim_config(p: SimulateParams) -> SimConfig:
    """The simulator's settings: ``SimConfig``'s defaults with the step's params over them."""
    from agent.planner import minute_of_week_of
    from tools.sim.world import SimConfig

    over: dict[str, Any] = {
        k: getattr(p, k)
        for k in ("test_taxis", "hours", "replan_s", "matching", "max_wait_s")
        if getattr(p, k) is not None
    }
    if isinstance(p.taxis, int):
        over["taxis"] = p.taxis
    if p.start is not None:
        over["start_minute_of_week"] = minute_of_week_of(dt.datetime.fromisoformat(p.start))
    config = dataclasses.replace(SimConfig(), **over)
    if config.test_taxis > config.taxis:
        config = dataclasses.replace(config, test_taxis=config.taxis)
    return config


def _planner_params(ctx: StepContext) -> dict[str, Any]:
    """The planner section of the optional input ``params`` (the bundle's params.yaml)."""
    params_path = ctx.optional_input("params")
    if params_path is None:
        return {}
    doc = yaml.safe_load(params_path.read_text(encoding="utf-8")) or {}
    return dict(doc.get("planner") or {})


def _write_outputs(
    ctx: StepContext, doc_out: dict[str, Any], verdict: Verdict, sample: dict[str, Any]
) -> None:
    """The simulation table and the verdict (with the table), each written atomically."""
    from tiles.fileio import atomic_write_bytes as write_atomic

    write_atomic(ctx.output("table"), json.dumps(doc_out, indent=2, sort_keys=True).encode())
    write_atomic(
        ctx.output("verdict"),
        json.dumps(
            {**verdict.to_json(), "sample": sample, "simulation": doc_out},
            indent=2,
            sort_keys=True,
        ).encode(),
    )


def _metrics(doc_out: dict[str, Any], p: SimulateParams, sample: dict[str, Any]) -> dict[str, Any]:
    """The step's metrics: the simulation table and the gated policy against hotspot."""
    gated = doc_out["paired"].get(p.gate_policy) or {}
    gain = gated.get("relative_gain")
    return {
        # what was replayed against what the demand was built from, on both sides
        "sample": sample,
        # the simulation table: per policy, each metric's mean and 95 % interval
        "policies": doc_out["policies"],
        "gate_policy": p.gate_policy,
        "gated_vs_hotspot": gated,
        "gated_vs_hotspot_gain": gain,
        "paired": doc_out["paired"],
        "gate_rule": doc_out["gate_rule"],
        "calibration": doc_out["calibration"],
        "fleet": doc_out["fleet"],
        **({"adoption": doc_out["adoption"]} if "adoption" in doc_out else {}),
        "seeds": p.seeds,
    }


def _replay(
    p: SimulateParams, table: Any, graph: Any, passengers: list[Any], config: Any
) -> tuple[Any, list[dt.date] | None]:
    """The recorded passengers of the held-out days, and the replayed days the demand was built
    from (None: the table does not say); leakage is refused unless ``allow_in_sample``."""
    from models.trips import parse_days
    from tools.sim.replay import describe_days, in_sample_days, load_replay

    if p.days is None:
        raise ValueError("the input passengers needs the param days (the held-out days)")
    days = parse_days(p.days)
    leaked = in_sample_days(table, days)
    if leaked is None and not p.allow_in_sample:
        raise ValueError(
            "the demand table does not record the days it was built from, so the replay cannot "
            "be checked for leakage (build it with build_demand days:, or allow_in_sample: true)"
        )
    if leaked and not p.allow_in_sample:
        raise ValueError(
            f"refusing to replay {describe_days(leaked)}: the demand table was built from "
            f"those days (build the demand on other days, or allow_in_sample: true)"
        )
    start = config.start_minute_of_week % 1440
    if start + config.hours * 60 > 1440:
        raise ValueError("with passengers the shift must end by midnight of its day")
    replay = load_replay(graph, table, passengers, days, start, config.hours)
    if replay.records == 0:
        raise ValueError(
            f"no passenger record has a pickup in the area on {describe_days(days)} in the "
            f"shift window"
        )
    return replay, leaked


def _days_text(info: Any) -> str | None:
    """The demand table's days (``demand.json`` ``days``) as ``a..b,c``; None: unknown."""
    if not isinstance(info, dict):
        return None
    ranges = info.get("filter") or info.get("ranges")
    if ranges:
        return ",".join(a if a == b else f"{a}..{b}" for a, b in ranges)
    if info.get("first") and info.get("last"):
        return f"{info['first']}..{info['last']}"
    return None


def _sample(
    doc: dict[str, Any], config: Any, replayed: bool, leaked: list[dt.date] | None
) -> tuple[dict[str, Any], str]:
    """Both sides of the gate's measure (the replayed days, the demand's days) and the line
    that leads the verdict: held-out, in-sample (allowed) or synthetic (in-sample)."""
    from tools.sim.replay import describe_days

    demand = _days_text(doc.get("demand_days"))
    demand_text = f"demand from {demand}" if demand else "demand days not recorded"
    pas = doc["passengers"]
    h0 = int(config.start_minute_of_week % 1440)
    h1 = h0 + round(config.hours * 60)
    window = f"{h0 // 60:02d}:{h0 % 60:02d}-{h1 // 60:02d}:{h1 % 60:02d}"
    sample: dict[str, Any] = {
        "passengers": "replay" if replayed else "synthetic",
        "passenger_days": pas.get("days"),
        "window": window,
        "records": pas.get("records"),
        "demand_days": demand,
        "held_out": bool(replayed and leaked == []),
        "in_sample": not replayed or bool(leaked),
        "in_sample_days": [d.isoformat() for d in leaked or ()],
        "leakage_checked": replayed and leaked is not None,
    }
    fleet = doc["fleet"]
    who = f"{fleet['taxis']} cabs ({fleet['sized']}), matching {config.matching}"
    if not replayed:
        label = (
            f"IN-SAMPLE synthetic passengers (Poisson arrivals at the demand table's own rates, "
            f"{demand_text}; no real passengers for this area): an upper bound, not a held-out "
            f"measure; {window}, {who}"
        )
    elif leaked is None:
        label = (
            f"passengers {','.join(pas['days'])} {window} ({pas['records']} records) NOT "
            f"CHECKED for leakage (allow_in_sample: the demand table does not record its days); "
            f"{who}"
        )
    elif leaked:
        label = (
            f"IN-SAMPLE passengers {','.join(pas['days'])} {window} ({pas['records']} records; "
            f"allow_in_sample: the {demand_text} includes {describe_days(leaked)}); {who}"
        )
    else:
        label = (
            f"held-out passengers {','.join(pas['days'])} {window} ({pas['records']} records), "
            f"{demand_text}; {who}"
        )
    return sample, label


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
        description="simulate policies (tools/sim) + the planner gate: the gated policy's "
        "(nagashi-live) paired revenue/h difference against hotspot must be above zero "
        "(95 % interval)",
    ),
)
