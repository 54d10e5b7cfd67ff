"""Data steps: ``import_tiles`` (OSM extract -> road tiles) and ``ingest_trips`` (trip files ->
deduplicated trips database, plus one CSV per data set for the demand builder)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from tools.pipeline.step import OutputDecl, StepContext, StepKind, StepResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportTilesParams:
    tile_deg: float = 0.01  # tile edge in degrees (tiles.build_tiles' default)

    def __post_init__(self) -> None:
        if not 0.001 <= self.tile_deg <= 1.0:
            raise ValueError(f"tile_deg must be within [0.001, 1], got {self.tile_deg}")


def run_import_tiles(ctx: StepContext) -> StepResult:
    from tiles import build_tiles

    p: ImportTilesParams = ctx.params
    path, summary = build_tiles(ctx.input("osm"), ctx.output("tiles"), p.tile_deg)
    if path != ctx.output("tiles"):
        raise RuntimeError(f"build_tiles wrote {path}, not {ctx.output('tiles')}")
    metrics: dict[str, Any] = {
        k: summary[k] for k in ("nodes", "directed_edges", "tiles", "drivable_ways") if k in summary
    }
    return StepResult(
        metrics=metrics,
        summary=f"{summary.get('directed_edges')} directed edges in {summary.get('tiles')} tiles",
    )


@dataclass(frozen=True)
class IngestTripsParams:
    """No tunables: the identity and merge rule are fixed (see tools.pipeline.ingest)."""


#: data sets, in ingest order: a trip present in two files keeps the first one's label
LABELS = ("train", "valid", "eval")


def run_ingest_trips(ctx: StepContext) -> StepResult:
    from tools.pipeline.ingest import TripStore, export_trips_csv

    now = dt.datetime.now(dt.UTC)  # recorded in the ingests table only
    reports = []
    with TripStore(ctx.output("db")) as store:
        for label in LABELS:
            for path in ctx.input_list(label):
                reports.append(store.ingest(path, label, now=now).to_json())
        counts = {label: store.count(label) for label in LABELS}
        for label in LABELS:
            export_trips_csv(store, [label], ctx.output(label))
    merged = sum(int(r["merged_trips"]) for r in reports)
    return StepResult(
        metrics={"trips_by_label": counts, "files": reports, "merged_trips": merged},
        summary=", ".join(f"{k} {v}" for k, v in counts.items()) + f" trips ({merged} merged)",
    )


KINDS = (
    StepKind(
        name="import_tiles",
        run=run_import_tiles,
        params_type=ImportTilesParams,
        inputs=("osm",),
        outputs=(OutputDecl("tiles", "tiles.sqlite"),),
        sources=("tiles", "tools.pipeline.steps_data"),
        description="OSM extract -> road tiles (tiles.build_tiles)",
    ),
    StepKind(
        name="ingest_trips",
        run=run_ingest_trips,
        params_type=IngestTripsParams,
        inputs=("train",),
        optional_inputs=("valid", "eval"),
        outputs=(
            OutputDecl("db", "trips.sqlite"),
            OutputDecl("train", "train.csv"),
            OutputDecl("valid", "valid.csv"),
            OutputDecl("eval", "eval.csv"),
        ),
        sources=("models.trips", "tools.pipeline.ingest", "tools.pipeline.steps_data"),
        description="trip files -> deduplicated trips DB (keyed upsert) + one CSV per data set",
    ),
)
