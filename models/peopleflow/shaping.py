"""The spatial shaping of transferred demand by the people present in each link's 1 km mesh
(the choice is described in the :mod:`models.peopleflow` docstring), and its report."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.demand import DAY_TYPES, SLOT_MINUTES, SLOTS_PER_DAY, DemandTable
from models.errors import DemandDataError
from models.peopleflow.mesh import mesh1km_of
from models.peopleflow.reader import (
    ATTRIBUTION,
    BAND_ALL_DAY,
    BAND_MIDDAY,
    BAND_NAMES,
    BAND_NIGHT,
    DAYFLAG_HOLIDAY,
    DAYFLAG_WEEKDAY,
    FORMAT_KIND,
    LICENCE,
    MIDDAY_HOURS,
    NIGHT_HOURS,
    PeopleFlow,
)
from tiles import Graph

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: the MLIT ``dayflag`` whose figure each demand day type uses (models.demand.DAY_TYPES)
DAYFLAG_OF_DAY_TYPE = (DAYFLAG_WEEKDAY, DAYFLAG_HOLIDAY, DAYFLAG_HOLIDAY)


def band_of_slot(slot: int) -> int:
    """The MLIT time band whose figure a 30-minute slot of the day uses (see
    :mod:`models.peopleflow`)."""
    hour = slot * SLOT_MINUTES / 60.0
    if MIDDAY_HOURS[0] <= hour < MIDDAY_HOURS[1]:
        return BAND_MIDDAY
    if NIGHT_HOURS[0] <= hour < NIGHT_HOURS[1]:
        return BAND_NIGHT
    return BAND_ALL_DAY


SLOT_BAND: tuple[int, ...] = tuple(band_of_slot(s) for s in range(SLOTS_PER_DAY))


@dataclass(frozen=True)
class ShapeConfig:
    months: tuple[int, ...] = ()  # months of the people-flow files to average (empty: all)
    exponent: float = 1.0  # rate proportional to people present ** exponent (0: no shaping)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.exponent) and 0.0 <= self.exponent <= 3.0):
            raise ValueError(f"exponent must be in [0, 3], got {self.exponent}")
        bad = [m for m in self.months if not 1 <= m <= 12]
        if bad:
            raise ValueError(f"months run 1-12, got {bad[0]}")


def link_people(graph: Graph, flow: PeopleFlow, n_edges: int) -> tuple[I64, F64]:
    """Each global edge's mesh code (0 for an edge not in ``graph``) and the people present
    there, shape (3 day types, 48 slots, n_edges) (NaN without a figure)."""
    ids = graph.edge_id.astype(np.int64)
    lon = 0.5 * (graph.u_lon.astype(np.float64) + graph.v_lon.astype(np.float64))
    lat = 0.5 * (graph.u_lat.astype(np.float64) + graph.v_lat.astype(np.float64))
    mesh = np.zeros(n_edges, dtype=np.int64)
    mesh[ids] = mesh1km_of(lon, lat)
    people = np.full((len(DAY_TYPES), SLOTS_PER_DAY, n_edges), np.nan)
    for d, dayflag in enumerate(DAYFLAG_OF_DAY_TYPE):
        for band in range(3):
            slots = [s for s in range(SLOTS_PER_DAY) if SLOT_BAND[s] == band]
            per_edge = np.full(n_edges, np.nan)
            per_edge[ids] = flow.people(mesh[ids], dayflag, band)
            people[d, slots, :] = per_edge[None, :]
    return mesh, people


def shape_weights(rates: F64, people: F64, exponent: float) -> tuple[F64, npt.NDArray[np.bool_]]:
    """The weights ``P ** exponent`` per (day type, slot, link), the neutral weight (the
    rate-weighted mean of the known ones in that slot) where ``people`` is NaN; and the mask of
    links that got it."""
    unknown = ~np.isfinite(people)
    with np.errstate(invalid="ignore"):
        w = np.where(unknown, 0.0, np.power(np.where(unknown, 0.0, people), exponent))
    known_mass = np.where(unknown, 0.0, rates).sum(axis=2, keepdims=True)
    mean_w = np.where(
        known_mass > 0, (rates * w).sum(axis=2, keepdims=True) / np.maximum(known_mass, 1e-300), 1.0
    )
    return np.where(unknown, mean_w, w), unknown


def shape_rates(rates: F64, weights: F64) -> F64:
    """``rates * weights``, rescaled so every (day type, slot) keeps its total over the links.

    A slot whose weighted total is zero (no demand, or demand only where the weight is zero)
    keeps its rates unchanged."""
    total = rates.sum(axis=2, keepdims=True)
    weighted = rates * weights
    wsum = weighted.sum(axis=2, keepdims=True)
    ok = wsum > 0
    safe_wsum = np.where(ok, wsum, 1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = weighted * (total / safe_wsum)
    # a weighted total so small that total / wsum overflows (subnormal rates): the shares
    # first, which never overflow; every other slot keeps the product above, bit for bit
    scaled = np.where(np.isfinite(scaled), scaled, weighted / safe_wsum * total)
    return np.where(ok, scaled, rates)


def _mesh_shares(rates: F64, mesh: I64, codes: I64) -> F64:
    """Share of each mesh of ``codes`` in the area's rate, per (day type, slot)."""
    idx = np.searchsorted(codes, mesh)
    idx = np.clip(idx, 0, len(codes) - 1)
    total = rates.sum(axis=2)
    out = np.zeros((*rates.shape[:2], len(codes)))
    for j in range(len(codes)):
        out[:, :, j] = rates[:, :, (idx == j) & (mesh == codes[j])].sum(axis=2)
    return out / np.where(total > 0, total, 1.0)[:, :, None]


