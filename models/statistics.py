"""Statistical demand: a :class:`~models.demand.DemandTable` built from real TLC trip files.

Absolute rates (the scale factor). Every input file is a sample of NYC yellow-cab trips with a
known coverage in time (:func:`models.trips.coverage`): the 2009-2015 files sample every trip of
random timestamps over ~6.5 years, the 2015-06 file is (nearly) every trip of four short windows.
NYC yellow cabs made about ``trips_per_day_citywide`` = 485,000 trips a day (TLC fact book,
2014), i.e. 20,208 an hour on average. A file ``f`` with ``N_f`` valid citywide pickups over
``H_f`` covered hours therefore holds a fraction ``pi_f = N_f / (20,208 * H_f)`` of all trips, and
each of its trips stands for ``1 / pi_f`` real ones. Pooling the files as Poisson samples, the
absolute rate of a link in (day type, slot) is

    rate = pickups / sum_f (pi_f * covered_h_f[day type, slot])          [hails per hour]

so every slot's citywide total follows the files' time profile and the daily citywide total
is 485,000 on average. ``scale_factor`` (in demand.json and the bundle parameters) is the pooled
``1 / pi``: real trips per sample trip; per-file factors are kept in ``meta.inputs``.

Shrinkage (sparse links). The rate is a product of three shrunk estimates:

* the area's total rate per (day type, slot), smoothed over neighbouring slots;
* the 500 m cell's share of the area's pickups at that time (a window of neighbouring slots),
  shrunk toward the cell's all-time share;
* the link's share of its cell's pickups at that time, shrunk toward the link's all-time share
  within the cell, itself shrunk toward its share of the cell's cruisable length.

So a link without a single sampled pickup still gets the demand of the area around it, spread
by length, and a link with many pickups keeps its own profile. Links a cruising taxi may not be
on (motorway, private, pier) get zero.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.demand import DAY_TYPES, SLOTS_PER_DAY, CellGrid, DemandTable
from models.errors import DemandDataError
from models.snap import SnapConfig, Snapped, snap_pickups
from models.trip_values import distances_and_durations, dropoff_matrix, link_values
from models.trips import FORMAT_DESCRIPTIONS, FORMAT_RECORDS, Trips, day_ranges, read_trips
from tiles import Graph, TileStore
from tiles.fileio import sha256_file

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

METRES_PER_DEG_LAT = 111_320.0
#: demand.json lists the dates a table was built from as ranges when there are at most this many
#: (a random sample over seven years has ~1,700 one-day ranges: first/last/count only)
MAX_DAY_RANGES_LISTED = 100


@dataclass(frozen=True)
class StatsConfig:
    """Statistical demand parameters (units in names; pseudo-counts are in sample pickups)."""

    trips_per_day_citywide: float = 485_000.0  # TLC fact book 2014, NYC yellow cabs
    cell_m: float = 500.0
    area_halfwidth_slots: int = 4  # triangular kernel over slots (+-2 h) for the area total rate
    # the next four were selected on the 2009-2015 valid file (mean log-likelihood of its
    # pickups' links; see docs/demand.md): sparse samples want strong shrinkage
    share_halfwidth_slots: int = 12  # slot window for the cell and link shares (+-6 h)
    k_cell: float = 200.0  # pseudo-pickups pulling a cell's share toward its all-time share
    k_link: float = 300.0  # pseudo-pickups pulling a link's share toward its all-time share
    k_length: float = 100.0  # pseudo-pickups pulling a link's all-time share to its length
    k_fare: float = 5.0  # pseudo-trips pulling a link's fare / duration / distance to its cell's
    k_dropoff: float = 10.0  # pseudo-trips pulling a cell's drop-offs to the area's
    min_quantile_trips: int = 20  # fewer trips on a link: fare quantiles of its cell (or area)
    #: used only when no input file carries measured trip distances / drop-off times; measured
    #: on the 2015-06 file (median trip_distance / straight line = 1.31, median speed 3.97 m/s)
    detour_factor: float = 1.31
    speed_mps: float = 3.97


def make_grid(g: Graph, cell_m: float) -> CellGrid:
    pts = g.geom_lonlat
    min_lon, min_lat = float(pts[:, 0].min()), float(pts[:, 1].min())
    max_lon, max_lat = float(pts[:, 0].max()), float(pts[:, 1].max())
    lat0 = 0.5 * (min_lat + max_lat)
    dlat = cell_m / METRES_PER_DEG_LAT
    dlon = cell_m / (METRES_PER_DEG_LAT * math.cos(math.radians(lat0)))
    ncols = int((max_lon - min_lon) // dlon) + 1
    nrows = int((max_lat - min_lat) // dlat) + 1
    return CellGrid(min_lon, min_lat, dlon, dlat, ncols, nrows)


def edge_midpoints(g: Graph) -> tuple[F64, F64]:
    return 0.5 * (g.u_lon + g.v_lon), 0.5 * (g.u_lat + g.v_lat)


def effective_exposure(trips: Trips, config: StatsConfig) -> tuple[F64, list[float]]:
    """Sum over files of ``pi_f * covered_h_f``, shape (3, 48); and each file's ``1/pi_f``."""
    per_hour = config.trips_per_day_citywide / 24.0
    expo = np.zeros((len(DAY_TYPES), SLOTS_PER_DAY))
    inv_pi: list[float] = []
    for n_city, cov in zip(trips.citywide, trips.covered_h, strict=True):
        hours = float(cov.sum())
        if n_city == 0 or hours <= 0:
            inv_pi.append(float("nan"))
            continue
        pi = n_city / (per_hour * hours)
        inv_pi.append(1.0 / pi)
        expo += pi * cov
    return expo, inv_pi


