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
from scipy import stats

from tools.sim.engine import RunResult, run_shift
from tools.sim.replay import Replay, replay_passengers
from tools.sim.world import Passengers, SimConfig, World, build_world, make_passengers

if TYPE_CHECKING:
    from models import DemandTable
    from tiles import Graph

METRICS = (
    "revenue_per_h",
    "pickups_per_h",
    "occupied_share",
    "empty_km_per_pickup",
    "served_share",
    "occupied_time_share",
    "search_time_s",
    "wait_time_s",
    "expired_share",
    "fleet_revenue_per_h",
    "fleet_occupied_time_share",
)
#: the fleet size the reference fleet is occupied this share of its time (``--taxis auto``)
OCCUPANCY_BAND = (0.40, 0.50)
SIZING_ROUNDS = 8
GATE_RULE = (
    "the gate passes when the 95% interval of the gated policy's paired revenue/h difference "
    "against hotspot (same passengers, starting positions and seeds) lies above zero, at every "
    "adoption level run"
)
#: the policy the release gate judges: the agent as shipped, following its route read-out with
#: the fleet's live layer (``nagashi`` is the idealised whole-area policy, kept for comparison)
GATE_POLICY = "nagashi-live"
#: baselines every nagashi variant is also paired with when they run alongside (``paired_vs``)
BASELINES = ("random-destination", "random-walk", "random", "greedy")
#: calibration seeds are far from the evaluation seeds
CALIBRATION_SEED_BASE = 1_000_000


@dataclass(frozen=True)
class Calibration:
    multiplier: float  # arrivals = multiplier * share * observed rate
    target_trips_h: float  # served trips per hour the fleet must reproduce
    served_trips_h: float  # what the reference fleet served at ``multiplier``
    rounds: int
    converged: bool
    background_vacant_per_h: float  # mean vacant passes per link and hour of the reference fleet

    def to_json(self) -> dict[str, object]:
        return {
            "multiplier": round(self.multiplier, 4),
            "target_trips_per_h": round(self.target_trips_h, 3),
            "served_trips_per_h": round(self.served_trips_h, 3),
            "rounds": self.rounds,
            "converged": self.converged,
            "background_vacant_passes_per_link_h": round(self.background_vacant_per_h, 4),
        }


def calibrate(world: World) -> Calibration:
    """Fixed point ``m <- m * target / served`` with the reference policy (module docs of
    :mod:`tools.sim.world`)."""
    cfg = world.config
    target = world.share * world.observed_area_rate_h
    m = 1.0
    served = 0.0
    nu = 0.0
    prev: tuple[float, float] | None = None
    for r in range(1, cfg.calibration_rounds + 1):
        total = 0
        nu = 0.0
        for k in range(cfg.calibration_seeds):
            seed = CALIBRATION_SEED_BASE + k
            pax = make_passengers(world, seed, m)
            res = run_shift(world, pax, cfg.calibrate_with, seed, m, test_taxis=1)
            total += res.served
            nu += res.background_vacant_passes_per_link_h / cfg.calibration_seeds
        served = total / (cfg.calibration_seeds * cfg.hours)
        if served > 0 and abs(served / target - 1.0) <= cfg.calibration_tolerance:
            return Calibration(m, target, served, r, True, nu)
        if r == cfg.calibration_rounds:
            break
        if served <= 0:  # nobody served yet: far too few passengers
            m = min(m * 4.0, cfg.max_multiplier)
            continue
        # served grows like m ** alpha (alpha < 1 as cabs saturate): secant in log-log
        alpha = 1.0
        if prev is not None and prev[0] != m and prev[1] > 0 and prev[1] != served:
            alpha = math.log(served / prev[1]) / math.log(m / prev[0])
            alpha = min(max(alpha, 0.2), 1.0)
        prev = (m, served)
        m = min(max(m * (target / served) ** (1.0 / alpha), 1.0), cfg.max_multiplier)
    return Calibration(m, target, served, cfg.calibration_rounds, False, nu)


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and its Student-t confidence interval (NaN values are left out)."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if x.size < 2:
        return (mean, math.nan, math.nan)
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return (mean, mean - half, mean + half)


