"""Rows of the cell model: features, pickups and their expectation under statistics per (cell,
slot) of some dates (:func:`make_rows`), and the cross-fitted training rows
(:func:`training_rows`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.demand import DAY_TYPES
from models.errors import DemandDataError
from models.features import assemble_cells
from models.recent import missing_features, neighbour_sum, recent_features
from models.rolling.config import F32, F64, I64, RecentConfig
from models.rolling.month import MonthData, cell_sum, exp_cum_of, static_cells_of, stats_rates


@dataclass(frozen=True, eq=False)
class Rows:
    x: F32  # (K * n_area, F)
    y: F64  # pickups of each (slot, cell)
    mu0: F64  # their historical average
    day: I64  # timeline day of each row
    n_slots: int


def make_rows(
    md: MonthData,
    days: npt.ArrayLike,
    slot_minutes: int,
    cell_rate: F64,
    exp_cum: F64,
    lead_min: npt.ArrayLike | None = None,
    missing: npt.ArrayLike | None = None,
) -> Rows:
    """One row per (day, slot, area cell); recent inputs anchored ``lead_min`` before the slot."""
    d = np.asarray(days, dtype=np.int64)
    if d.size and int(d.min()) < 1:
        raise DemandDataError("rows need the day before for their recent inputs")
    per_day = 1440 // slot_minutes
    day = np.repeat(d, per_day)
    mod = np.tile(np.arange(per_day, dtype=np.int64) * slot_minutes, d.size)
    lead = np.zeros(day.size, np.int64) if lead_min is None else np.asarray(lead_min, np.int64)
    start = day * 1440 + mod
    anchor = start - lead
    cells = md.area_cells
    recent = recent_features(md.obs_cum, exp_cum, anchor, day * 1440, cells, md.grid, cells)
    if missing is not None:
        m = np.asarray(missing, dtype=bool)
        recent[m] = missing_features(int(m.sum()), cells.size)
    nb = neighbour_sum(cell_rate, md.grid)
    dtype_ = md.day_type[day]
    x = assemble_cells(
        static_cells_of(md, cell_rate),
        cell_rate,
        nb,
        cells,
        dtype_,
        mod,
        lead,
        slot_minutes,
        recent,
    )
    y = (md.obs_cum[start + slot_minutes] - md.obs_cum[start])[:, cells]
    mu0 = cell_rate[dtype_[:, None], (mod // 30)[:, None], cells[None, :]] * (slot_minutes / 60.0)
    return Rows(x, y.ravel(), mu0.ravel(), np.repeat(day, cells.size), int(day.size))


def training_rows(md: MonthData, days: npt.ArrayLike, config: RecentConfig) -> Rows:
    """Cross-fitted training rows (random lead and dropout per slot) of ``days``."""
    d = np.asarray(sorted(int(v) for v in np.asarray(days)), dtype=np.int64)
    rng = np.random.default_rng(config.seed)
    parts: list[Rows] = []
    for k in range(config.folds):
        in_k = d[(np.arange(d.size) % config.folds) == k]
        rest = d[(np.arange(d.size) % config.folds) != k]
        in_k = in_k[in_k >= 1]
        if in_k.size == 0:
            continue
        # a day type absent from the other folds (one Saturday in a short history) takes its
        # statistics from every training date of that type, its own included
        for t in range(len(DAY_TYPES)):
            if not np.any(md.day_type[rest] == t):
                rest = np.concatenate([rest, d[md.day_type[d] == t]])
        rates = stats_rates(md, rest, config.stats)
        crate = cell_sum(md, rates)
        n = in_k.size * (1440 // config.slot_minutes)
        lead = rng.choice(np.asarray(config.leads_min), size=n)
        missing = rng.random(n) < config.dropout
        parts.append(
            make_rows(md, in_k, config.slot_minutes, crate, exp_cum_of(md, crate), lead, missing)
        )
    keep = parts
    return Rows(
        np.concatenate([p.x for p in keep]),
        np.concatenate([p.y for p in keep]),
        np.concatenate([p.mu0 for p in keep]),
        np.concatenate([p.day for p in keep]),
        sum(p.n_slots for p in keep),
    )
