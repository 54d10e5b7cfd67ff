"""Demand: statistics from real taxi trips, an ONNX-predicted demand model, device inference.

May import :mod:`tiles`.
"""

from models.demand import (
    DAY_TYPES,
    SLOT_MINUTES,
    SLOTS_PER_DAY,
    CellGrid,
    DemandTable,
    TickDemand,
    day_type_of_weekday,
    slot_of_minute_of_week,
    tick_demand_from_table,
)
from models.errors import DemandDataError, ModelOutputError, ModelsError
from models.predict import DemandModel, InferenceConfig, open_demand, statistical_tick
from models.recent import RecentPickups
from models.statistics import StatsConfig, build_demand_table

__all__ = [
    "DAY_TYPES",
    "SLOTS_PER_DAY",
    "SLOT_MINUTES",
    "CellGrid",
    "DemandDataError",
    "DemandModel",
    "DemandTable",
    "InferenceConfig",
    "ModelOutputError",
    "ModelsError",
    "RecentPickups",
    "StatsConfig",
    "TickDemand",
    "build_demand_table",
    "day_type_of_weekday",
    "open_demand",
    "slot_of_minute_of_week",
    "statistical_tick",
    "tick_demand_from_table",
]
