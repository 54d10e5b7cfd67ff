"""The model's own choices by the rolling-origin rule: kind and number of trees chosen on the
weeks before the origin (:func:`select_and_fit`, :func:`validation_weeks`), and the
rolling-origin evaluation over several origins (:func:`rolling_origin`)."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import replace
from typing import Any

import numpy as np

from models.errors import DemandDataError
from models.rolling.config import F64, MIN_INNER_DAYS, VALID_DAYS, RecentConfig
from models.rolling.fitting import Fitted, fit, inputs_of, offset_of
from models.rolling.month import MonthData, cell_sum, exp_cum_of, stats_rates
from models.rolling.rows import make_rows
from models.rolling.scoring import evaluate_days, ratios
from models.train import C_FLOOR, poisson_deviance


def validation_weeks(
    train_days: list[int], config: RecentConfig
) -> list[tuple[list[int], list[int]]]:
    """``(inner, valid)`` of each validation week, the last week first: ``valid`` is a week of
    the training dates, ``inner`` every training date before it (at least
    :data:`MIN_INNER_DAYS`); up to ``config.valid_weeks`` of them."""
    train_days = sorted(train_days)
    if len(train_days) < VALID_DAYS + MIN_INNER_DAYS:
        raise DemandDataError(
            f"the recent-demand model needs at least {VALID_DAYS + MIN_INNER_DAYS} training dates"
            f" (a validation week and a week before it), got {len(train_days)}"
        )
    out: list[tuple[list[int], list[int]]] = []
    for k in range(max(config.valid_weeks, 1)):
        cut = len(train_days) - VALID_DAYS * (k + 1)
        if cut < MIN_INNER_DAYS:
            break
        out.append((train_days[:cut], train_days[cut : cut + VALID_DAYS]))
    return out


def _week_scores(
    md: MonthData, inner: list[int], valid: list[int], config: RecentConfig
) -> tuple[dict[str, F64], dict[str, Fitted]]:
    """Per kind, its validation Poisson deviance after each tree (trees) or once (GLM)."""
    inner_rates = stats_rates(md, inner, config.stats)
    crate = cell_sum(md, inner_rates)
    vrows = make_rows(md, valid, config.slot_minutes, crate, exp_cum_of(md, crate))
    curves: dict[str, F64] = {}
    fits: dict[str, Fitted] = {}
    for kind in config.kinds:
        fitted, _ = fit(md, inner, config, kind)
        fits[kind] = fitted
        if kind != "poisson":
            off = vrows.mu0 * offset_of(kind, vrows.x)
            xin = inputs_of(kind, vrows.x)
            curves[kind] = np.array(
                [
                    poisson_deviance(vrows.y, off * np.maximum(p, C_FLOOR))
                    for p in fitted.estimator.staged_predict(xin)
                ]
            )
        else:
            res = evaluate_days(md, valid, inner_rates, config.slot_minutes, fitted.predict)
            curves[kind] = np.array([float(res["sources"]["model"]["poisson_deviance"])])
    return curves, fits


def select_and_fit(
    md: MonthData, train_days: list[int], config: RecentConfig
) -> tuple[Fitted, dict[str, Any]]:
    """Choose kind and trees on the validation weeks (:func:`validation_weeks`: the mean of
    their Poisson deviances), then refit the chosen kind on every training date."""
    train_days = sorted(train_days)
    weeks = validation_weeks(train_days, config)
    if not config.kinds:
        raise DemandDataError("no model kind to train")
    per_week = [_week_scores(md, inner, valid, config) for inner, valid in weeks]
    scores: dict[str, Any] = {}
    best: tuple[float, str, int | None] | None = None
    for kind in config.kinds:
        curve = np.mean([c[kind] for c, _ in per_week], axis=0)
        trees = int(np.argmin(curve)) + 1 if kind != "poisson" else None
        dev = float(curve[(trees or 1) - 1])
        scores[kind] = {
            "valid_poisson_deviance": round(dev, 6),
            "per_week": [round(float(c[kind][(trees or 1) - 1]), 6) for c, _ in per_week],
        }
        if trees is not None:
            scores[kind]["trees"] = trees
        if best is None or dev < best[0]:
            best = (dev, kind, trees)
    assert best is not None  # config.kinds is not empty (checked above)
    _, kind, trees = best
    # the recent-level baseline's window and the offline answer, on the same weeks
    level: dict[int, list[float]] = {}
    off_ratio: dict[str, list[float]] = {"rmse": [], "poisson_deviance": []}
    for (inner, valid), (_, fits) in zip(weeks, per_week, strict=True):
        chosen = fits[kind]
        if trees is not None:
            chosen.estimator = _truncate(chosen.estimator, trees)
        rates = stats_rates(md, inner, config.stats)
        vres = evaluate_days(md, valid, rates, config.slot_minutes, chosen.predict)
        for w_, v in vres["recent_level_poisson_deviance"].items():
            level.setdefault(int(w_), []).append(float(v))
        off, stat = vres["sources"]["model_offline"], vres["sources"]["statistics"]
        for k in off_ratio:
            off_ratio[k].append(off[k] / stat[k])
    level_dev = {w_: round(float(np.mean(v)), 6) for w_, v in level.items()}
    level_w = min(level_dev, key=lambda w_: level_dev[w_])
    learnt_off = {k: round(float(np.mean(v)), 6) for k, v in off_ratio.items()}
    offline = config.offline
    if offline == "auto":
        offline = "model" if max(learnt_off.values()) <= 1.0 else "statistics"
    if offline not in ("model", "statistics"):
        raise DemandDataError(f"offline must be statistics, model or auto, not {offline!r}")
    final, _ = fit(md, train_days, config, kind, trees)
    final.offline = offline
    doc = {
        "offline": offline,
        "learnt_offline_valid_ratio_over_statistics": learnt_off,
        "recent_level_window_min": level_w,
        "recent_level_valid_poisson_deviance": {str(k): v for k, v in level_dev.items()},
        "valid_days": sorted(md.date_of(i).isoformat() for _, v in weeks for i in v),
        "trained_for_validation_on": [md.date_of(i).isoformat() for i in weeks[-1][0]],
        "validation_weeks": [
            {
                "valid_days": [md.date_of(valid[0]).isoformat(), md.date_of(valid[-1]).isoformat()],
                "trained_on": [md.date_of(inner[0]).isoformat(), md.date_of(inner[-1]).isoformat()],
            }
            for inner, valid in weeks
        ],
        "rule": "the least mean Poisson deviance over the validation weeks",
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