def _circular_smooth(a: F64, halfwidth: int) -> F64:
    """Triangular kernel over the last axis (48 slots, circular within the day)."""
    if halfwidth <= 0:
        return a
    w = np.array([halfwidth + 1 - abs(k) for k in range(-halfwidth, halfwidth + 1)], float)
    out = np.zeros_like(a)
    for k, wk in zip(range(-halfwidth, halfwidth + 1), w, strict=True):
        out += wk * np.roll(a, k, axis=-1)
    return np.asarray(out / w.sum(), dtype=np.float64)


def _window_sum(a: F64, halfwidth: int) -> F64:
    out = np.zeros_like(a)
    for k in range(-halfwidth, halfwidth + 1):
        out += np.roll(a, k, axis=1)
    return out


def pickup_counts(trips: Trips, snapped: Snapped, n_local: int) -> F64:
    """Snapped pickups per (day type, slot, local edge), direction shares applied."""
    trip, edge, w = snapped.edge_weights(n_local)
    dt = trips.pickup_day_type[trip]
    slot = (trips.pickup_minute_of_week[trip] % 1440) // 30
    counts = np.zeros((len(DAY_TYPES), SLOTS_PER_DAY, n_local))
    np.add.at(counts, (dt, slot, edge), w)
    return counts


def rates_from_counts(
    counts: F64,
    exposure: F64,
    edge_cell: I64,
    n_cells: int,
    length_m: F64,
    allowed: npt.NDArray[np.bool_],
    config: StatsConfig,
) -> F64:
    """Shrunk absolute rates (3, 48, n) from pickup counts and effective exposure (3, 48)."""
    n = counts.shape[2]
    if np.any(_window_sum(exposure, config.area_halfwidth_slots) <= 0):
        raise DemandDataError(
            "the trip files do not cover every (day type, slot): give a file sampled over whole"
            " weeks (e.g. the 2009-2015 sample), not only short windows"
        )
    # area total rate per (d, s)
    area_counts = counts.sum(axis=2)
    area_rate = _circular_smooth(area_counts, config.area_halfwidth_slots) / _circular_smooth(
        exposure, config.area_halfwidth_slots
    )
    ok_len = np.where(allowed, length_m, 0.0)
    cell = np.where(allowed, edge_cell, n_cells)  # forbidden links go to a dummy cell
    cell_len = np.bincount(cell, weights=ok_len, minlength=n_cells + 1)[:n_cells]
    # cell counts per (d, s, c)
    cell_counts = np.zeros((len(DAY_TYPES), SLOTS_PER_DAY, n_cells + 1))
    for d in range(len(DAY_TYPES)):
        for s in range(SLOTS_PER_DAY):
            cell_counts[d, s] = np.bincount(cell, weights=counts[d, s], minlength=n_cells + 1)
    cell_counts = cell_counts[:, :, :n_cells]
    total_all = float(cell_counts.sum())
    cell_all = cell_counts.sum(axis=(0, 1))
    len_share = cell_len / max(float(cell_len.sum()), 1e-9)
    p_cell_all = (cell_all + 1.0 * len_share) / (total_all + 1.0)
    cw = _window_sum(cell_counts, config.share_halfwidth_slots)
    p_cell = (cw + config.k_cell * p_cell_all) / (cw.sum(axis=2, keepdims=True) + config.k_cell)
    # link share within its cell
    link_all = counts.sum(axis=(0, 1))
    safe_cell = np.minimum(cell, n_cells - 1)
    len_in_cell = np.where(allowed, ok_len / np.maximum(cell_len[safe_cell], 1e-9), 0.0)
    q_all = (link_all + config.k_length * len_in_cell) / (cell_all[safe_cell] + config.k_length)
    lw = _window_sum(counts, config.share_halfwidth_slots)
    q = (lw + config.k_link * q_all) / (cw[:, :, safe_cell] + config.k_link)
    rates = area_rate[:, :, None] * p_cell[:, :, safe_cell] * q
    rates[:, :, ~allowed] = 0.0
    if rates.shape != (len(DAY_TYPES), SLOTS_PER_DAY, n):
        raise DemandDataError(f"rates have shape {rates.shape}, expected (3, 48, {n})")
    return np.asarray(rates, dtype=np.float64)


