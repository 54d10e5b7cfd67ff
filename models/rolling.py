"""The recent-demand model (feature spec 2) on a month of consecutive pickups: rolling-origin
training, evaluation against two baselines, ONNX export (build side, ``train`` extra).

Data: a census of pickups over consecutive days (the Uber April 2014 month). Everything is
counted in that source's pickups, per 500 m cell (its links' cells) and slot of
``slot_minutes`` (15 or 30) of each *date*.

Sources compared on held-out dates (never a date seen in training):

* ``statistics``: the historical average per link x 30-minute slot x day type of the training
  dates (:func:`models.statistics.rates_from_counts` with no smoothing across slots; a 15-minute
  slot gets half its 30-minute slot);
* ``recent_baseline`` (UCTB's "HA with recent level"): that average times the recent level of
  the whole area, ``(pickups of the last W minutes + 10) / (their historical average + 10)``,
  only what happened before the slot (W of 30, 60 or 120 minutes, chosen on the validation week);
* ``model``: the historical average times a learnt correction per (cell, slot) from
  :data:`models.features.CELL_FEATURES` (time, place, statistics, recent inputs of
  :mod:`models.recent`); ``model_offline``: the same model without recent inputs.

Rolling origin: for an origin date ``d``, statistics and the model learn from the dates before
``d`` and are evaluated on ``d .. d+6``. The model's own choices (kind, number of trees) are made
by the same rule one week earlier, inside the training dates: fit on the dates before
``d - 7``, score ``d - 7 .. d - 1``. Training rows are cross-fitted by date (the statistics a
row sees come from the other training dates), and a share of them (``dropout``) is shown
without recent inputs, so that the model also serves a cab offline.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.demand import DAY_TYPES, SLOTS_PER_DAY, CellGrid, _atomic_write
from models.errors import DemandDataError
from models.features import (
    CELL_FEATURE_SPEC_VERSION,
    CELL_FEATURES,
    CELL_RECENT_START,
    CELL_STATIC_FEATURES,
    MANHATTAN_GRID_DEG,
    assemble_cells,
    log_rate,
)
from models.predict import FEATURES_NPZ, MODEL_JSON, MODEL_ONNX, MODEL_SCHEMA_VERSION
from models.recent import (
    K_AREA,
    missing_features,
    neighbour_sum,
    recent_features,
)
from models.snap import SnapConfig, snap_pickups
from models.statistics import (
    StatsConfig,
    build_from_trips,
    edge_midpoints,
    file_sha256,
    full_graph,
    make_grid,
    network_bbox,
    rates_from_counts,
)
from models.train import C_FLOOR, poisson_deviance
from models.trips import FORMAT_RECORDS, Trips, read_trips
from tiles import TileStore
from tiles.geo import LocalProjection

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

INPUT_NAME = "X"
OUTPUT_NAME = "correction"
VALID_DAYS = 7
MISSING_INDEX = CELL_FEATURES.index("recent_missing")
#: ``gbr_level`` multiplies its trees by the area's recent level (this feature, exponentiated):
#: trees cannot extrapolate a level above the training range, a factor can
LEVEL_INDEX = CELL_FEATURES.index("recent_area_60m")
LEVEL_WINDOWS_MIN = (30, 60, 120)  # candidate windows of the recent-level baseline
#: the historical average of a census: no smoothing of the area total or shares across slots
HA_STATS = StatsConfig(area_halfwidth_slots=0, share_halfwidth_slots=0)


@dataclass(frozen=True)
class RecentConfig:
    """The recent-demand model's training parameters."""

    slot_minutes: int = 15
    #: candidates, chosen on the validation week
    kinds: tuple[str, ...] = ("gbr", "gbr_level", "poisson")
    leads_min: tuple[int, ...] = (0, 15, 30, 45, 60)  # a tick predicts up to an hour ahead
    dropout: float = 0.3  # share of training slots shown without recent inputs (offline cab)
    #: without recent inputs: "statistics" (factor 1), "model" (the correction learnt with
    #: dropout) or "auto" (the learnt one when it beats statistics on the validation week).
    #: Measured (docs/demand.md): the learnt one gained 1.4 % RMSE on one held-out week and lost
    #: 0.5-1.8 % on the next, as the month's level rose; so statistics by default
    offline: str = "statistics"
    folds: int = 3  # cross-fitting folds of the training dates
    #: device budget: the ~60 cells of a 3 km tick x 6 slots evaluate every tree once
    n_estimators_max: int = 120
    learning_rate: float = 0.1
    max_depth: int = 3
    min_samples_leaf: int = 100
    subsample: float = 0.5
    poisson_alpha: float = 1e-4
    seed: int = 7
    stats: StatsConfig = field(default_factory=lambda: HA_STATS)


