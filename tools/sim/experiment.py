"""Seeds, calibration, confidence intervals and the release gate; :func:`run_experiment` is the
one calibrate -> run seeds -> summarise path (``nagashi simulate`` and the pipeline's
``simulate`` step both call it, so the README's table and the release gate come from one code).

Two sources of passengers. Synthetic (no ``replay``): Poisson arrivals at the demand table's
rates, calibrated so the reference fleet serves the observed pickups (in-sample: the planner
knows the very rates the passengers arrive at). Replay (``replay``, :mod:`tools.sim.replay`):
the recorded passengers of held-out days, no multiplier; a run is one (day, seed) pair, and the
intervals are over those runs.

Runs are independent tasks (a day, a seed: every policy and every adoption level on the same
passengers and starting positions), seeded by their own numbers only, so ``jobs`` worker
processes give exactly the results of one.

Laid out in pieces (issue 14): :mod:`tools.sim.calibration` (arrivals, fleet size),
:mod:`tools.sim.runs` (the tasks and who runs them), :mod:`tools.sim.summary` (intervals, paired
gains, the gate); their names are also this module's (``__all__``).

The release gate (:func:`gate`): nagashi passes when the 95 % interval of its *paired*
difference in revenue per hour against the reference (hotspot), over the same runs, lies above
zero -- at every adoption level when several were run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tools.sim.calibration import (
    CALIBRATION_SEED_BASE,
    OCCUPANCY_BAND,
    SIZING_ROUNDS,
    Calibration,
    Sizing,
    calibrate,
    size_fleet,
)
from tools.sim.engine import run_shift
from tools.sim.replay import Replay, replay_passengers
from tools.sim.result import RunResult
from tools.sim.runs import _run_tasks, _Tasks, dask_client, run_seeds
from tools.sim.summary import (
    BASELINES,
    GATE_POLICY,
    GATE_RULE,
    METRICS,
    _r,
    gate,
    json_finite,
    mean_ci,
    paired_gain,
    summarise,
)
from tools.sim.world import SimConfig, World, build_world

if TYPE_CHECKING:
    from models import DemandTable
    from tiles import Graph
    from tools.sim.sim_model import SimModel

__all__ = [
    "BASELINES",
    "CALIBRATION_SEED_BASE",
    "GATE_POLICY",
    "GATE_RULE",
    "METRICS",
    "OCCUPANCY_BAND",
    "SIZING_ROUNDS",
    "Calibration",
    "Experiment",
    "Sizing",
    "calibrate",
    "gate",
    "json_finite",
    "mean_ci",
    "paired_gain",
    "run_experiment",
    "run_seeds",
    "size_fleet",
    "summarise",
]


@dataclass(frozen=True)
class Experiment:
    """One simulation experiment: the world as run, its calibration, every policy's runs on the
    same runs (seeds, or days x seeds), and their summary (per metric: mean and 95 % interval);
    ``levels`` the runs per adoption level (the last is the main table)."""

    world: World
    calibration: Calibration
    seeds: tuple[int, ...]
    results: dict[str, list[RunResult]]
    summary: dict[str, dict[str, object]]
    replay: Replay | None = None
    levels: tuple[tuple[int, dict[str, list[RunResult]]], ...] = ()
    sizing: Sizing | None = None
    reference_occupied_share: float = math.nan
    adoption: tuple[float, ...] = ()

    def to_json(self, demand_version: str) -> dict[str, Any]:
        """The simulation table (config, calibration, policies, paired gains, passengers,
        fleet, adoption)."""
        seeds = self.seeds
        w = self.world
        cfg = w.config
        ref = cfg.calibrate_with
        doc: dict[str, Any] = {
            "config": {
                **dataclasses.asdict(cfg),
                "seeds": seeds[0] if len(seeds) == 1 else [seeds[0], seeds[-1]],
                "speed_factor": round(w.params.speed_factor, 4),
                "demand_share": w.share,
                "observed_area_pickups_per_h": round(w.observed_area_rate_h, 2),
                "demand_version": demand_version,
            },
            "calibration": self.calibration.to_json(),
            "policies": self.summary,
            "reference": ref,
            "paired": {p: paired_gain(self.results, p, ref) for p in self.results if p != ref}
            if ref in self.results
            else {},
            "demand_days": w.table.meta.get("days"),
            "gate_rule": GATE_RULE,
        }
        if w.model is not None:
            doc.update(self._model_json())
        faults = _live_faults(self.results)
        if faults:
            doc["live_faults"] = {
                "loss": cfg.live_loss,
                "outage_min": None if cfg.live_outage_min is None else list(cfg.live_outage_min),
                "policies": faults,
            }
        runs = len(next(iter(self.results.values()))) if self.results else 0
        doc["runs"] = runs
        if self.replay is not None:
            doc["passengers"] = self.replay.to_json()
        else:
            arrived = [r.passengers for rs in self.results.values() for r in rs]
            doc["passengers"] = {
                "source": "synthetic: Poisson arrivals at the demand table's rates, calibrated",
                "days": None,
                "records": round(float(np.mean(arrived)), 1) if arrived else 0,
                "in_sample": True,
            }
        main_k = self.levels[-1][0] if self.levels else cfg.test_taxis
        doc["fleet"] = {
            "taxis": cfg.taxis,
            "test_taxis": main_k,
            "adoption": round(main_k / cfg.taxis, 4),
            "occupied_share_reference": _r(self.reference_occupied_share),
            "sized": "auto" if self.sizing is not None else "given",
            **({"sizing": self.sizing.to_json()} if self.sizing is not None else {}),
        }
        if self.adoption:
            doc["adoption"] = {
                p: [
                    _adoption_point(a, k, res, p, ref)
                    for a, (k, res) in zip(self.adoption, self.levels, strict=True)
                ]
                for p in self.results
                if p != ref
            }
        if "nagashi" in self.results and "hotspot" in self.results:
            doc["nagashi_vs_hotspot"] = paired_gain(self.results, "nagashi", "hotspot")
        # against the other baselines too (a herding reference flatters whatever spreads out):
        # every nagashi variant paired with every baseline run alongside
        others = [q for q in BASELINES if q in self.results and q != ref]
        mine = [p for p in self.results if p.startswith("nagashi")]
        if others and mine:
            doc["paired_vs"] = {
                q: {p: paired_gain(self.results, p, q) for p in mine} for q in others
            }
        # the spread offline fleet against the offline fleet it spreads (nagashi-offline)
        spread = [p for p in self.results if p.startswith("nagashi-offline-spread")]
        if spread and "nagashi-offline" in self.results:
            doc.setdefault("paired_vs", {})["nagashi-offline"] = {
                p: paired_gain(self.results, p, "nagashi-offline") for p in spread
            }
        return doc

    def _model_json(self) -> dict[str, Any]:
        """``simulate --model``: the cell demand model the +model policies planned with, per such
        policy what their read-outs had as recent inputs (summed over the runs), and each paired
        with its statistics twin on the same runs."""
        assert self.world.model is not None
        doc: dict[str, Any] = {}
        doc["model"] = self.world.model.to_json()
        doc["model_recent"] = {
            p: _recent_counts(rs) for p, rs in self.results.items() if p.endswith("+model")
        }
        # each +model policy paired with its statistics twin on the same runs
        doc["model_vs_statistics"] = {
            p: {
                **paired_gain(self.results, p, p.removesuffix("+model")),
                # per run (task order), to pool runs of several calls
                "runs_revenue_per_h": {
                    q: [_r(r.metrics()["revenue_per_h"]) for r in self.results[q]]
                    for q in (p.removesuffix("+model"), p)
                },
            }
            for p in self.results
            if p.endswith("+model") and p.removesuffix("+model") in self.results
        }
        return doc


def _recent_counts(runs: Sequence[RunResult]) -> dict[str, Any]:
    """The ``+model`` policy's read-outs by recent inputs (``used``) or the reason why none,
    its solves, and the live layer's units, over ``runs``."""
    by: dict[str, int] = {}
    solves = {"solves_offline": 0, "solves_with_recent": 0}
    expected: list[float] = []
    units = None
    counts = None
    for r in runs:
        st = r.policy_stats
        for k, v in st.get("readouts_by_recent", {}).items():
            by[k] = by.get(k, 0) + int(v)
        for k in solves:
            solves[k] += int(st.get(k, 0))
        if st.get("expected_fleet_pickups_60m"):
            expected += [float(x) for x in st["expected_fleet_pickups_60m"]]
        units = st.get("live_pickups_per_hail", units)
        counts = st.get("live_counts", counts)
    total = sum(by.values())
    return {
        "readouts": total,
        "readouts_by_recent": dict(sorted(by.items())),
        "used_share": _r(by.get("used", 0) / total) if total else None,
        **solves,
        "expected_fleet_pickups_60m": [_r(min(expected)), _r(max(expected))] if expected else None,
        "live_counts": counts,
        "live_pickups_per_hail": units,
    }