def network_bbox(grid: CellGrid) -> tuple[float, float, float, float]:
    return (
        grid.min_lon,
        grid.min_lat,
        grid.min_lon + grid.ncols * grid.cell_deg_lon,
        grid.min_lat + grid.nrows * grid.cell_deg_lat,
    )


def full_graph(store: TileStore) -> Graph:
    g = store.all()
    if g.n != g.n_edges_total:
        raise DemandDataError("the tile store's graph is incomplete")
    return g


def build_demand_table(
    store: TileStore,
    trip_files: list[str | os.PathLike[str]],
    config: StatsConfig = StatsConfig(),
    snap_config: SnapConfig = SnapConfig(),
    windows: dict[int, set[int]] | None = None,
    days: frozenset[dt.date] | None = None,
) -> tuple[DemandTable, dict[str, Any]]:
    """Statistical demand for every link of ``store`` from the given trip files; and a report.

    ``windows`` keeps only some windows of windows-mode files (file index -> window indices),
    so that other windows can be held out for evaluation.

    ``days`` keeps only the pickups on those local dates for the *rates* (e.g. to build demand
    from other days than a simulation replays); fares, trip times, distances and drop-offs still
    come from every record of the files that carry them, whatever its date (pickup-only files
    have none, and a per-link fare is not what a replay of those days tests).
    """
    g = full_graph(store)
    grid = make_grid(g, config.cell_m)
    bbox = network_bbox(grid)
    trips = read_trips(list(trip_files), bbox, days=days)
    for fi, keep in (windows or {}).items():
        trips = trips.restrict_windows(fi, keep)
    value_trips = None
    if days is not None:
        with_values = [
            f for f, fmt in zip(trip_files, trips.formats, strict=True) if FORMAT_RECORDS[fmt][1:]
        ]
        value_trips = read_trips(with_values, bbox) if with_values else None
    return build_from_trips(store, g, trips, config, snap_config, value_trips=value_trips)