def summarise(results: dict[str, list[RunResult]]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for policy, runs in results.items():
        row: dict[str, object] = {"seeds": len(runs)}
        for name in METRICS:
            mean, lo, hi = mean_ci([r.metrics()[name] for r in runs])
            row[name] = {"mean": _r(mean), "ci95": [_r(lo), _r(hi)]}
        row["dead_end_waits"] = int(sum(r.stuck for r in runs))
        out[policy] = row
    return out


def paired_gain(
    results: dict[str, list[RunResult]], a: str, b: str, metric: str = "revenue_per_h"
) -> dict[str, object]:
    """``metric`` of ``a`` over ``b`` on the same runs: the mean paired difference and its 95 %
    interval (``revenue_per_h_diff``), and the mean difference over ``b``'s mean."""
    ra = np.array([r.metrics()[metric] for r in results[a]])
    rb = np.array([r.metrics()[metric] for r in results[b]])
    diff = ra - rb
    mean, lo, hi = mean_ci(diff.tolist())
    base = float(rb.mean()) if rb.size else math.nan
    return {
        "revenue_per_h_diff": {"mean": _r(mean), "ci95": [_r(lo), _r(hi)]},
        "relative_gain": _r(mean / base) if base else None,
    }


def gate(doc: Mapping[str, Any], policy: str = GATE_POLICY) -> tuple[bool, str]:
    """The release gate on a simulation table (:meth:`Experiment.to_json`) for ``policy``: see
    ``GATE_RULE``."""
    paired = (doc.get("paired") or {}).get(policy)
    if paired is None or doc.get("reference") != "hotspot":
        return False, f"gate FAIL: the gate needs the {policy} policy against the hotspot reference"
    points: list[tuple[str, Mapping[str, Any]]] = [("", paired)]
    for pt in (doc.get("adoption") or {}).get(policy, []):
        points.append((f"adoption {pt['adoption']:g}: ", pt["paired"]))
    ok = True
    parts = []
    for label, pg in points:
        d = pg["revenue_per_h_diff"]
        lo, hi = d["ci95"]
        if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
            return False, "gate FAIL: confidence intervals need at least two runs"
        ok = ok and lo > 0
        gain = pg.get("relative_gain")
        rel = f" ({100 * gain:+.1f}%)" if isinstance(gain, float) else ""
        parts.append(f"{label}{policy} - hotspot {d['mean']:+.2f}/h [{lo:+.2f}, {hi:+.2f}]{rel}")
    verdict = "PASS" if ok else "FAIL"
    return ok, f"gate {verdict}: " + "; ".join(parts) + f" ({GATE_RULE})"


def _r(x: float) -> float:
    return round(float(x), 4) if math.isfinite(x) else math.nan


def json_finite(x: Any) -> Any:
    """``x`` with every non-finite float (an undefined interval) as None, so it is valid JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_finite(v) for v in x]
    return x


@dataclass(frozen=True)
class Sizing:
    """``--taxis auto``: the fleet sizes tried and the reference fleet's occupied time share."""

    tried: tuple[tuple[int, float], ...]
    taxis: int
    occupied_share: float
    in_band: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "band": list(OCCUPANCY_BAND),
            "tried": [{"taxis": n, "occupied_share": round(s, 4)} for n, s in self.tried],
            "taxis": self.taxis,
            "occupied_share": round(self.occupied_share, 4),
            "in_band": self.in_band,
        }


