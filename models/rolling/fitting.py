"""Fitting the correction: the estimators (GBR, GBR x the recent level, GBR around the recent-level
baseline on inputs relative to it, Poisson GLM), :func:`fit` on training rows, and the fitted
model as a predictor (:class:`Fitted`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.errors import DemandDataError
from models.features import CELL_FEATURES
from models.rolling.config import (
    F32,
    F64,
    HIDDEN_INDICES,
    LEVEL_INDEX,
    LEVEL_KINDS,
    MISSING_INDEX,
    RELATIVE_INDICES,
    RecentConfig,
)
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
        raw = self.estimator.predict(inputs_of(self.kind, x))
        c = np.maximum(np.asarray(raw, dtype=np.float64), C_FLOOR)
        c = c * offset_of(self.kind, x)
        if self.offline == "statistics":
            c = np.where(x[:, MISSING_INDEX] >= 0.5, 1.0, c)
        return c


def offset_of(kind: str, x: F32) -> F64:
    """The fixed factor a kind multiplies its learnt correction by (1, or the recent level).

    For :data:`LEVEL_KINDS` the base ``mu0 * offset`` is the recent-level baseline itself
    (``recent_area_60m`` is ``log((area's last 60 min + 10) / (expected + 10))``, the baseline's
    factor at its 60-minute window); without recent inputs the feature is 0 and the factor 1.
    """
    if kind in LEVEL_KINDS:
        return np.exp(x[:, LEVEL_INDEX].astype(np.float64))
    return np.ones(x.shape[0])


def relative_matrix() -> F32:
    """``A`` (F, F) with ``x @ A`` the inputs ``gbr_recent`` shows its trees: every feature as
    is, except the cell's and the neighbourhood's recent ratios minus the area's level, and
    the level and the day so far set to 0 (exact in float32: one term and a subtraction)."""
    n = len(CELL_FEATURES)
    a = np.eye(n, dtype=np.float32)
    for j in RELATIVE_INDICES:
        a[LEVEL_INDEX, j] = -1.0
    for j in HIDDEN_INDICES:
        a[:, j] = 0.0
    return a


def inputs_of(kind: str, x: F32) -> F32:
    """What a kind's estimator reads: ``x`` itself, or for ``gbr_recent`` ``x @``
    :func:`relative_matrix` (the ONNX graph does the same MatMul before the trees)."""
    if kind == "gbr_recent":
        return np.asarray(np.asarray(x, dtype=np.float32) @ relative_matrix(), dtype=np.float32)
    return x


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
    if kind in ("gbr", "gbr_level", "gbr_recent"):
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
    raise DemandDataError(f"unknown model kind {kind!r} (gbr, gbr_level, gbr_recent, poisson)")


def fit(
    md: MonthData, days: npt.ArrayLike, config: RecentConfig, kind: str, trees: int | None = None
) -> tuple[Fitted, Rows]:
    """Fit one candidate on the cross-fitted rows of ``days``.

    Every kind minimises a Poisson-type loss of ``y`` around ``base * c(x)``: the trees by
    weighted least squares on ``y / base`` with weights ``base`` (Pearson chi-square), the GLM
    by the Poisson deviance itself (same weights: an offset ``log base``); ``base`` is ``mu0``
    or, for :data:`LEVEL_KINDS`, the recent-level baseline ``mu0 * offset_of(kind, x)``.
    """
    rows = training_rows(md, days, config)
    ok = rows.mu0 > 0
    est = _estimator(kind, config, trees)
    t0 = time.perf_counter()
    base = rows.mu0[ok] * offset_of(kind, rows.x[ok])
    x = inputs_of(kind, rows.x[ok])
    if kind == "poisson":
        est.fit(x, rows.y[ok] / base, poissonregressor__sample_weight=base)
    else:
        est.fit(x, rows.y[ok] / base, sample_weight=base)
    used = sorted({int(v) for v in rows.day[ok]})
    n_trees = int(est.n_estimators_) if kind != "poisson" else None
    return Fitted(kind, est, n_trees, used, time.perf_counter() - t0), rows
