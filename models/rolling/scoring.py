"""Scoring held-out dates: the model, statistics, the recent-level baseline and the offline model
per (cell, slot) (:func:`evaluate_days`), and their ratios."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from models.features import CELL_RECENT_START
from models.recent import K_AREA, missing_features
from models.rolling.config import F64, LEVEL_WINDOWS_MIN
from models.rolling.fitting import Predictor
from models.rolling.month import MonthData, cell_sum, exp_cum_of
from models.rolling.rows import make_rows
from models.train import poisson_deviance

log = logging.getLogger("models.rolling")


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