@dataclass(frozen=True, eq=False)
class MonthData:
    """Pickups of consecutive dates on one network, binned for fast rows (see module doc)."""

    grid: CellGrid
    n_local: int
    edge_cell: I64  # per local edge
    allowed: npt.NDArray[np.bool_]
    length_m: F64
    area_cells: I64  # cells with a cruisable link
    cell_xy: F64  # (n_cells, 2) cell centre along / across the avenues, metres
    first_date: dt.date
    day_type: I64  # per timeline day
    link_counts: F32  # (n_days, 48, n_local) pickups per 30-min slot
    obs_cum: F64  # (n_days * 1440 + 1, n_cells): pickups in timeline minutes < t
    pk_day: I64  # snapped pickup rows (direction shares): timeline day
    pk_minute: I64  # minute of day
    pk_edge: I64  # local edge
    pk_w: F64

    @property
    def n_days(self) -> int:
        return int(self.day_type.size)

    def day_index(self, d: dt.date) -> int:
        return (d - self.first_date).days

    def date_of(self, i: int) -> dt.date:
        return self.first_date + dt.timedelta(days=int(i))


def prepare_month(
    store: TileStore, trips: Trips, snap_config: SnapConfig = SnapConfig()
) -> MonthData:
    """Bin the pickups of ``trips`` (consecutive dates) on the network of ``store``."""
    g = full_graph(store)
    grid = make_grid(g, HA_STATS.cell_m)
    if trips.n == 0:
        raise DemandDataError("no pickup inside the road network")
    snapped = snap_pickups(
        g, trips.lon, trips.lat, trips.dropoff_lon, trips.dropoff_lat, snap_config
    )
    mid_lon, mid_lat = edge_midpoints(g)
    edge_cell = grid.cell_of(mid_lon, mid_lat).astype(np.int64)
    allowed = g.cruise_allowed()
    area_cells = np.unique(edge_cell[allowed])
    first = dt.date.fromordinal(int(trips.pickup_date_ord.min()))
    n_days = int(trips.pickup_date_ord.max()) - first.toordinal() + 1
    from models.trips import day_type_of_date

    day_type = np.array(
        [day_type_of_date(first + dt.timedelta(days=i)) for i in range(n_days)], dtype=np.int64
    )
    trip_i, edge_i, w = snapped.edge_weights(g.n)
    day = trips.pickup_date_ord[trip_i] - first.toordinal()
    minute = (np.floor(trips.pickup_s[trip_i] / 60.0).astype(np.int64)) % 1440
    link_counts = np.zeros((n_days, SLOTS_PER_DAY, g.n), dtype=np.float32)
    np.add.at(link_counts, (day, minute // 30, edge_i), w.astype(np.float32))
    per_min = np.zeros((n_days * 1440, grid.n_cells), dtype=np.float64)
    np.add.at(per_min, (day * 1440 + minute, edge_cell[edge_i]), w)
    obs_cum = np.zeros((n_days * 1440 + 1, grid.n_cells), dtype=np.float64)
    np.cumsum(per_min, axis=0, out=obs_cum[1:])
    # static cell features: centre position in the grid's frame, all-time share
    proj = LocalProjection(float(mid_lon.mean()), float(mid_lat.mean()))
    cidx = np.arange(grid.n_cells)
    clon = grid.min_lon + (cidx % grid.ncols + 0.5) * grid.cell_deg_lon
    clat = grid.min_lat + (cidx // grid.ncols + 0.5) * grid.cell_deg_lat
    x, y = proj.to_xy(clon, clat)
    a = math.radians(MANHATTAN_GRID_DEG)
    along = x * math.sin(a) + y * math.cos(a)
    across = x * math.cos(a) - y * math.sin(a)
    cell_xy = np.column_stack([along, across]).astype(np.float64)
    return MonthData(
        grid=grid,
        n_local=g.n,
        edge_cell=edge_cell,
        allowed=allowed,
        length_m=g.length_m.astype(np.float64),
        area_cells=area_cells,
        cell_xy=cell_xy,
        first_date=first,
        day_type=day_type,
        link_counts=link_counts,
        obs_cum=obs_cum,
        pk_day=day,
        pk_minute=minute,
        pk_edge=edge_i,
        pk_w=w,
    )


def static_cells_of(md: MonthData, cell_rate: F64) -> F32:
    """Static cell features: position, and the log share of the area's statistical demand
    under ``cell_rate`` (so of the training dates only, like every other input)."""
    total = cell_rate.sum(axis=(0, 1))
    share = total / max(float(total.sum()), 1e-12)
    static = np.column_stack([md.cell_xy, log_rate(share * 1e3)]).astype(np.float32)
    if static.shape[1] != len(CELL_STATIC_FEATURES):
        raise DemandDataError("cell static feature count does not match the spec")
    return static


def stats_rates(md: MonthData, days: npt.ArrayLike, config: StatsConfig = HA_STATS) -> F64:
    """Historical-average rates (3, 48, n_local), recent-source pickups per hour, from ``days``."""
    d = np.asarray(days, dtype=np.int64)
    counts = np.zeros((len(DAY_TYPES), SLOTS_PER_DAY, md.n_local))
    expo = np.zeros((len(DAY_TYPES), SLOTS_PER_DAY))
    for t in range(len(DAY_TYPES)):
        sel = d[md.day_type[d] == t]
        if sel.size:
            counts[t] = md.link_counts[sel].sum(axis=0, dtype=np.float64)
        expo[t] = 0.5 * sel.size
    return rates_from_counts(
        counts, expo, md.edge_cell, md.grid.n_cells, md.length_m, md.allowed, config
    )


def cell_sum(md: MonthData, rates: F64) -> F64:
    """Per-cell sums (3, 48, n_cells) of link rates (3, 48, n_local)."""
    out = np.zeros((len(DAY_TYPES), SLOTS_PER_DAY, md.grid.n_cells))
    for t in range(len(DAY_TYPES)):
        for s in range(SLOTS_PER_DAY):
            out[t, s] = np.bincount(md.edge_cell, weights=rates[t, s], minlength=md.grid.n_cells)
    return out


def exp_cum_of(md: MonthData, cell_rate: F64) -> F64:
    """Cumulative expected pickups per timeline minute and cell under ``cell_rate`` (per h)."""
    minute = np.arange(md.n_days * 1440)
    per_min = cell_rate[md.day_type[minute // 1440], (minute % 1440) // 30] / 60.0
    out = np.zeros((minute.size + 1, md.grid.n_cells))
    np.cumsum(per_min, axis=0, out=out[1:])
    return out


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


Predictor = Callable[[F32], F64]


@dataclass
class Fitted:
    kind: str
    estimator: Any
    trees: int | None
    train_days: list[int]  # timeline days whose rows were fitted
    fit_s: float
    #: without recent inputs: "model" (its own offline correction) or "statistics" (factor 1),
    #: chosen on the validation week (the offline model must not be worse than statistics)
    offline: str = "model"

    def predict(self, x: F32) -> F64:
        c = np.maximum(np.asarray(self.estimator.predict(x), dtype=np.float64), C_FLOOR)
        c = c * offset_of(self.kind, x)
        if self.offline == "statistics":
            c = np.where(x[:, MISSING_INDEX] >= 0.5, 1.0, c)
        return c


def offset_of(kind: str, x: F32) -> F64:
    """The fixed factor a kind multiplies its learnt correction by (1, or the recent level)."""
    if kind == "gbr_level":
        return np.exp(x[:, LEVEL_INDEX].astype(np.float64))
    return np.ones(x.shape[0])


def _estimator(kind: str, config: RecentConfig, trees: int | None = None) -> Any:
    try:
        from sklearn.ensemble import GradientBoostingRegressor
        from sklearn.linear_model import PoissonRegressor
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError as e:
        raise DemandDataError(
            f"training needs the train extra (pip install -e '.[train]'): {e}"
        ) from e
    if kind in ("gbr", "gbr_level"):
        return GradientBoostingRegressor(
            loss="squared_error",
            n_estimators=trees or config.n_estimators_max,
            learning_rate=config.learning_rate,
            max_depth=config.max_depth,
            min_samples_leaf=config.min_samples_leaf,
            subsample=config.subsample,
            random_state=config.seed,
        )
    if kind == "poisson":
        return make_pipeline(
            StandardScaler(), PoissonRegressor(alpha=config.poisson_alpha, max_iter=300)
        )
    raise DemandDataError(f"unknown model kind {kind!r} (gbr, gbr_level, poisson)")


def fit(
    md: MonthData, days: npt.ArrayLike, config: RecentConfig, kind: str, trees: int | None = None
) -> tuple[Fitted, Rows]:
    """Fit one candidate on the cross-fitted rows of ``days``.

    Both kinds minimise a Poisson-type loss of ``y`` around ``mu0 * c(x)``: the trees by
    weighted least squares on ``y / mu0`` with weights ``mu0`` (Pearson chi-square), the GLM
    by the Poisson deviance itself (same weights: an offset ``log mu0``).
    """
    rows = training_rows(md, days, config)
    ok = rows.mu0 > 0
    est = _estimator(kind, config, trees)
    t0 = time.perf_counter()
    base = rows.mu0[ok] * offset_of(kind, rows.x[ok])
    if kind == "poisson":
        est.fit(rows.x[ok], rows.y[ok] / base, poissonregressor__sample_weight=base)
    else:
        est.fit(rows.x[ok], rows.y[ok] / base, sample_weight=base)
    used = sorted({int(v) for v in rows.day[ok]})
    n_trees = int(est.n_estimators_) if kind != "poisson" else None
    return Fitted(kind, est, n_trees, used, time.perf_counter() - t0), rows


def _metrics(y: F64, mu: F64) -> dict[str, float]:
    err = mu - y
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err * err))),
        "poisson_deviance": poisson_deviance(y, mu),
    }


def evaluate_days(
    md: MonthData,
    eval_days: list[int],
    rates: F64,
    slot_minutes: int,
    predictor: Predictor | None,
    level_window_min: int = 60,
) -> dict[str, Any]:
    """Metrics of every source on ``eval_days`` (timeline days), statistics ``rates`` (per h)."""
    crate = cell_sum(md, rates)
    ecum = exp_cum_of(md, crate)
    days = np.asarray(sorted(eval_days), dtype=np.int64)
    rows = make_rows(md, days, slot_minutes, crate, ecum)
    n_area = md.area_cells.size
    shape = (rows.n_slots, n_area)
    y = rows.y.reshape(shape)
    mu: dict[str, F64] = {"statistics": rows.mu0.reshape(shape)}
    per_day = 1440 // slot_minutes
    starts = np.repeat(days, per_day) * 1440 + np.tile(np.arange(per_day) * slot_minutes, days.size)
    cells = md.area_cells

    def recent_level(w_: int) -> F64:
        o = (md.obs_cum[starts] - md.obs_cum[starts - w_])[:, cells].sum(axis=1)
        e = (ecum[starts] - ecum[starts - w_])[:, cells].sum(axis=1)
        return np.asarray(mu["statistics"] * ((o + K_AREA) / (e + K_AREA))[:, None])

    mu["recent_baseline"] = recent_level(level_window_min)
    level_dev = {
        w_: round(poisson_deviance(y.ravel(), recent_level(w_).ravel()), 6)
        for w_ in LEVEL_WINDOWS_MIN
    }
    if predictor is not None:
        mu["model"] = mu["statistics"] * predictor(rows.x).reshape(shape)
        off = rows.x.copy()
        off[:, CELL_RECENT_START:] = missing_features(1, 1).reshape(-1)
        mu["model_offline"] = mu["statistics"] * predictor(off).reshape(shape)
    # link log-likelihood: p(link | slot) = q(link | cell) * mu_cell / sum_cells mu_cell
    pos = np.searchsorted(days, md.pk_day)
    sel = (pos < days.size) & (days[np.minimum(pos, days.size - 1)] == md.pk_day)
    k = pos[sel] * per_day + md.pk_minute[sel] // slot_minutes
    e_ = md.pk_edge[sel]
    w = md.pk_w[sel]
    col_of_cell = np.full(md.grid.n_cells, -1, dtype=np.int64)
    col_of_cell[cells] = np.arange(n_area)
    col = col_of_cell[md.edge_cell[e_]]
    dt_ = md.day_type[md.pk_day[sel]]
    s30 = md.pk_minute[sel] // 30
    q = rates[dt_, s30, e_] / np.maximum(crate[dt_, s30, md.edge_cell[e_]], 1e-300)
    out: dict[str, Any] = {}
    for name, m in mu.items():
        met = _metrics(y.ravel(), m.ravel())
        p = q * m[k, col] / np.maximum(m.sum(axis=1)[k], 1e-300)
        met["link_loglik_per_pickup"] = float(
            np.sum(w * np.log(np.maximum(p, 1e-300))) / max(float(w.sum()), 1e-300)
        )
        met["expected_pickups"] = float(m.sum())
        out[name] = {kk: round(v, 6) for kk, v in met.items()}
    return {
        "days": [md.date_of(int(i)).isoformat() for i in days],
        "slot_minutes": slot_minutes,
        "slots": int(rows.n_slots),
        "cells": int(n_area),
        "links": int(np.sum(md.allowed)),
        "heldout_pickups": round(float(y.sum()), 3),
        "recent_level_window_min": level_window_min,
        "recent_level_poisson_deviance": level_dev,
        "sources": out,
    }


def ratios(res: dict[str, Any], num: str, den: str) -> dict[str, float]:
    a, b = res["sources"][num], res["sources"][den]
    return {
        k: round(a[k] / b[k], 6) if b[k] != 0 else float("nan")
        for k in ("mae", "rmse", "poisson_deviance", "link_loglik_per_pickup")
    }


def beats(res: dict[str, Any], num: str, den: str) -> bool:
    a, b = res["sources"][num], res["sources"][den]
    return bool(
        a["poisson_deviance"] < b["poisson_deviance"]
        and a["link_loglik_per_pickup"] > b["link_loglik_per_pickup"]
    )


def select_and_fit(
    md: MonthData, train_days: list[int], config: RecentConfig
) -> tuple[Fitted, dict[str, Any]]:
    """Choose kind and trees on the last :data:`VALID_DAYS` training days, refit on all."""
    train_days = sorted(train_days)
    if len(train_days) < VALID_DAYS + 7:
        raise DemandDataError(
            f"the recent-demand model needs at least {VALID_DAYS + 7} training dates"
            f" (a validation week and a week before it), got {len(train_days)}"
        )
    valid = train_days[-VALID_DAYS:]
    inner = train_days[:-VALID_DAYS]
    inner_rates = stats_rates(md, inner, config.stats)
    scores: dict[str, Any] = {}
    best: tuple[float, str, int | None] | None = None
    inner_fits: dict[str, Fitted] = {}
    for kind in config.kinds:
        fitted, _ = fit(md, inner, config, kind)
        inner_fits[kind] = fitted
        if kind != "poisson":
            crate = cell_sum(md, inner_rates)
            vrows = make_rows(md, valid, config.slot_minutes, crate, exp_cum_of(md, crate))
            off = vrows.mu0 * offset_of(kind, vrows.x)
            devs = [
                poisson_deviance(vrows.y, off * np.maximum(p, C_FLOOR))
                for p in fitted.estimator.staged_predict(vrows.x)
            ]
            trees = int(np.argmin(devs)) + 1
            dev = float(devs[trees - 1])
            scores[kind] = {"valid_poisson_deviance": round(dev, 6), "trees": trees}
        else:
            res = evaluate_days(md, valid, inner_rates, config.slot_minutes, fitted.predict)
            dev = float(res["sources"]["model"]["poisson_deviance"])
            trees = None
            scores[kind] = {"valid_poisson_deviance": round(dev, 6)}
        if best is None or dev < best[0]:
            best = (dev, kind, trees)
    if best is None:
        raise DemandDataError("no model kind to train")
    _, kind, trees = best
    chosen = inner_fits[kind]
    if trees is not None:
        chosen.estimator = _truncate(chosen.estimator, trees)
    vres = evaluate_days(md, valid, inner_rates, config.slot_minutes, chosen.predict)
    # the recent-level baseline's window, chosen the same way (the stronger baseline)
    level_dev = vres["recent_level_poisson_deviance"]
    level_w = min(level_dev, key=lambda w: level_dev[w])
    off, stat = vres["sources"]["model_offline"], vres["sources"]["statistics"]
    offline = config.offline
    if offline == "auto":
        offline = (
            "model"
            if off["rmse"] <= stat["rmse"] and off["poisson_deviance"] <= stat["poisson_deviance"]
            else "statistics"
        )
    if offline not in ("model", "statistics"):
        raise DemandDataError(f"offline must be statistics, model or auto, not {offline!r}")
    final, _ = fit(md, train_days, config, kind, trees)
    final.offline = offline
    doc = {
        "offline": offline,
        "learnt_offline_valid_ratio_over_statistics": {
            k: round(off[k] / stat[k], 6) for k in ("rmse", "poisson_deviance")
        },
        "recent_level_window_min": level_w,
        "recent_level_valid_poisson_deviance": {str(k): v for k, v in level_dev.items()},
        "valid_days": [md.date_of(i).isoformat() for i in valid],
        "trained_for_validation_on": [md.date_of(i).isoformat() for i in inner],
        "candidates": scores,
        "chosen": kind,
        "trees": trees,
    }
    return final, doc


def _truncate(est: Any, trees: int) -> Any:
    """A fitted GradientBoostingRegressor cut to its first ``trees`` stages."""
    est.n_estimators = trees
    est.n_estimators_ = trees
    est.estimators_ = est.estimators_[:trees]
    est.train_score_ = est.train_score_[:trees]
    return est


def rolling_origin(
    md: MonthData, origins: list[dt.date], config: RecentConfig, report_all: bool = False
) -> list[dict[str, Any]]:
    """For each origin d: train on the dates before d, evaluate d .. d+6 (see module doc).

    ``report_all`` also fits the candidates the validation week did not choose on every
    training date and reports their held-out figures (``candidates_on_heldout``: for the
    record; the choice was made before and does not change).
    """
    out: list[dict[str, Any]] = []
    for d0 in origins:
        o = md.day_index(d0)
        if not 0 < o < md.n_days:
            raise DemandDataError(f"origin {d0} is not inside the trips' dates")
        train = list(range(0, o))
        evald = list(range(o, min(o + 7, md.n_days)))
        t0 = time.perf_counter()
        fitted, sel = select_and_fit(md, train, config)
        rates = stats_rates(md, train, config.stats)
        res = evaluate_days(
            md, evald, rates, config.slot_minutes, fitted.predict, sel["recent_level_window_min"]
        )
        others: dict[str, Any] = {}
        for kind in config.kinds if report_all else ():
            if kind == fitted.kind:
                continue
            trees = sel["candidates"][kind].get("trees")
            other, _ = fit(md, train, config, kind, trees)
            other.offline = fitted.offline
            r2 = evaluate_days(
                md, evald, rates, config.slot_minutes, other.predict, sel["recent_level_window_min"]
            )
            others[kind] = {
                "trees": trees,
                "model": r2["sources"]["model"],
                "ratio_model_over_statistics": ratios(r2, "model", "statistics"),
                "ratio_model_over_recent_baseline": ratios(r2, "model", "recent_baseline"),
            }
        if others:
            res["candidates_on_heldout"] = others
        learnt = replace(fitted, offline="model")
        res["sources"]["model_offline_learnt"] = evaluate_days(
            md, evald, rates, config.slot_minutes, learnt.predict, sel["recent_level_window_min"]
        )["sources"]["model_offline"]
        overlap = set(fitted.train_days) & set(evald)
        if overlap:  # cannot happen by construction; checked so a change cannot hide it
            raise DemandDataError(f"rolling origin trained on evaluated days {sorted(overlap)}")
        res.update(
            {
                "origin": d0.isoformat(),
                "train_days": [md.date_of(i).isoformat() for i in fitted.train_days],
                "statistics_days": [md.date_of(i).isoformat() for i in train],
                "selection": sel,
                "kind": fitted.kind,
                "trees": fitted.trees,
                "fit_s": round(fitted.fit_s, 1),
                "wall_s": round(time.perf_counter() - t0, 1),
                "ratio_model_over_statistics": ratios(res, "model", "statistics"),
                "ratio_model_over_recent_baseline": ratios(res, "model", "recent_baseline"),
                "ratio_recent_baseline_over_statistics": ratios(
                    res, "recent_baseline", "statistics"
                ),
                "ratio_offline_model_over_statistics": ratios(res, "model_offline", "statistics"),
                "ratio_learnt_offline_over_statistics": ratios(
                    res, "model_offline_learnt", "statistics"
                ),
            }
        )
        out.append(res)
    return out


# --- the shipped model: train on dates, export to ONNX --------------------------------------


def export_onnx(fitted: Fitted, x_check: F32) -> tuple[bytes, float]:
    """ONNX graph ``X`` (N, F) float32 -> ``correction`` (N, 1) float32 (floored), and the
    largest relative difference to sklearn on ``x_check``."""
    from onnx import helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        fitted.estimator,
        initial_types=[(INPUT_NAME, FloatTensorType([None, len(CELL_FEATURES)]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
        name="nagashi_recent_demand_correction",
    )
    graph = onx.graph
    raw = graph.output[0].name
    floored = OUTPUT_NAME if fitted.offline == "model" else "floored"
    level = fitted.kind == "gbr_level"
    graph.node.extend(
        [
            helper.make_node("Reshape", [raw, "col_shape"], ["raw_col"]),
            helper.make_node("Max", ["raw_col", "c_floor"], ["clamped" if level else floored]),
        ]
    )
    if level:
        graph.node.extend(
            [
                helper.make_node("Gather", [INPUT_NAME, "level_index"], ["log_level"], axis=1),
                helper.make_node("Exp", ["log_level"], ["level"]),
                helper.make_node("Mul", ["clamped", "level"], [floored]),
            ]
        )
        graph.initializer.extend([helper.make_tensor("level_index", 7, [1], [LEVEL_INDEX])])
    graph.initializer.extend(
        [
            helper.make_tensor("c_floor", 1, [1], [C_FLOOR]),
            helper.make_tensor("col_shape", 7, [2], [-1, 1]),
        ]
    )
    if fitted.offline == "statistics":
        # without recent inputs the factor is 1 (statistics): c + missing * (1 - c)
        graph.node.extend(
            [
                helper.make_node("Gather", [INPUT_NAME, "missing_index"], ["missing"], axis=1),
                helper.make_node("Sub", ["one", floored], ["to_one"]),
                helper.make_node("Mul", ["missing", "to_one"], ["shift"]),
                helper.make_node("Add", [floored, "shift"], [OUTPUT_NAME]),
            ]
        )
        graph.initializer.extend(
            [
                helper.make_tensor("missing_index", 7, [1], [MISSING_INDEX]),
                helper.make_tensor("one", 1, [1], [1.0]),
            ]
        )
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info(OUTPUT_NAME, 1, [None, 1])])
    blob = onx.SerializeToString()
    import onnxruntime as ort

    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    (got,) = sess.run([OUTPUT_NAME], {INPUT_NAME: x_check})
    want = fitted.predict(x_check)
    rel = np.abs(np.asarray(got, np.float64)[:, 0] - want) / np.maximum(want, 1e-6)
    return blob, float(rel.max()) if rel.size else 0.0


def train_recent_model(
    store: TileStore,
    pickup_files: list[str | os.PathLike[str]],
    value_files: list[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    train_days: frozenset[dt.date],
    config: RecentConfig = RecentConfig(),
    snap_config: SnapConfig = SnapConfig(),
    month: MonthData | None = None,
    trips: Trips | None = None,
) -> dict[str, Any]:
    """Train the recent-demand model on ``train_days`` of ``pickup_files`` into ``out``.

    The directory gets the statistical table of those days (rates from the pickups, fares,
    trip times and drop-offs from ``value_files``), ``model.onnx``, ``features.npz`` and
    ``model.json``. ``month``/``trips`` may pass the already-read data.
    """
    g = full_graph(store)
    grid = make_grid(g, config.stats.cell_m)
    bbox = network_bbox(grid)
    if trips is None:
        trips = read_trips(list(pickup_files), bbox)
    md = prepare_month(store, trips, snap_config) if month is None else month
    days = sorted(md.day_index(d) for d in train_days)
    if (
        not days
        or days[0] < 0
        or days[-1] >= md.n_days
        or days != list(range(days[0], days[-1] + 1))
    ):
        raise DemandDataError("training dates must be consecutive dates of the pickup files")
    value_trips = read_trips(list(value_files), bbox)
    if not any(FORMAT_RECORDS[f][1:] for f in value_trips.formats):
        raise DemandDataError(
            "the value files record no fares, trip times or drop-offs: give yellow-cab trips"
        )
    fitted, sel = select_and_fit(md, days, config)
    # the device's table: rates of the training dates (recent-source pickups scaled to hails)
    # (the month's four citywide gaps of 11-18 minutes count as covered: whole days)
    rate_trips = read_trips(list(pickup_files), bbox, days=frozenset(train_days))
    rate_trips = replace(
        rate_trips, covered_h=tuple(_covered(md, days) for _ in rate_trips.covered_h)
    )
    table, report = build_from_trips(
        store, g, rate_trips, config.stats, snap_config, value_trips=value_trips
    )
    inv_pi = float(report["inputs"][0]["real_trips_per_sample_trip"])
    pi = 1.0 / inv_pi
    # the model learnt against statistics of exactly these rates (in pickups)
    ha = stats_rates(md, days, config.stats)
    drift = float(np.max(np.abs(table.pickups_per_h.astype(np.float64) * pi - ha)))
    if not drift <= 1e-3 * max(float(ha.max()), 1.0):
        raise DemandDataError(f"the table's rates differ from the training statistics by {drift}")
    crate = cell_sum(md, ha)
    check = make_rows(md, days[-2:], config.slot_minutes, crate, exp_cum_of(md, crate))
    blob, parity = export_onnx(fitted, check.x)
    if not parity <= 1e-4:
        raise DemandDataError(f"the exported ONNX model differs from sklearn by {parity:.3g}")
    version = f"{fitted.kind}-" + hashlib.sha256(blob).hexdigest()[:12]
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    table.save(d)
    _atomic_write(d / MODEL_ONNX, lambda fh: fh.write(blob))
    _atomic_write(
        d / FEATURES_NPZ,
        lambda fh: np.savez(fh, static_cells=static_cells_of(md, crate), area_cells=md.area_cells),
    )
    doc: dict[str, Any] = {
        "schema_version": MODEL_SCHEMA_VERSION,
        "version": version,
        "kind": {
            "gbr": "sklearn.GradientBoostingRegressor",
            "gbr_level": "sklearn.GradientBoostingRegressor x the recent area level",
            "poisson": "sklearn.PoissonRegressor (standardised inputs)",
        }[fitted.kind]
        + " correction of statistical demand per 500 m cell and slot, with recent-demand inputs",
        "granularity": "cell",
        "slot_minutes": config.slot_minutes,
        "feature_spec_version": CELL_FEATURE_SPEC_VERSION,
        "features": list(CELL_FEATURES),
        "static_features": list(CELL_STATIC_FEATURES),
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [None, len(CELL_FEATURES)]},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [None, 1], "unit": "factor"},
        "output_is_log": False,
        "correction_floor": C_FLOOR,
        "max_rate_per_h": 20.0 * float(table.pickups_per_h.max()),
        "recent": {
            "pickups_per_hail": pi,
            "meaning": (
                "recent inputs count pickups of the source the model learnt from (app pickups);"
                " expected = table rate x pickups_per_hail x hours"
            ),
            "leads_min": list(config.leads_min),
            "dropout": config.dropout,
        },
        "statistics_version": table.version,
        "network_sha256": table.network_sha256,
        "n_edges": table.n_edges,
        "target": (
            "app pickups (the Uber April 2014 month) per 500 m cell and slot, as a factor on"
            " statistics scaled to the yellow-cab volume (docs/demand.md, Sources)"
        ),
        "training": {
            "tiles": str(store.path),
            "train_files": [
                {
                    "path": str(f),
                    "sha256": file_sha256(Path(f)),
                    "format": trips.formats[i],
                    "mode": "days",
                }
                for i, f in enumerate(pickup_files)
            ],
            "value_files": [{"path": str(f), "sha256": file_sha256(Path(f))} for f in value_files],
            "train_days": [md.date_of(i).isoformat() for i in days],
            "fitted_row_days": [md.date_of(i).isoformat() for i in fitted.train_days],
            "selection": sel,
            "n_estimators_selected": fitted.trees,
            "onnx_parity_max_rel_diff": parity,
            "config": json.loads(json.dumps(asdict(config))),
        },
        "shipped": True,
        "gate": None,
    }
    _atomic_write(d / MODEL_JSON, lambda fh: fh.write(json.dumps(doc, indent=2).encode()))
    return doc


