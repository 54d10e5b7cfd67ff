"""A month of consecutive pickups binned for the cell model (:class:`MonthData`,
:func:`prepare_month`, cached by :func:`cached_month`), and the statistics of some of its dates
per link and per cell."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.demand import DAY_TYPES, SLOTS_PER_DAY, CellGrid, _atomic_write
from models.errors import DemandDataError
from models.features import CELL_STATIC_FEATURES, MANHATTAN_GRID_DEG, log_rate
from models.rolling.config import F32, F64, HA_STATS, I64
from models.snap import SnapConfig, snap_pickups
from models.statistics import (
    StatsConfig,
    edge_midpoints,
    file_sha256,
    full_graph,
    make_grid,
    network_bbox,
    rates_from_counts,
)
from models.trips import Trips, read_trips
from tiles import TileStore
from tiles.geo import LocalProjection


@dataclass(frozen=True, eq=False)
class MonthData:
    """Pickups of consecutive dates on one network, binned for fast rows (see module doc)."""

    grid: CellGrid
    n_local: int
    edge_cell: I64  # per local edge
    allowed: npt.NDArray[np.bool_]
    length_m: F64
    area_cells: I64  # cells with a cruisable link
    cell_xy: F64  # (n_cells, 2) cell centre along / across the avenues, metres
    first_date: dt.date
    day_type: I64  # per timeline day
    link_counts: F32  # (n_days, 48, n_local) pickups per 30-min slot
    obs_cum: F64  # (n_days * 1440 + 1, n_cells): pickups in timeline minutes < t
    pk_day: I64  # snapped pickup rows (direction shares): timeline day
    pk_minute: I64  # minute of day
    pk_edge: I64  # local edge
    pk_w: F64

    @property
    def n_days(self) -> int:
        return int(self.day_type.size)

    def day_index(self, d: dt.date) -> int:
        return (d - self.first_date).days

    def date_of(self, i: int) -> dt.date:
        return self.first_date + dt.timedelta(days=int(i))


def prepare_month(
    store: TileStore, trips: Trips, snap_config: SnapConfig = SnapConfig()
) -> MonthData:
    """Bin the pickups of ``trips`` (consecutive dates) on the network of ``store``."""
    g = full_graph(store)
    grid = make_grid(g, HA_STATS.cell_m)
    if trips.n == 0:
        raise DemandDataError("no pickup inside the road network")
    snapped = snap_pickups(
        g, trips.lon, trips.lat, trips.dropoff_lon, trips.dropoff_lat, snap_config
    )
    mid_lon, mid_lat = edge_midpoints(g)
    edge_cell = grid.cell_of(mid_lon, mid_lat).astype(np.int64)
    allowed = g.cruise_allowed()
    area_cells = np.unique(edge_cell[allowed])
    first = dt.date.fromordinal(int(trips.pickup_date_ord.min()))
    n_days = int(trips.pickup_date_ord.max()) - first.toordinal() + 1
    from models.trips import day_type_of_date

    day_type = np.array(
        [day_type_of_date(first + dt.timedelta(days=i)) for i in range(n_days)], dtype=np.int64
    )
    trip_i, edge_i, w = snapped.edge_weights(g.n)
    day = trips.pickup_date_ord[trip_i] - first.toordinal()
    minute = (np.floor(trips.pickup_s[trip_i] / 60.0).astype(np.int64)) % 1440
    link_counts = np.zeros((n_days, SLOTS_PER_DAY, g.n), dtype=np.float32)
    np.add.at(link_counts, (day, minute // 30, edge_i), w.astype(np.float32))
    per_min = np.zeros((n_days * 1440, grid.n_cells), dtype=np.float64)
    np.add.at(per_min, (day * 1440 + minute, edge_cell[edge_i]), w)
    obs_cum = np.zeros((n_days * 1440 + 1, grid.n_cells), dtype=np.float64)
    np.cumsum(per_min, axis=0, out=obs_cum[1:])
    # static cell features: centre position in the grid's frame, all-time share
    proj = LocalProjection(float(mid_lon.mean()), float(mid_lat.mean()))
    cidx = np.arange(grid.n_cells)
    clon = grid.min_lon + (cidx % grid.ncols + 0.5) * grid.cell_deg_lon
    clat = grid.min_lat + (cidx // grid.ncols + 0.5) * grid.cell_deg_lat
    x, y = proj.to_xy(clon, clat)
    a = math.radians(MANHATTAN_GRID_DEG)
    along = x * math.sin(a) + y * math.cos(a)
    across = x * math.cos(a) - y * math.sin(a)
    cell_xy = np.column_stack([along, across]).astype(np.float64)
    return MonthData(
        grid=grid,
        n_local=g.n,
        edge_cell=edge_cell,
        allowed=allowed,
        length_m=g.length_m.astype(np.float64),
        area_cells=area_cells,
        cell_xy=cell_xy,
        first_date=first,
        day_type=day_type,
        link_counts=link_counts,
        obs_cum=obs_cum,
        pk_day=day,
        pk_minute=minute,
        pk_edge=edge_i,
        pk_w=w,
    )


def static_cells_of(md: MonthData, cell_rate: F64) -> F32:
    """Static cell features: position, and the log share of the area's statistical demand
    under ``cell_rate`` (so of the training dates only, like every other input)."""
    total = cell_rate.sum(axis=(0, 1))
    share = total / max(float(total.sum()), 1e-12)
    static = np.column_stack([md.cell_xy, log_rate(share * 1e3)]).astype(np.float32)
    if static.shape[1] != len(CELL_STATIC_FEATURES):
        raise DemandDataError("cell static feature count does not match the spec")
    return static


def stats_rates(md: MonthData, days: npt.ArrayLike, config: StatsConfig = HA_STATS) -> F64:
    """Historical-average rates (3, 48, n_local), recent-source pickups per hour, from ``days``."""
    d = np.asarray(days, dtype=np.int64)
    counts = np.zeros((len(DAY_TYPES), SLOTS_PER_DAY, md.n_local))
    expo = np.zeros((len(DAY_TYPES), SLOTS_PER_DAY))
    for t in range(len(DAY_TYPES)):
        sel = d[md.day_type[d] == t]
        if sel.size:
            counts[t] = md.link_counts[sel].sum(axis=0, dtype=np.float64)
        expo[t] = 0.5 * sel.size
    return rates_from_counts(
        counts, expo, md.edge_cell, md.grid.n_cells, md.length_m, md.allowed, config
    )


def cell_sum(md: MonthData, rates: F64) -> F64:
    """Per-cell sums (3, 48, n_cells) of link rates (3, 48, n_local)."""
    out = np.zeros((len(DAY_TYPES), SLOTS_PER_DAY, md.grid.n_cells))
    for t in range(len(DAY_TYPES)):
        for s in range(SLOTS_PER_DAY):
            out[t, s] = np.bincount(md.edge_cell, weights=rates[t, s], minlength=md.grid.n_cells)
    return out


def exp_cum_of(md: MonthData, cell_rate: F64) -> F64:
    """Cumulative expected pickups per timeline minute and cell under ``cell_rate`` (per h)."""
    minute = np.arange(md.n_days * 1440)
    per_min = cell_rate[md.day_type[minute // 1440], (minute % 1440) // 30] / 60.0
    out = np.zeros((minute.size + 1, md.grid.n_cells))
    np.cumsum(per_min, axis=0, out=out[1:])
    return out


def cached_month(
    store: TileStore, files: list[str | os.PathLike[str]], trips: Trips | None = None
) -> MonthData:
    """:func:`prepare_month` of ``files``, cached in the temp dir by file and network hash."""
    key = hashlib.sha256(
        repr([file_sha256(Path(f)) for f in files]).encode()
        + store.meta.get("source_sha256", "").encode()
    ).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"nagashi-month-v2-{key}.npz"
    g = full_graph(store)
    grid = make_grid(g, HA_STATS.cell_m)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
            return MonthData(
                grid=grid,
                n_local=int(a["n_local"]),
                edge_cell=a["edge_cell"],
                allowed=a["allowed"],
                length_m=a["length_m"],
                area_cells=a["area_cells"],
                cell_xy=a["cell_xy"],
                first_date=dt.date.fromordinal(int(a["first_ord"])),
                day_type=a["day_type"],
                link_counts=a["link_counts"],
                obs_cum=a["obs_cum"],
                pk_day=a["pk_day"],
                pk_minute=a["pk_minute"],
                pk_edge=a["pk_edge"],
                pk_w=a["pk_w"],
            )
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)
    md = prepare_month(
        store, trips if trips is not None else read_trips(list(files), network_bbox(grid))
    )
    arrays = {
        "n_local": np.int64(md.n_local),
        "edge_cell": md.edge_cell,
        "allowed": md.allowed,
        "length_m": md.length_m,
        "area_cells": md.area_cells,
        "cell_xy": md.cell_xy,
        "first_ord": np.int64(md.first_date.toordinal()),
        "day_type": md.day_type,
        "link_counts": md.link_counts,
        "obs_cum": md.obs_cum,
        "pk_day": md.pk_day,
        "pk_minute": md.pk_minute,
        "pk_edge": md.pk_edge,
        "pk_w": md.pk_w,
    }
    _atomic_write(path, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]  # numpy stubs reject a dict of arrays as **kwds
    return md
