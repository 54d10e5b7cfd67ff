"""Demand steps: ``build_demand`` (statistical demand), ``train_model`` (ONNX predicted demand),
``evaluate_demand`` (held-out evaluation + the demand release gate) and ``transfer_demand``
(demand for an area without its own taxi data, by a documented transfer)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from tools.pipeline.step import OutputDecl, StepContext, StepKind, StepResult

log = logging.getLogger(__name__)


def _overrides(params: Any) -> dict[str, Any]:
    """The parameters set in the pipeline (None means: the package's documented default)."""
    return {
        f.name: getattr(params, f.name)
        for f in dataclasses.fields(params)
        if getattr(params, f.name) is not None
    }


@dataclass(frozen=True)
class BuildDemandParams:
    """Overrides of ``models.statistics.StatsConfig`` (None: the models/ default)."""

    trips_per_day_citywide: float | None = None
    cell_m: float | None = None
    k_cell: float | None = None
    k_link: float | None = None
    k_length: float | None = None


def run_build_demand(ctx: StepContext) -> StepResult:
    from models.statistics import StatsConfig, build_demand_table
    from tiles import TileStore

    config = dataclasses.replace(StatsConfig(), **_overrides(ctx.params))
    with TileStore(ctx.input("tiles")) as store:
        table, report = build_demand_table(store, list(ctx.input_list("trips")), config)
    table.save(ctx.output("demand"))
    metrics = {
        "version": table.version,
        "scale_factor": table.scale_factor,
        "pickups_snapped": report["pickups_snapped"],
        "network_area_pickups_per_day": report["network_area_pickups_per_day"],
        "max_link_pickups_per_h": report["max_link_pickups_per_h"],
        "inputs": [
            {k: f.get(k) for k in ("rows", "kept", "mode", "sha256")} for f in report["inputs"]
        ],
    }
    return StepResult(
        metrics=metrics,
        summary=f"{table.version}: {report['pickups_snapped']} pickups snapped, "
        f"{report['network_area_pickups_per_day']} hails/day in the area",
    )


KINDS: tuple[StepKind, ...] = (
    StepKind(
        name="build_demand",
        run=run_build_demand,
        params_type=BuildDemandParams,
        inputs=("tiles", "trips"),
        outputs=(OutputDecl("demand", "demand", is_dir=True),),
        sources=("tiles", "models", "tools.pipeline.steps_demand"),
        description="road tiles + trip files -> statistical demand (models.statistics)",
    ),
)