def _corr(a: F64, b: F64) -> float:
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
        return 1.0
    return float(np.corrcoef(a, b)[0, 1])


def shape_by_people_flow(
    table: DemandTable,
    graph: Graph,
    flow: PeopleFlow,
    config: ShapeConfig = ShapeConfig(),
) -> tuple[DemandTable, dict[str, Any]]:
    """``table`` (transferred demand on ``graph``'s network) with each slot's link rates
    reshaped by the people present in the links' meshes (see module doc), and a report.

    Fares, trip times, distances and drop-offs are the input's, unchanged."""
    if graph.n_edges_total != table.n_edges:
        raise DemandDataError(
            f"the demand table has {table.n_edges} links, the road network {graph.n_edges_total}"
        )
    rates = table.pickups_per_h.astype(np.float64)
    mesh, people = link_people(graph, flow, table.n_edges)
    weights, unknown = shape_weights(rates, people, config.exponent)
    shaped = shape_rates(rates, weights)
    demand_links = rates.sum(axis=(0, 1)) > 0
    if not np.any(demand_links & ~unknown.all(axis=(0, 1))):
        raise DemandDataError(
            "the people-flow files have no figure for any mesh of the road network "
            f"(meshes of its links: {', '.join(str(c) for c in sorted(set(mesh[demand_links])))})"
        )
    sources_files = [
        {**f, "kind": FORMAT_KIND, "licence": LICENCE, "attribution": ATTRIBUTION}
        for f in flow.files
    ]
    report = _shaping_report(table, graph, flow, config, rates, shaped, mesh, unknown)
    report["files"] = sources_files
    params = asdict(config)
    version_src = json.dumps(
        [table.version, [f["sha256"] for f in flow.files], params], sort_keys=True
    )
    version = "transfer-peopleflow-" + hashlib.sha256(version_src.encode()).hexdigest()[:12]
    out = DemandTable(
        network_sha256=table.network_sha256,
        n_edges=table.n_edges,
        pickups_per_h=shaped.astype(np.float32),
        fare_mean=table.fare_mean,
        fare_quantiles=table.fare_quantiles,
        trip_duration_s=table.trip_duration_s,
        trip_distance_m=table.trip_distance_m,
        grid=table.grid,
        edge_cell=table.edge_cell,
        dropoff=table.dropoff,
        scale_factor=table.scale_factor,
        version=version,
        meta=_shaped_meta(table, report, sources_files),
    )
    out.validate()
    return out, report


