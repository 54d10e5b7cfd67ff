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
  only what happened before the slot (W of 30, 60 or 120 minutes, chosen on the validation weeks);
* ``model``: the historical average times a learnt correction per (cell, slot) from
  :data:`models.features.CELL_FEATURES` (time, place, statistics, recent inputs of
  :mod:`models.recent`); for the kinds of :data:`LEVEL_KINDS` the correction is around the
  recent-level baseline (60-minute window) instead of the historical average, and
  ``gbr_recent`` sees the recent ratios only relative to that level; ``model_offline``: the
  same model without recent inputs.

Rolling origin: for an origin date ``d``, statistics and the model learn from the dates before
``d`` and are evaluated on ``d .. d+6``. The model's own choices (kind, number of trees) are made
by the same rule on validation weeks inside the training dates: fit on the dates before
``d - 7``, score ``d - 7 .. d - 1``, and the same a week earlier (``RecentConfig.valid_weeks``,
when a week of dates remains before it); the mean Poisson deviance decides. Training rows are
cross-fitted by date (the statistics a row sees come from the other training dates), and a
share of them (``dropout``) is shown without recent inputs, so that the model also serves a
cab offline.

Where each part lives: :mod:`~models.rolling.config`, :mod:`~models.rolling.month`,
:mod:`~models.rolling.rows`, :mod:`~models.rolling.fitting`, :mod:`~models.rolling.scoring`,
:mod:`~models.rolling.selection` and :mod:`~models.rolling.shipped`.
"""

from __future__ import annotations

from models.rolling.config import (
    HA_STATS,
    INPUT_NAME,
    LEVEL_INDEX,
    LEVEL_KINDS,
    LEVEL_WINDOWS_MIN,
    MISSING_INDEX,
    OUTPUT_NAME,
    VALID_DAYS,
    RecentConfig,
)
from models.rolling.fitting import (
    Fitted,
    Predictor,
    fit,
    inputs_of,
    offset_of,
    relative_matrix,
)
from models.rolling.month import (
    MonthData,
    cached_month,
    cell_sum,
    exp_cum_of,
    prepare_month,
    static_cells_of,
    stats_rates,
)
from models.rolling.rows import Rows, make_rows, training_rows
from models.rolling.scoring import beats, evaluate_days, ratios
from models.rolling.selection import rolling_origin, select_and_fit, validation_weeks
from models.rolling.shipped import export_onnx, train_recent_model

__all__ = [
    "HA_STATS",
    "INPUT_NAME",
    "LEVEL_INDEX",
    "LEVEL_KINDS",
    "LEVEL_WINDOWS_MIN",
    "MISSING_INDEX",
    "OUTPUT_NAME",
    "VALID_DAYS",
    "Fitted",
    "MonthData",
    "Predictor",
    "RecentConfig",
    "Rows",
    "beats",
    "cached_month",
    "cell_sum",
    "evaluate_days",
    "exp_cum_of",
    "export_onnx",
    "fit",
    "inputs_of",
    "make_rows",
    "offset_of",
    "prepare_month",
    "ratios",
    "relative_matrix",
    "rolling_origin",
    "select_and_fit",
    "static_cells_of",
    "stats_rates",
    "train_recent_model",
    "training_rows",
    "validation_weeks",
]
