"""The recent-demand model's settings (:class:`RecentConfig`) and constants: the ONNX names, the
feature indices the graph reads, the validation week, the historical average's statistics."""

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