def _live_faults(results: dict[str, list[RunResult]]) -> dict[str, dict[str, Any]]:
    """Per policy with a live layer under faults (``simulate --live-loss/--live-outage``): what
    they took, summed over its runs (:meth:`tools.sim.live.LiveLayer.stats`), and the share of
    the cabs' heartbeat ticks without a usable snapshot (``offline_share``)."""
    out: dict[str, dict[str, Any]] = {}
    for p, runs in results.items():
        got = [r.policy_stats["live_faults"] for r in runs if "live_faults" in r.policy_stats]
        if not got:
            continue
        total: dict[str, Any] = {k: sum(int(g[k]) for g in got) for k in got[0]}
        ticks = total.get("cab_ticks", 0)
        total["offline_share"] = round(total["cab_ticks_offline"] / ticks, 4) if ticks else None
        total["runs"] = len(got)
        out[p] = total
    return out


def _adoption_point(
    a: float, k: int, res: dict[str, list[RunResult]], p: str, ref: str
) -> dict[str, Any]:
    def stat(policy: str, metric: str) -> dict[str, Any]:
        mean, lo, hi = mean_ci([r.metrics()[metric] for r in res[policy]])
        return {"mean": _r(mean), "ci95": [_r(lo), _r(hi)]}

    return {
        "adoption": a,
        "test_taxis": k,
        "adopters_revenue_per_h": stat(p, "revenue_per_h"),
        "reference_same_cabs_revenue_per_h": stat(ref, "revenue_per_h"),
        "fleet_revenue_per_h": stat(p, "fleet_revenue_per_h"),
        "reference_fleet_revenue_per_h": stat(ref, "fleet_revenue_per_h"),
        "paired": paired_gain(res, p, ref),
        "fleet_paired": paired_gain(res, p, ref, "fleet_revenue_per_h"),
    }