@dataclass(frozen=True)
class _Tasks:
    """What every run task needs (set before the worker processes fork)."""

    worlds: tuple[World, ...]  # per replayed day (one world when synthetic)
    replay: Replay | None
    policies: tuple[str, ...]
    levels: tuple[int, ...]  # test cabs per adoption level
    multiplier: float
    tasks: tuple[tuple[int, int], ...]  # (day index, seed)


_TASKS: _Tasks | None = None


def _passengers(spec: _Tasks, day: int, seed: int) -> Passengers:
    if spec.replay is None:
        return make_passengers(spec.worlds[0], seed, spec.multiplier)
    return replay_passengers(spec.worlds[day], spec.replay.days[day], seed)


def _run_task(index: int) -> list[list[RunResult]]:
    """Task ``index``: per adoption level, every policy's run (in ``spec.policies`` order)."""
    spec = _TASKS
    assert spec is not None
    day, seed = spec.tasks[index]
    world = spec.worlds[day]
    pax = _passengers(spec, day, seed)
    return [
        [run_shift(world, pax, p, seed, spec.multiplier, test_taxis=k) for p in spec.policies]
        for k in spec.levels
    ]


def _run_tasks(
    spec: _Tasks, jobs: int, progress: Callable[[str], None] | None
) -> list[list[list[RunResult]]]:
    global _TASKS
    _TASKS = spec
    n = len(spec.tasks)
    try:
        if jobs <= 1 or n <= 1:
            out = []
            for i in range(n):
                out.append(_run_task(i))
                if progress is not None:
                    progress(
                        f"run {i + 1}/{n} done (day {spec.tasks[i][0]}, seed {spec.tasks[i][1]})"
                    )
            return out
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # fork: the workers inherit ``_TASKS`` (the worlds) instead of unpickling it
        with ProcessPoolExecutor(max_workers=min(jobs, n), mp_context=mp.get_context("fork")) as ex:
            out = []
            for i, r in enumerate(ex.map(_run_task, range(n))):
                out.append(r)
                if progress is not None:
                    progress(f"run {i + 1}/{n} done")
            return out
    finally:
        _TASKS = None


def run_seeds(
    world: World,
    policies: Sequence[str],
    seeds: Sequence[int],
    multiplier: float,
    progress: Callable[[str], None] | None = None,
    jobs: int = 1,
) -> dict[str, list[RunResult]]:
    """Every policy on the same seeds (same passengers and starting positions), synthetic."""
    spec = _Tasks(
        (world,),
        None,
        tuple(policies),
        (world.config.test_taxis,),
        multiplier,
        tuple((0, s) for s in seeds),
    )
    runs = _run_tasks(spec, jobs, progress)
    return {p: [r[0][k] for r in runs] for k, p in enumerate(policies)}


