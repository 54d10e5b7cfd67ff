"""Demand: statistics from real taxi trips, an ONNX-predicted demand model, device inference.

May import :mod:`tiles`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
from tiles._lazy import lazy_attribute

if TYPE_CHECKING:  # the types, for mypy and editors; at run time see __getattr__
    from models.peopleflow import PeopleFlow, ShapeConfig, read_people_flow, shape_by_people_flow
    from models.predict import DemandModel, InferenceConfig, open_demand, statistical_tick
    from models.recent import SNAPSHOT_WINDOWS_MIN, RecentCounts, RecentPickups
    from models.statistics import StatsConfig, build_demand_table
    from models.supply import SupplyTable

_LAZY: dict[str, str] = {
    "DemandModel": "models.predict",
    "InferenceConfig": "models.predict",
    "PeopleFlow": "models.peopleflow",
    "ShapeConfig": "models.peopleflow",
    "read_people_flow": "models.peopleflow",
    "shape_by_people_flow": "models.peopleflow",
    "StatsConfig": "models.statistics",
    "build_demand_table": "models.statistics",
    "RecentCounts": "models.recent",
    "RecentPickups": "models.recent",
    "SNAPSHOT_WINDOWS_MIN": "models.recent",
    "open_demand": "models.predict",
    "statistical_tick": "models.predict",
    "SupplyTable": "models.supply",
}

__all__ = [
    "DAY_TYPES",
    "SLOTS_PER_DAY",
    "SLOT_MINUTES",
    "SNAPSHOT_WINDOWS_MIN",
    "CellGrid",
    "DemandDataError",
    "DemandModel",
    "DemandTable",
    "InferenceConfig",
    "ModelOutputError",
    "ModelsError",
    "PeopleFlow",
    "RecentCounts",
    "RecentPickups",
    "ShapeConfig",
    "StatsConfig",
    "SupplyTable",
    "TickDemand",
    "build_demand_table",
    "day_type_of_weekday",
    "open_demand",
    "read_people_flow",
    "shape_by_people_flow",
    "slot_of_minute_of_week",
    "statistical_tick",
    "tick_demand_from_table",
]


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, globals(), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
