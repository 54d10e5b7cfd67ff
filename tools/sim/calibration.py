"""Calibration of the synthetic arrivals against the observed pickups (:func:`calibrate`) and
the fleet size of a replay (:func:`size_fleet`, ``--taxis auto``)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tools.sim.engine import run_shift
from tools.sim.result import RunResult
from tools.sim.world import Passengers, World, make_passengers

__all__ = [
    "CALIBRATION_SEED_BASE",
    "OCCUPANCY_BAND",
    "SIZING_ROUNDS",
    "Calibration",
    "Sizing",
    "calibrate",
    "size_fleet",
]

#: the fleet size the reference fleet is occupied this share of its time (``--taxis auto``)
OCCUPANCY_BAND = (0.40, 0.50)
SIZING_ROUNDS = 8
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
