"""Japanese people-flow (MLIT 1 km mesh) and the spatial shaping of transferred demand.

There is no Japanese taxi trip data here. The Shibuya demand is transferred from Manhattan by
road class and local time (``tools/pipeline/transfer.py``): every link of a class gets the same
hails per km, wherever it is. This module brings in real Japanese demand-side evidence to say
*where* in the area that demand falls: MLIT's 全国の人流オープンデータ (people-flow open data),
the average number of people present in each JIS X 0410 1 km mesh, per month of 2019, for
weekdays and holidays, at midday (11-14 h) and at night (1-4 h), measured from mobile phones
(Agoop) and aggregated by MLIT. Licence CC BY 4.0; attribution
「全国の人流オープンデータ」（国土交通省）.

**Mesh codes (JIS X 0410, 地域メッシュコード).** An 8-digit 1 km mesh code ``pq rs t u v w``
(the standard's 第3次地域区画, 基準地域メッシュ) decodes as:

* 1st-level square (第1次地域区画, 40' of latitude x 1 degree of longitude): south edge
  ``pq / 1.5`` degrees north, west edge ``100 + rs`` degrees east;
* 2nd level (第2次地域区画): the first-level square cut 8 x 8, ``t`` the row from the south,
  ``u`` the column from the west (0-7): 5' of latitude x 7'30" of longitude;
* 3rd level (第3次地域区画): the second-level square cut 10 x 10, ``v`` the row, ``w`` the
  column (0-9): 30" of latitude x 45" of longitude, about 0.93 x 1.13 km at Tokyo.

MLIT's figures are in JGD2000/JGD2011 latitude and longitude, which agree with WGS84 (OSM) to
well under a metre: no datum shift is applied.

**Shaping (the choice).** For each day type and 30-minute slot, a link's transferred rate
``r_l`` becomes ``r_l * P_m(l)^exponent * R / sum_l r_l P_m(l)^exponent``, where ``P_m(l)`` is
the people present in the mesh of the link's midpoint and ``R = sum_l r_l`` the area's total in
that slot, which is kept exactly. So hails per km of a road class scale with the people around
the road, and the transfer still sets the area's level, its daily and weekly profile and the
mix between road classes inside a mesh. The people-flow figure used for a slot:

* day type: weekday -> MLIT weekday (``dayflag`` 1); Saturday and Sunday/holiday -> MLIT
  holiday (``dayflag`` 0, which covers Saturdays, Sundays and public holidays);
* time band: slots from 11:00 to 14:00 -> midday (``timezone`` 0); 01:00 to 04:00 -> night
  (``timezone`` 1); every other slot -> the all-day figure (``timezone`` 2), the only measured
  figure for those hours (MLIT publishes no morning or evening band);
* months: the mean over the months read (``ShapeConfig.months``; default every month in the
  files), since the demand table has no month.

A link whose mesh has no figure (outside the files, or a value MLIT omitted because it was under
10) gets the neutral weight, the rate-weighted mean of the area's known weights in that slot, so
its share is left as the transfer gave it; such links are counted in the report, never dropped.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.demand import DAY_TYPES, SLOT_MINUTES, SLOTS_PER_DAY, DemandTable
from models.errors import DemandDataError
from tiles import Graph
from tiles.fileio import sha256_file

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: one 1 km (3rd-level) mesh: 30 seconds of latitude, 45 seconds of longitude
MESH_DEG_LAT = 30.0 / 3600.0
MESH_DEG_LON = 45.0 / 3600.0
#: the columns of MLIT's ``monthly_mdp_mesh1km.csv``
COLUMNS = (
    "mesh1kmid",
    "prefcode",
    "citycode",
    "year",
    "month",
    "dayflag",
    "timezone",
    "population",
)
FORMAT = "mlit_mdp_mesh1km"
FORMAT_KIND = (
    "MLIT 全国の人流オープンデータ: mean people present per JIS X 0410 1 km mesh and month "
    "(mobile phones, Agoop), weekday/holiday x midday (11-14 h)/night (1-4 h)/all day"
)
LICENCE = "CC BY 4.0"
ATTRIBUTION = "「全国の人流オープンデータ」（国土交通省）"
#: MLIT ``dayflag`` (0 holiday, 1 weekday, 2 all days) per demand day type (models.demand)
DAYFLAG_HOLIDAY, DAYFLAG_WEEKDAY, DAYFLAG_ALL = 0, 1, 2
DAYFLAG_OF_DAY_TYPE = (DAYFLAG_WEEKDAY, DAYFLAG_HOLIDAY, DAYFLAG_HOLIDAY)
#: MLIT ``timezone`` (0 = 11-14 h, 1 = 1-4 h, 2 = all day)
BAND_MIDDAY, BAND_NIGHT, BAND_ALL_DAY = 0, 1, 2
BAND_NAMES = ("midday", "night", "all_day")
MIDDAY_HOURS = (11, 14)
NIGHT_HOURS = (1, 4)


def band_of_slot(slot: int) -> int:
    """The MLIT time band whose figure a 30-minute slot of the day uses (see module doc)."""
    hour = slot * SLOT_MINUTES / 60.0
    if MIDDAY_HOURS[0] <= hour < MIDDAY_HOURS[1]:
        return BAND_MIDDAY
    if NIGHT_HOURS[0] <= hour < NIGHT_HOURS[1]:
        return BAND_NIGHT
    return BAND_ALL_DAY


SLOT_BAND: tuple[int, ...] = tuple(band_of_slot(s) for s in range(SLOTS_PER_DAY))


def mesh1km_box(code: int | str) -> tuple[float, float, float, float]:
    """(min_lon, min_lat, max_lon, max_lat) of an 8-digit JIS X 0410 1 km mesh code.

    Raises ValueError for anything that is not a valid 3rd-level code (8 digits, the 2nd-level
    digits 0-7)."""
    text = str(code)
    if len(text) != 8 or not text.isdigit():
        raise ValueError(f"not an 8-digit 1 km mesh code: {code!r}")
    pq, rs = int(text[0:2]), int(text[2:4])
    t, u, v, w = (int(c) for c in text[4:8])
    if t > 7 or u > 7:
        raise ValueError(f"not a 1 km mesh code (2nd-level digits run 0-7): {code!r}")
    # integer arithmetic in units of one 3rd-level mesh, divided once: exact edges
    rows = pq * 80 + t * 10 + v  # 1st level = 80 meshes of 30" (40'), 2nd = 10
    cols = (100 + rs) * 80 + u * 10 + w  # 1st level = 80 meshes of 45" (1 degree)
    min_lat, min_lon = rows / 120.0, cols / 80.0
    return min_lon, min_lat, (cols + 1) / 80.0, (rows + 1) / 120.0


def mesh1km_of(lon: npt.ArrayLike, lat: npt.ArrayLike) -> I64:
    """The 8-digit 1 km mesh code of points (lon, lat in degrees), vectorised.

    A point on a mesh's south or west edge belongs to that mesh (the standard's squares are
    closed on the south-west)."""
    x = np.asarray(lon, dtype=np.float64)
    y = np.asarray(lat, dtype=np.float64)
    # rows/cols counted in 1 km meshes from (0 N, 100 E); the small epsilon keeps points that
    # lie exactly on an edge (e.g. 35.658333...) in the mesh to their north / east
    rows = np.floor(y * 120.0 + 1e-9).astype(np.int64)
    cols = np.floor((x - 100.0) * 80.0 + 1e-9).astype(np.int64)
    pq, rem_r = np.divmod(rows, 80)
    t, v = np.divmod(rem_r, 10)
    rs, rem_c = np.divmod(cols, 80)
    u, w = np.divmod(rem_c, 10)
    code = pq * 1_000_000 + rs * 10_000 + t * 1000 + u * 100 + v * 10 + w
    return np.asarray(code, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class PeopleFlow:
    """People present per 1 km mesh, averaged over the months read.

    ``population[i, dayflag, band]`` is the mean over those months of MLIT's figure for mesh
    ``codes[i]`` (NaN where no month has one)."""

    codes: I64  # (n_mesh,) sorted 8-digit codes
    population: F64  # (n_mesh, 3 dayflags, 3 bands)
    months: tuple[tuple[int, int], ...]  # (year, month) read
    files: tuple[dict[str, Any], ...]  # path, sha256, rows read, rows used

    def people(self, codes: npt.ArrayLike, dayflag: int, band: int) -> F64:
        """People present in each mesh of ``codes`` (NaN for a mesh without a figure)."""
        c = np.asarray(codes, dtype=np.int64)
        i = np.searchsorted(self.codes, c)
        i = np.clip(i, 0, max(len(self.codes) - 1, 0))
        found = (self.codes[i] == c) if len(self.codes) else np.zeros(c.shape, dtype=bool)
        out = np.full(c.shape, np.nan)
        out[found] = self.population[i[found], dayflag, band]
        return out


#: one figure of a people-flow file: (mesh code, year, month, dayflag, band)
_FlowKey = tuple[int, int, int, int, int]


def read_people_flow(
    paths: Sequence[str | os.PathLike[str]],
    months: Sequence[int] = (),
    codes: Sequence[int] | None = None,
) -> PeopleFlow:
    """Read MLIT ``monthly_mdp_mesh1km.csv`` files (or files of the same columns).

    ``months`` keeps those months (1-12; empty: every month found); ``codes`` keeps those
    meshes (None: all). A file that is not in this format, a bad value or two different figures
    for the same mesh, month, day flag and band raise :class:`DemandDataError` (one line)."""
    if not paths:
        raise DemandDataError("no people-flow file given")
    bad_months = [m for m in months if not 1 <= m <= 12]
    if bad_months:
        raise DemandDataError(f"people-flow months run 1-12, got {bad_months[0]}")
    keep_months = set(months)
    keep_codes = None if codes is None else {int(c) for c in codes}
    values: dict[_FlowKey, float] = {}
    files: list[dict[str, Any]] = []
    for path in paths:
        p = Path(path)
        try:
            rows_read, rows_used = _read_file(p, keep_months, keep_codes, values)
        except OSError as e:
            raise DemandDataError(f"cannot read people-flow file {p}: {e.strerror or e}") from e
        except UnicodeDecodeError as e:
            raise DemandDataError(f"{p}: not a text CSV file ({e.reason})") from e
        files.append(
            {
                "path": str(p),
                "sha256": sha256_file(p),
                "format": FORMAT,
                "rows": rows_read,
                "rows_used": rows_used,
            }
        )
    if not values:
        raise DemandDataError(
            "no people-flow figure in " + ", ".join(str(p) for p in paths) + " for the months "
            "and meshes asked"
        )
    return _mean_over_months(values, tuple(files))


def _read_file(
    p: Path, keep_months: set[int], keep_codes: set[int] | None, values: dict[_FlowKey, float]
) -> tuple[int, int]:
    """Add the figures of one file (of the months and meshes kept) to ``values``; the rows
    read and the rows used. :class:`DemandDataError` for a file of another format, a bad row
    or a figure given twice with two values."""
    rows_read = rows_used = 0
    with p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != COLUMNS:
            raise DemandDataError(
                f"{p}: not an MLIT people-flow mesh file (header must be {','.join(COLUMNS)})"
            )
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            rows_read += 1
            try:
                key, pop = _parse_row(row)
            except ValueError as e:
                raise DemandDataError(f"{p}:{lineno}: bad people-flow row: {e}") from e
            code, year, month, dayflag, band = key
            if keep_months and month not in keep_months:
                continue
            if keep_codes is not None and code not in keep_codes:
                continue
            old = values.get(key)
            if old is not None and old != pop:
                raise DemandDataError(
                    f"{p}:{lineno}: mesh {code} {year}-{month:02d} dayflag {dayflag} "
                    f"timezone {band} given twice ({old:g} and {pop:g})"
                )
            values[key] = pop
            rows_used += 1
    return rows_read, rows_used


def _parse_row(row: list[str]) -> tuple[_FlowKey, float]:
    """One row of :data:`COLUMNS` as its key and figure; ValueError when a value is wrong."""
    if len(row) != len(COLUMNS):
        raise ValueError(f"{len(row)} columns")
    code = int(row[0])
    mesh1km_box(code)
    year, month = int(row[3]), int(row[4])
    dayflag, band = int(row[5]), int(row[6])
    pop = float(row[7])
    if not 1 <= month <= 12 or dayflag not in (0, 1, 2) or band not in (0, 1, 2):
        raise ValueError("month, dayflag or timezone out of range")
    if not (math.isfinite(pop) and pop >= 0):
        raise ValueError(f"population {row[7]!r}")
    return (code, year, month, dayflag, band), pop


def _mean_over_months(
    values: dict[_FlowKey, float], files: tuple[dict[str, Any], ...]
) -> PeopleFlow:
    """The mean over the months read of each mesh's figure per dayflag and band."""
    all_codes = np.array(sorted({k[0] for k in values}), dtype=np.int64)
    ym = tuple(sorted({(k[1], k[2]) for k in values}))
    total = np.zeros((len(all_codes), 3, 3))
    count = np.zeros((len(all_codes), 3, 3))
    index = {int(c): i for i, c in enumerate(all_codes)}
    for (code, _y, _m, dayflag, band), pop in values.items():
        total[index[code], dayflag, band] += pop
        count[index[code], dayflag, band] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        population = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return PeopleFlow(codes=all_codes, population=population, months=ym, files=files)


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
    return np.where(ok, weighted * (total / np.where(ok, wsum, 1.0)), rates)


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
    meta["note"] = (
        note + "; its spread over the area shaped by the people present per 1 km mesh "
        "(MLIT people-flow 2019, models/peopleflow.py)"
    ).lstrip("; ")
    return meta
