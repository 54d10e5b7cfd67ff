"""Seeds, calibration, confidence intervals and the release gate; :func:`run_experiment` is the
one calibrate -> run seeds -> summarise path (``nagashi simulate`` and the pipeline's
``simulate`` step both call it, so the README's table and the release gate come from one code)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from tools.sim.engine import RunResult, run_shift
from tools.sim.world import SimConfig, World, build_world, make_passengers

if TYPE_CHECKING:
    from models import DemandTable
    from tiles import Graph

METRICS = ("revenue_per_h", "pickups_per_h", "occupied_share", "empty_km_per_pickup")
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


def run_seeds(
    world: World,
    policies: Sequence[str],
    seeds: Sequence[int],
    multiplier: float,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[RunResult]]:
    """Every policy on the same seeds (same passengers and starting positions)."""
    out: dict[str, list[RunResult]] = {p: [] for p in policies}
    for seed in seeds:
        pax = make_passengers(world, seed, multiplier)
        for p in policies:
            out[p].append(run_shift(world, pax, p, seed, multiplier))
        if progress is not None:
            progress(f"seed {seed} done")
    return out


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
        for name in (*METRICS, "served_share"):
            mean, lo, hi = mean_ci([r.metrics()[name] for r in runs])
            row[name] = {"mean": _r(mean), "ci95": [_r(lo), _r(hi)]}
        row["dead_end_waits"] = int(sum(r.stuck for r in runs))
        out[policy] = row
    return out


def paired_gain(results: dict[str, list[RunResult]], a: str, b: str) -> dict[str, object]:
    """Revenue per hour of ``a`` over ``b`` on the same seeds: mean ratio - 1 and its CI."""
    ra = np.array([r.revenue_per_h for r in results[a]])
    rb = np.array([r.revenue_per_h for r in results[b]])
    diff = ra - rb
    mean, lo, hi = mean_ci(diff.tolist())
    base = float(rb.mean()) if rb.size else math.nan
    return {
        "revenue_per_h_diff": {"mean": _r(mean), "ci95": [_r(lo), _r(hi)]},
        "relative_gain": _r(mean / base) if base else None,
    }


def gate(summary: dict[str, dict[str, object]]) -> tuple[bool, str]:
    """nagashi beats hotspot on revenue per hour with non-overlapping 95 % intervals."""
    if "nagashi" not in summary or "hotspot" not in summary:
        return False, "the gate needs both the nagashi and the hotspot policies"
    n = summary["nagashi"]["revenue_per_h"]
    h = summary["hotspot"]["revenue_per_h"]
    assert isinstance(n, dict) and isinstance(h, dict)
    n_lo = n["ci95"][0]
    h_hi = h["ci95"][1]
    if not (math.isfinite(n_lo) and math.isfinite(h_hi)):
        return False, "confidence intervals need at least two seeds"
    ok = n_lo > h_hi
    verdict = "PASS" if ok else "FAIL"
    return ok, (
        f"gate {verdict}: nagashi revenue/h {n['mean']:.2f} [{n_lo:.2f}, {n['ci95'][1]:.2f}] vs "
        f"hotspot {h['mean']:.2f} [{h['ci95'][0]:.2f}, {h_hi:.2f}]"
    )


def _r(x: float) -> float:
    return round(x, 4) if math.isfinite(x) else math.nan


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
class Experiment:
    """One simulation experiment: the world as run, its calibration, every policy's runs on the
    same seeds, and their summary (per metric: mean and 95 % interval)."""

    world: World
    calibration: Calibration
    seeds: tuple[int, ...]
    results: dict[str, list[RunResult]]
    summary: dict[str, dict[str, object]]

    def to_json(self, demand_version: str) -> dict[str, Any]:
        """The simulation table (config, calibration, policies, nagashi vs hotspot)."""
        seeds = self.seeds
        doc: dict[str, Any] = {
            "config": {
                **dataclasses.asdict(self.world.config),
                "seeds": seeds[0] if len(seeds) == 1 else [seeds[0], seeds[-1]],
                "speed_factor": round(self.world.params.speed_factor, 4),
                "demand_share": self.world.share,
                "observed_area_pickups_per_h": round(self.world.observed_area_rate_h, 2),
                "demand_version": demand_version,
            },
            "calibration": self.calibration.to_json(),
            "policies": self.summary,
        }
        if "nagashi" in self.results and "hotspot" in self.results:
            doc["nagashi_vs_hotspot"] = paired_gain(self.results, "nagashi", "hotspot")
        return doc


def run_experiment(
    graph: Graph,
    table: DemandTable,
    config: SimConfig,
    policies: Sequence[str],
    seeds: Sequence[int],
    planner: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Experiment:
    """Build the world, give its cabs the planner parameters ``planner`` (a params.yaml's planner
    section; its ``speed_factor`` if any, else the one measured from the demand's trips),
    calibrate arrivals, then run every policy on every seed."""
    from agent.planner import PlannerParams, speed_factor_from_demand

    raw = dict(planner or {})
    speed = float(raw.get("speed_factor") or speed_factor_from_demand(table, graph))
    world = build_world(graph, table, config, speed)
    params = PlannerParams.from_mapping(raw, base=world.params, where="params.yaml")
    world = dataclasses.replace(world, params=params)
    if progress is not None:
        progress("calibrating arrivals against the observed pickups ...")
    cal = calibrate(world)
    world = dataclasses.replace(
        world,
        params=dataclasses.replace(
            world.params, competing_vacant_per_h=cal.background_vacant_per_h
        ),
    )
    results = run_seeds(world, policies, seeds, cal.multiplier, progress)
    return Experiment(world, cal, tuple(seeds), results, summarise(results))