def build_from_trips(
    store: TileStore,
    g: Graph,
    trips: Trips,
    config: StatsConfig = StatsConfig(),
    snap_config: SnapConfig = SnapConfig(),
    value_trips: Trips | None = None,
) -> tuple[DemandTable, dict[str, Any]]:
    """The statistical table from already-read trips (see :func:`build_demand_table`).

    Rates come from every pickup of ``trips``; fares, trip times, distances and drop-offs from
    those of ``value_trips`` (default: ``trips``) that carry them.
    """
    grid = make_grid(g, config.cell_m)
    if trips.n == 0:
        raise DemandDataError("no trip in the given files has a pickup inside the road network")
    rate_snapped = snap_pickups(
        g, trips.lon, trips.lat, trips.dropoff_lon, trips.dropoff_lat, snap_config
    )
    mid_lon, mid_lat = edge_midpoints(g)
    edge_cell = grid.cell_of(mid_lon, mid_lat)
    counts = pickup_counts(trips, rate_snapped, g.n)
    exposure, inv_pi = effective_exposure(trips, config)
    rates = rates_from_counts(
        counts,
        exposure,
        edge_cell,
        grid.n_cells,
        g.length_m.astype(np.float64),
        g.cruise_allowed(),
        config,
    )
    # fares, distances, durations of trips starting on each link (shrunk toward the cell's)
    vtrips, vsnapped = trips, rate_snapped
    if value_trips is not None:
        vtrips = value_trips
        vsnapped = snap_pickups(
            g, vtrips.lon, vtrips.lat, vtrips.dropoff_lon, vtrips.dropoff_lat, snap_config
        )
    distance, duration, detour, speed = distances_and_durations(vtrips, config)
    means, fare_q = link_values(g, grid, edge_cell, vtrips, vsnapped, distance, duration, config)
    dropoff = dropoff_matrix(vtrips, grid, vsnapped, config)
    sources = column_sources(vtrips, vsnapped.ok, distance, duration, grid)
    sources["pickup_rate"] = column_sources(trips, rate_snapped.ok, trips.lon, trips.lon, grid)[
        "pickup_rate"
    ]
    lacking = [c for c in ("fare", "trip_time", "dropoff") if not sources[c]]
    if lacking:
        raise DemandDataError(
            f"no input file gives {', '.join(lacking)} for pickups inside the network (app"
            " pickups have none): add a yellow-cab trip file"
        )
    real_trips = sum(config.trips_per_day_citywide / 24.0 * float(c.sum()) for c in trips.covered_h)
    report = _report(
        trips, rate_snapped, inv_pi, rates, sources, detour, speed, config, snap_config
    )
    table = DemandTable(
        network_sha256=store.meta.get("source_sha256", ""),
        n_edges=g.n_edges_total,
        pickups_per_h=rates.astype(np.float32),
        fare_mean=means["fare"].astype(np.float32),
        fare_quantiles=fare_q.astype(np.float32),
        trip_duration_s=means["duration"].astype(np.float32),
        trip_distance_m=means["distance"].astype(np.float32),
        grid=grid,
        edge_cell=edge_cell.astype(np.int32),
        dropoff=dropoff.astype(np.float32),
        scale_factor=float(real_trips / max(sum(trips.citywide), 1)),
        version=_statistics_version(store, trips, config, snap_config),
        meta={"source": "statistical", "predicted_model": None, **report},
    )
    table.validate()
    return table, report


def _statistics_version(
    store: TileStore, trips: Trips, config: StatsConfig, snap_config: SnapConfig
) -> str:
    """``stat-`` and a hash of everything the rates depend on: the files, their windows and
    citywide counts, the road network, both configs and the days."""
    sha = hashlib.sha256()
    for f in trips.files:
        sha.update(file_sha256(Path(f)).encode())
    sha.update(repr([[w.start for w in ws] for ws in trips.windows]).encode())
    sha.update(repr(trips.citywide).encode())
    sha.update(store.meta.get("source_sha256", "").encode())
    sha.update(repr(sorted(asdict(config).items())).encode())
    sha.update(repr(sorted(asdict(snap_config).items())).encode())
    if trips.days is not None:
        sha.update(repr(sorted(trips.days)).encode())
    return f"stat-{sha.hexdigest()[:12]}"