def _shaping_report(
    table: DemandTable,
    graph: Graph,
    flow: PeopleFlow,
    config: ShapeConfig,
    rates: F64,
    shaped: F64,
    mesh: I64,
    unknown: npt.NDArray[np.bool_],
) -> dict[str, Any]:
    """What the shaping did (the table's ``meta.people_flow``, without its ``files``): the
    share of demand that changed mesh, the correlation of old and new link rates, per mesh."""
    demand_links = rates.sum(axis=(0, 1)) > 0
    area_codes = np.array(sorted({int(c) for c in mesh[demand_links]}), dtype=np.int64)
    before = _mesh_shares(rates, mesh, area_codes)
    after = _mesh_shares(shaped, mesh, area_codes)
    slot_total = rates.sum(axis=2)  # (3, 48)
    moved = 0.5 * np.abs(after - before).sum(axis=2)  # (3, 48): share of demand changing mesh
    days = np.array([5.0, 1.0, 1.0])
    week_w = slot_total * days[:, None]
    moved_week = float((moved * week_w).sum() / max(week_w.sum(), 1e-300))
    correlation = {
        name: round(
            _corr(rates[d].sum(axis=0)[demand_links], shaped[d].sum(axis=0)[demand_links]), 4
        )
        for d, name in enumerate(DAY_TYPES)
    }
    midday = SLOT_BAND.index(BAND_MIDDAY)
    night = SLOT_BAND.index(BAND_NIGHT)
    return {
        "method": "transferred link rates x people present in the link's 1 km mesh "
        "(models.peopleflow), each slot's area total kept",
        "input_version": table.version,
        "config": {"months": list(config.months), "exponent": config.exponent},
        "months_read": [f"{y}-{m:02d}" for y, m in flow.months],
        "day_type_dayflag": {n: DAYFLAG_OF_DAY_TYPE[d] for d, n in enumerate(DAY_TYPES)},
        "bands": {
            "midday": f"{MIDDAY_HOURS[0]:02d}:00-{MIDDAY_HOURS[1]:02d}:00",
            "night": f"{NIGHT_HOURS[0]:02d}:00-{NIGHT_HOURS[1]:02d}:00",
            "all_day": "every other slot",
        },
        "links_with_demand": int(demand_links.sum()),
        "links_without_people_figure": int((demand_links & unknown.any(axis=(0, 1))).sum()),
        "share_moved_between_meshes_week": round(moved_week, 4),
        "share_moved_weekday_midday": round(float(moved[0, midday]), 4),
        "share_moved_weekday_night": round(float(moved[0, night]), 4),
        "correlation_old_new_link_rates": correlation,
        "meshes": _mesh_rows(table, graph, flow, mesh, demand_links, area_codes, before, after),
    }


def _mesh_rows(
    table: DemandTable,
    graph: Graph,
    flow: PeopleFlow,
    mesh: I64,
    demand_links: npt.NDArray[np.bool_],
    area_codes: I64,
    before: F64,
    after: F64,
) -> list[dict[str, Any]]:
    """One report row per mesh of the area: its links and road, its people-flow figures and
    its share of weekday midday and night demand before and after the shaping."""
    length_km = np.zeros(table.n_edges)
    length_km[graph.edge_id.astype(np.int64)] = graph.length_m.astype(np.float64) / 1000.0
    midday = SLOT_BAND.index(BAND_MIDDAY)
    night = SLOT_BAND.index(BAND_NIGHT)
    per_mesh: list[dict[str, Any]] = []
    for j, code in enumerate(area_codes):
        on = demand_links & (mesh == code)
        row: dict[str, Any] = {
            "mesh1kmid": int(code),
            "links": int(on.sum()),
            "road_km": round(float(length_km[on].sum()), 3),
        }
        for dflag, dname in ((DAYFLAG_WEEKDAY, "weekday"), (DAYFLAG_HOLIDAY, "holiday")):
            for band in range(3):
                v = flow.people([int(code)], dflag, band)[0]
                row[f"people_{dname}_{BAND_NAMES[band]}"] = None if np.isnan(v) else round(v, 1)
        for d, s, label in ((0, midday, "weekday_midday"), (0, night, "weekday_night")):
            row[f"share_{label}_before"] = round(float(before[d, s, j]), 4)
            row[f"share_{label}_after"] = round(float(after[d, s, j]), 4)
        per_mesh.append(row)
    return per_mesh


def _shaped_meta(
    table: DemandTable, report: dict[str, Any], sources_files: list[dict[str, Any]]
) -> dict[str, Any]:
    """The input table's ``meta`` with the people-flow files added to the pickup rate's
    sources (the other columns keep theirs), the report and a note."""
    meta = dict(table.meta)
    rate_source = {
        "kind": "transferred demand (tools/pipeline/transfer.py)",
        "version": table.version,
    }
    old_sources = table.sources or {}
    unchanged = {
        col: old_sources.get(col, [rate_source])
        for col in ("fare", "trip_time", "trip_distance", "dropoff")
    }
    meta["sources"] = {
        "pickup_rate": [*old_sources.get("pickup_rate", [rate_source]), *sources_files],
        **unchanged,
    }
    meta["people_flow"] = report
    note = str(meta.get("note", ""))
    # the note names the module as it was named when the tables were first built: kept, so
    # that the same inputs keep giving the same demand.json bytes
    meta["note"] = (
        note + "; its spread over the area shaped by the people present per 1 km mesh "
        "(MLIT people-flow 2019, models/peopleflow.py)"
    ).lstrip("; ")
    return meta
