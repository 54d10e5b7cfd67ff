"""The model's own choices by the rolling-origin rule: kind and number of trees chosen on the week
before the origin (:func:`select_and_fit`), and the rolling-origin evaluation over several
origins (:func:`rolling_origin`)."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import replace
from typing import Any

import numpy as np

from models.errors import DemandDataError
from models.rolling.config import VALID_DAYS, RecentConfig
from models.rolling.fitting import Fitted, fit, offset_of
from models.rolling.month import MonthData, cell_sum, exp_cum_of, stats_rates
from models.rolling.rows import make_rows
from models.rolling.scoring import evaluate_days, ratios
from models.train import C_FLOOR, poisson_deviance


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
