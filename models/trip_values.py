"""What a trip from each link is worth and where it goes, for the statistical table
(:func:`models.statistics.build_from_trips`): per trip its distance and duration (measured, else
estimated from the measured detour and speed), per link the mean fare, distance and duration of
the trips starting on it (shrunk toward its cell's, and the cell's toward the area's), the fare
quantiles, and P(drop-off cell | pickup cell)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from models.demand import CellGrid
from models.snap import Snapped
from models.trips import Trips
from tiles import Graph
from tiles.geo import haversine_m

if TYPE_CHECKING:  # the config is defined beside the table's builder
    from models.statistics import StatsConfig

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def distances_and_durations(trips: Trips, config: StatsConfig) -> tuple[F64, F64, float, float]:
    """Per trip its distance (measured, else straight line x the measured median detour) and
    duration (measured, else distance / the measured median speed); the detour and speed."""
    measured = np.isfinite(trips.distance_m)
    straight = haversine_m(trips.lon, trips.lat, trips.dropoff_lon, trips.dropoff_lat)
    detour = config.detour_factor
    both = measured & np.isfinite(straight) & (straight > 200)
    if np.sum(both) >= 50:
        detour = float(np.median(trips.distance_m[both] / straight[both]))
    distance = np.where(measured, trips.distance_m, straight * detour)
    timed = np.isfinite(trips.duration_s) & np.isfinite(distance) & (distance > 0)
    speed = config.speed_mps
    if np.sum(timed) >= 50:
        speed = float(np.median(distance[timed] / trips.duration_s[timed]))
    duration = np.where(np.isfinite(trips.duration_s), trips.duration_s, distance / speed)
    return distance, duration, detour, speed


def link_values(
    g: Graph,
    grid: CellGrid,
    edge_cell: npt.NDArray[np.int64],
    trips: Trips,
    snapped: Snapped,
    distance: F64,
    duration: F64,
    config: StatsConfig,
) -> tuple[dict[str, F64], F64]:
    """Per link the mean fare, distance and duration of the trips starting on it, shrunk toward
    its cell's (and the cell's toward the area's), and its fare quantiles."""
    trip_i, edge_i, w = snapped.edge_weights(g.n)
    cells_e = edge_cell[edge_i]
    out: dict[str, F64] = {}
    for name, vals in (("fare", trips.fare), ("distance", distance), ("duration", duration)):
        v = vals[trip_i]
        ok = np.isfinite(v)
        glob = float(np.average(v[ok], weights=w[ok])) if ok.any() else 0.0
        cell_mean = _shrunk_mean(
            v, w, cells_e, grid.n_cells, np.full(grid.n_cells, glob), config.k_fare
        )
        out[name] = _shrunk_mean(v, w, edge_i, g.n, cell_mean[edge_cell], config.k_fare)
    fare_q = _fare_quantiles(trips.fare[trip_i], edge_i, cells_e, edge_cell, g.n, config)
    return out, fare_q


def _shrunk_mean(values: F64, weights: F64, group: I64, n_groups: int, prior: F64, k: float) -> F64:
    ok = np.isfinite(values)
    s = np.bincount(group[ok], weights=(values * weights)[ok], minlength=n_groups)
    w = np.bincount(group[ok], weights=weights[ok], minlength=n_groups)
    return (s + k * prior) / (w + k)


def _fare_quantiles(
    fare: F64, edge_i: I64, cells_e: I64, edge_cell: I64, n: int, config: StatsConfig
) -> F64:
    ok = np.isfinite(fare)
    fare, edge_i, cells_e = fare[ok], edge_i[ok], cells_e[ok]
    qs = (0.1, 0.5, 0.9)
    glob = np.quantile(fare, qs) if fare.size else np.zeros(3)
    out = np.tile(glob, (n, 1))
    by_cell: dict[int, F64] = {}
    for c in np.unique(cells_e):
        v = fare[cells_e == c]
        if v.size >= config.min_quantile_trips:
            by_cell[int(c)] = np.quantile(v, qs)
    for e in range(n):
        q = by_cell.get(int(edge_cell[e]))
        if q is not None:
            out[e] = q
    order = np.argsort(edge_i, kind="stable")
    es, fs = edge_i[order], fare[order]
    bounds = np.flatnonzero(np.diff(es)) + 1
    for grp_e, grp_f in zip(np.split(es, bounds), np.split(fs, bounds), strict=True):
        if grp_f.size >= config.min_quantile_trips:
            out[int(grp_e[0])] = np.quantile(grp_f, qs)
    return out


def dropoff_matrix(trips: Trips, grid: CellGrid, snapped: Snapped, config: StatsConfig) -> F64:
    """P(drop-off cell | pickup cell), last column outside the grid; shrunk to the area's."""
    ok = snapped.ok & np.isfinite(trips.dropoff_lon) & np.isfinite(trips.dropoff_lat)
    pc = grid.cell_of(trips.lon[ok], trips.lat[ok])
    dc = grid.cell_of(trips.dropoff_lon[ok], trips.dropoff_lat[ok])
    dc = np.where(dc < 0, grid.n_cells, dc)
    keep = pc >= 0
    m = np.zeros((grid.n_cells, grid.n_cells + 1))
    np.add.at(m, (pc[keep], dc[keep]), 1.0)
    total = m.sum(axis=0)
    area = (
        total / total.sum()
        if total.sum() > 0
        else np.full(grid.n_cells + 1, 1.0 / (grid.n_cells + 1))
    )
    return np.asarray(
        (m + config.k_dropoff * area[None, :]) / (m.sum(axis=1, keepdims=True) + config.k_dropoff),
        dtype=np.float64,
    )
