"""The recent-demand model's settings (:class:`RecentConfig`) and constants: the ONNX names, the
feature indices the graph reads, the validation weeks, the historical average's statistics."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from models.features import CELL_FEATURES
from models.statistics import StatsConfig

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

INPUT_NAME = "X"
OUTPUT_NAME = "correction"
VALID_DAYS = 7
MIN_INNER_DAYS = 7  # statistics need every day type: a week of dates before a validation week
MISSING_INDEX = CELL_FEATURES.index("recent_missing")
#: ``gbr_level`` multiplies its trees by the area's recent level (this feature, exponentiated):
#: trees cannot extrapolate a level above the training range, a factor can
LEVEL_INDEX = CELL_FEATURES.index("recent_area_60m")
#: the kinds whose base is the recent-level baseline (statistics x the area's level over the
#: last 60 minutes, :data:`LEVEL_INDEX`): their learnt correction is around it, not around mu0
LEVEL_KINDS: tuple[str, ...] = ("gbr_level", "gbr_recent")
#: ``gbr_recent`` shows its trees the recent ratios of the cell and its neighbourhood relative
#: to the area's level (minus :data:`LEVEL_INDEX`), and neither the level nor the day so far:
#: the trees learn where the area's level is wrong, never the level itself (which they cannot
#: extrapolate, and which they learnt to revert toward the training dates' mean)
RELATIVE_INDICES: tuple[int, ...] = tuple(
    CELL_FEATURES.index(n)
    for n in (
        "recent_nb_15m",
        "recent_nb_30m",
        "recent_nb_60m",
        "recent_nb_120m",
        "recent_cell_60m",
    )
)
HIDDEN_INDICES: tuple[int, ...] = (LEVEL_INDEX, CELL_FEATURES.index("recent_area_day"))
LEVEL_WINDOWS_MIN = (30, 60, 120)  # candidate windows of the recent-level baseline
#: the historical average of a census: no smoothing of the area total or shares across slots
HA_STATS = StatsConfig(area_halfwidth_slots=0, share_halfwidth_slots=0)


@dataclass(frozen=True)
class RecentConfig:
    """The recent-demand model's training parameters."""

    slot_minutes: int = 15
    #: candidates, chosen on the validation weeks
    kinds: tuple[str, ...] = ("gbr", "gbr_level", "gbr_recent", "poisson")
    #: validation weeks (rolling origins inside the training dates, the last ones first): the
    #: kind, trees and the baseline's window minimise the mean Poisson deviance over them; a
    #: week is used only if at least :data:`MIN_INNER_DAYS` training dates come before it
    valid_weeks: int = 2
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