def run_experiment(
    graph: Graph,
    table: DemandTable,
    config: SimConfig,
    policies: Sequence[str],
    seeds: Sequence[int],
    planner: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    replay: Replay | None = None,
    taxis_auto: bool = False,
    adoption: Sequence[float] = (),
    jobs: int = 1,
    dask: str | None = None,
    model: SimModel | None = None,
) -> Experiment:
    """Build the world, give its cabs the planner parameters ``planner`` (a params.yaml's planner
    section; its ``speed_factor`` if any, else the one measured from the demand's trips), then:
    synthetic -- calibrate arrivals; replay -- size the fleet (``taxis_auto``) and measure the
    reference fleet on the first day; then run every policy on every run (per adoption level:
    ``adoption`` shares of the fleet on the policy under test, else ``config.test_taxis``), in
    ``jobs`` processes or on the Dask scheduler at ``dask`` (same results). ``model``: the
    cell demand model the ``+model`` policies plan with (:mod:`tools.sim.sim_model`)."""
    if taxis_auto and replay is None:
        raise ValueError(
            "taxis auto needs recorded passengers (the synthetic ones follow the fleet)"
        )
    with dask_client(dask) as client:  # connected (or refused) before the long setup
        world = dataclasses.replace(
            _planned_world(graph, table, config, planner, replay), model=model
        )
        if replay is None:
            setup = _synthetic(world, seeds, progress)
        else:
            setup = _replayed(world, config, replay, seeds, taxis_auto, progress)
        worlds = _with_competition(setup.worlds, setup.calibration)
        world = worlds[0]
        levels = _levels(world.config, adoption)
        spec = _Tasks(worlds, replay, tuple(policies), levels, setup.multiplier, setup.tasks)
        runs = _run_tasks(spec, jobs, progress, client)
    per_level = tuple(
        (k, {p: [r[li][pi] for r in runs] for pi, p in enumerate(policies)})
        for li, k in enumerate(levels)
    )
    results = per_level[-1][1]
    ref_share = setup.ref_share
    if replay is None:
        ref_runs = results.get(world.config.calibrate_with, [])
        ref_share = (
            float(np.mean([r.fleet_occupied_time_share for r in ref_runs]))
            if ref_runs
            else math.nan
        )
    return Experiment(
        world=world,
        calibration=setup.calibration,
        seeds=tuple(seeds),
        results=results,
        summary=summarise(results),
        replay=replay,
        levels=per_level,
        sizing=setup.sizing,
        reference_occupied_share=ref_share,
        adoption=tuple(adoption),
    )