def _report(
    trips: Trips,
    snapped: Snapped,
    inv_pi: list[float],
    rates: F64,
    sources: dict[str, Any],
    detour: float,
    speed: float,
    config: StatsConfig,
    snap_config: SnapConfig,
) -> dict[str, Any]:
    """What the table was built from and how (``demand.json``)."""
    area_per_day = float(
        sum(rates[d].sum() * 0.5 * days for d, days in enumerate(_days_per_week_of_type())) / 7.0
    )
    return {
        "inputs": [
            {**f, "sha256": file_sha256(Path(f["path"])), "real_trips_per_sample_trip": ip}
            for f, ip in zip(trips.report()["files"], inv_pi, strict=True)  # type: ignore[call-overload]  # report() is dict[str, object]
        ],
        "snapping": {**snapped.summary(), **asdict(snap_config)},
        "pickups_snapped": int(np.sum(snapped.ok)),
        "scale": {
            "trips_per_day_citywide": config.trips_per_day_citywide,
            "source": "NYC TLC Factbook 2014: ~485,000 yellow-cab trips per day",
            "rule": "rate = pickups / sum_f(pi_f * covered_h_f); pi_f = N_f/(485000/24 * H_f)",
            "scale_factor_meaning": "real trips per sample trip, pooled over the input files",
        },
        "sources": sources,
        "days": days_built_from(trips),
        "network_area_pickups_per_day": round(area_per_day, 1),
        "max_link_pickups_per_h": round(float(rates.max()), 3),
        "measured_detour_factor": round(detour, 4),
        "measured_speed_mps": round(speed, 4),
        "config": asdict(config),
    }


def column_sources(
    trips: Trips, used: npt.NDArray[np.bool_], distance: F64, duration: F64, grid: CellGrid
) -> dict[str, list[dict[str, Any]]]:
    """Which input file gave which column of the table, with how many records each.

    ``pickup_rate`` counts every snapped pickup (all formats); ``fare``, ``trip_time``,
    ``trip_distance`` and ``dropoff`` count only the snapped pickups that carry that value, so
    pickup-only files (the Uber month) appear under ``pickup_rate`` alone.
    """
    has_dropoff = (
        np.isfinite(trips.dropoff_lon)
        & np.isfinite(trips.dropoff_lat)
        & (grid.cell_of(trips.lon, trips.lat) >= 0)
    )
    columns = {
        "pickup_rate": used,
        "fare": used & np.isfinite(trips.fare),
        "trip_time": used & np.isfinite(duration),
        "trip_distance": used & np.isfinite(distance),
        "dropoff": used & has_dropoff,
    }
    out: dict[str, list[dict[str, Any]]] = {}
    for name, mask in columns.items():
        per_file = np.bincount(trips.file_index[mask], minlength=len(trips.files))
        out[name] = [
            {
                "path": f,
                "sha256": file_sha256(Path(f)),
                "format": trips.formats[i],
                "kind": FORMAT_DESCRIPTIONS[trips.formats[i]],
                "records": int(per_file[i]),
            }
            for i, f in enumerate(trips.files)
            if per_file[i] > 0
        ]
    return out


def days_built_from(trips: Trips) -> dict[str, Any]:
    """The local dates the table was built from: first, last, how many, and as ranges (the
    ``days`` filter when one was given, else the dates with a kept pickup when few)."""
    dates = {dt.date.fromordinal(int(o)) for o in np.unique(trips.pickup_date_ord)}
    ranges = day_ranges(trips.days if trips.days is not None else dates)
    return {
        "filter": None
        if trips.days is None
        else [[a.isoformat(), b.isoformat()] for a, b in day_ranges(trips.days)],
        "first": min(dates).isoformat() if dates else None,
        "last": max(dates).isoformat() if dates else None,
        "dates_with_pickups": len(dates),
        "ranges": [[a.isoformat(), b.isoformat()] for a, b in ranges]
        if len(ranges) <= MAX_DAY_RANGES_LISTED
        else None,
    }


def _days_per_week_of_type() -> tuple[float, float, float]:
    return (5.0, 1.0, 1.0)


def file_sha256(p: Path) -> str:
    try:
        return sha256_file(p)
    except OSError as e:
        raise DemandDataError(f"cannot read {p}: {e}") from e