def size_fleet(
    world: World, pax: Passengers, seed: int = CALIBRATION_SEED_BASE
) -> tuple[Sizing, RunResult]:
    """The fleet size at which the reference fleet (every cab on ``calibrate_with``) is occupied
    ``OCCUPANCY_BAND`` of its time on these passengers: start from the cab-hours the passengers'
    trips would fill at the band's middle, then ``N <- N * share / target`` (occupied time is
    nearly fixed by the passengers, so the share goes as 1 / N)."""
    cfg = world.config
    lo, hi = OCCUPANCY_BAND
    target = (lo + hi) / 2
    busy = float(np.minimum(pax.duration_s, np.maximum(world.shift_s - pax.arrive_s, 0.0)).sum())
    n = max(1, round(busy / (target * world.shift_s)))
    tried: dict[int, tuple[float, RunResult]] = {}
    for _ in range(SIZING_ROUNDS):
        w = dataclasses.replace(world, config=dataclasses.replace(cfg, taxis=n, test_taxis=1))
        res = run_shift(w, pax, cfg.calibrate_with, seed, 1.0, test_taxis=1)
        share = res.fleet_occupied_time_share
        tried[n] = (share, res)
        if lo <= share <= hi:
            break
        nxt = max(1, round(n * share / target))
        if nxt == n:
            nxt = n + (1 if share > hi else -1)
        if nxt < 1 or nxt in tried:
            break
        n = nxt
    best = min(tried, key=lambda k: (not lo <= tried[k][0] <= hi, abs(tried[k][0] - target), k))
    share, res = tried[best]
    sizing = Sizing(tuple((k, v[0]) for k, v in tried.items()), best, share, lo <= share <= hi)
    return sizing, res


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
        return doc


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
) -> Experiment:
    """Build the world, give its cabs the planner parameters ``planner`` (a params.yaml's planner
    section; its ``speed_factor`` if any, else the one measured from the demand's trips), then:
    synthetic -- calibrate arrivals; replay -- size the fleet (``taxis_auto``) and measure the
    reference fleet on the first day; then run every policy on every run (per adoption level:
    ``adoption`` shares of the fleet on the policy under test, else ``config.test_taxis``)."""
    from agent.planner import PlannerParams, speed_factor_from_demand

    if taxis_auto and replay is None:
        raise ValueError(
            "taxis auto needs recorded passengers (the synthetic ones follow the fleet)"
        )
    raw = dict(planner or {})
    speed = float(raw.get("speed_factor") or speed_factor_from_demand(table, graph))
    share = replay.share if replay is not None else None
    world = build_world(graph, table, config, speed, share=share)
    params = PlannerParams.from_mapping(raw, base=world.params, where="params.yaml")
    world = dataclasses.replace(world, params=params)
    sizing: Sizing | None = None
    if replay is None:
        if progress is not None:
            progress("calibrating arrivals against the observed pickups ...")
        cal = calibrate(world)
        worlds: tuple[World, ...] = (world,)
        multiplier = cal.multiplier
        tasks = tuple((0, s) for s in seeds)
        ref_share = math.nan
    else:
        if not replay.days:
            raise ValueError("no day to replay")
        worlds = tuple(
            dataclasses.replace(
                world,
                config=dataclasses.replace(
                    world.config, start_minute_of_week=d.start_minute_of_week
                ),
            )
            for d in replay.days
        )
        pax0 = replay_passengers(worlds[0], replay.days[0], CALIBRATION_SEED_BASE)
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
        world = worlds[0]
        ref_share = ref.fleet_occupied_time_share
        cal = Calibration(
            1.0,
            math.nan,
            ref.served / world.config.hours,
            1 if sizing is None else len(sizing.tried),
            sizing is None or sizing.in_band,
            ref.background_vacant_passes_per_link_h,
        )
        multiplier = 1.0
        tasks = tuple((d, s) for d in range(len(replay.days)) for s in seeds)
    worlds = tuple(
        dataclasses.replace(
            w,
            params=dataclasses.replace(
                w.params, competing_vacant_per_h=cal.background_vacant_per_h
            ),
        )
        for w in worlds
    )
    world = worlds[0]
    n = world.config.taxis
    levels = (
        tuple(min(max(1, round(a * n)), n) for a in adoption)
        if adoption
        else (world.config.test_taxis,)
    )
    spec = _Tasks(worlds, replay, tuple(policies), levels, multiplier, tasks)
    runs = _run_tasks(spec, jobs, progress)
    per_level = tuple(
        (k, {p: [r[li][pi] for r in runs] for pi, p in enumerate(policies)})
        for li, k in enumerate(levels)
    )
    results = per_level[-1][1]
    if replay is None:
        ref_runs = results.get(world.config.calibrate_with, [])
        ref_share = (
            float(np.mean([r.fleet_occupied_time_share for r in ref_runs]))
            if ref_runs
            else math.nan
        )
    return Experiment(
        world=world,
        calibration=cal,
        seeds=tuple(seeds),
        results=results,
        summary=summarise(results),
        replay=replay,
        levels=per_level,
        sizing=sizing,
        reference_occupied_share=ref_share,
        adoption=tuple(adoption),
    )