def _covered(md: MonthData, days: list[int]) -> F64:
    """Hours of each (day type, slot) the dates cover (whole days)."""
    out = np.zeros((len(DAY_TYPES), SLOTS_PER_DAY))
    for t in range(len(DAY_TYPES)):
        out[t] = 0.5 * int(np.sum(md.day_type[np.asarray(days)] == t))
    return out


def cached_month(
    store: TileStore, files: list[str | os.PathLike[str]], trips: Trips | None = None
) -> MonthData:
    """:func:`prepare_month` of ``files``, cached in the temp dir by file and network hash."""
    key = hashlib.sha256(
        repr([file_sha256(Path(f)) for f in files]).encode()
        + store.meta.get("source_sha256", "").encode()
    ).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"nagashi-month-v2-{key}.npz"
    g = full_graph(store)
    grid = make_grid(g, HA_STATS.cell_m)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
            return MonthData(
                grid=grid,
                n_local=int(a["n_local"]),
                edge_cell=a["edge_cell"],
                allowed=a["allowed"],
                length_m=a["length_m"],
                area_cells=a["area_cells"],
                cell_xy=a["cell_xy"],
                first_date=dt.date.fromordinal(int(a["first_ord"])),
                day_type=a["day_type"],
                link_counts=a["link_counts"],
                obs_cum=a["obs_cum"],
                pk_day=a["pk_day"],
                pk_minute=a["pk_minute"],
                pk_edge=a["pk_edge"],
                pk_w=a["pk_w"],
            )
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)
    md = prepare_month(
        store, trips if trips is not None else read_trips(list(files), network_bbox(grid))
    )
    arrays = {
        "n_local": np.int64(md.n_local),
        "edge_cell": md.edge_cell,
        "allowed": md.allowed,
        "length_m": md.length_m,
        "area_cells": md.area_cells,
        "cell_xy": md.cell_xy,
        "first_ord": np.int64(md.first_date.toordinal()),
        "day_type": md.day_type,
        "link_counts": md.link_counts,
        "obs_cum": md.obs_cum,
        "pk_day": md.pk_day,
        "pk_minute": md.pk_minute,
        "pk_edge": md.pk_edge,
        "pk_w": md.pk_w,
    }
    _atomic_write(path, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]
    return md
