"""Fitting the correction: the estimators (GBR, GBR x the recent level, Poisson GLM), :func:`fit`
on training rows, and the fitted model as a predictor (:class:`Fitted`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.errors import DemandDataError
from models.rolling.config import F32, F64, LEVEL_INDEX, MISSING_INDEX, RecentConfig
from models.rolling.month import MonthData
from models.rolling.rows import Rows, training_rows
from models.train import C_FLOOR

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