@dataclass(frozen=True)
class _Setup:
    """What the runs of an experiment start from: the worlds (per replayed day), the
    calibration (or the reference fleet's measures on a replay), the tasks (day, seed)."""

    worlds: tuple[World, ...]
    calibration: Calibration
    multiplier: float
    tasks: tuple[tuple[int, int], ...]
    ref_share: float = math.nan  # the reference fleet's occupied time share (replay)
    sizing: Sizing | None = None


def _planned_world(
    graph: Graph,
    table: DemandTable,
    config: SimConfig,
    planner: Mapping[str, Any] | None,
    replay: Replay | None,
) -> World:
    """The world with the cabs' planner parameters (``planner`` over the world's)."""
    from agent.planner import PlannerParams, speed_factor_from_demand

    raw = dict(planner or {})
    speed = float(raw.get("speed_factor") or speed_factor_from_demand(table, graph))
    share = replay.share if replay is not None else None
    world = build_world(graph, table, config, speed, share=share)
    params = PlannerParams.from_mapping(raw, base=world.params, where="params.yaml")
    return dataclasses.replace(world, params=params)


def _synthetic(
    world: World, seeds: Sequence[int], progress: Callable[[str], None] | None
) -> _Setup:
    """Synthetic passengers: calibrate the arrivals; one task per seed."""
    if progress is not None:
        progress("calibrating arrivals against the observed pickups ...")
    cal = calibrate(world)
    return _Setup((world,), cal, cal.multiplier, tuple((0, s) for s in seeds))


def _replayed(
    world: World,
    config: SimConfig,
    replay: Replay,
    seeds: Sequence[int],
    taxis_auto: bool,
    progress: Callable[[str], None] | None,
) -> _Setup:
    """Recorded passengers: one world per day, the fleet sized (``taxis_auto``) or as given,
    the reference fleet measured on the first day; one task per (day, seed)."""
    if not replay.days:
        raise ValueError("no day to replay")
    worlds = tuple(
        dataclasses.replace(
            world,
            config=dataclasses.replace(world.config, start_minute_of_week=d.start_minute_of_week),
        )
        for d in replay.days
    )
    pax0 = replay_passengers(worlds[0], replay.days[0], CALIBRATION_SEED_BASE)
    sizing: Sizing | None = None
    if taxis_auto:
        if progress is not None:
            progress("sizing the fleet to the reference occupancy band ...")
        sizing, ref = size_fleet(worlds[0], pax0)
        config = dataclasses.replace(
            world.config, taxis=sizing.taxis, test_taxis=min(config.test_taxis, sizing.taxis)
        )
        worlds = tuple(
            dataclasses.replace(
                w,
                config=dataclasses.replace(
                    config, start_minute_of_week=w.config.start_minute_of_week
                ),
            )
            for w in worlds
        )
    else:
        ref = run_shift(
            worlds[0], pax0, config.calibrate_with, CALIBRATION_SEED_BASE, 1.0, test_taxis=1
        )
    cal = Calibration(
        1.0,
        math.nan,
        ref.served / worlds[0].config.hours,
        1 if sizing is None else len(sizing.tried),
        sizing is None or sizing.in_band,
        ref.background_vacant_passes_per_link_h,
    )
    tasks = tuple((d, s) for d in range(len(replay.days)) for s in seeds)
    return _Setup(worlds, cal, 1.0, tasks, ref.fleet_occupied_time_share, sizing)


def _with_competition(worlds: tuple[World, ...], cal: Calibration) -> tuple[World, ...]:
    """The worlds with the planner told the reference fleet's vacant passes per link-hour."""
    return tuple(
        dataclasses.replace(
            w,
            params=dataclasses.replace(
                w.params, competing_vacant_per_h=cal.background_vacant_per_h
            ),
        )
        for w in worlds
    )


def _levels(config: SimConfig, adoption: Sequence[float]) -> tuple[int, ...]:
    """Test cabs per adoption level (``config.test_taxis`` without ``adoption``)."""
    n = config.taxis
    if not adoption:
        return (config.test_taxis,)
    return tuple(min(max(1, round(a * n)), n) for a in adoption)
