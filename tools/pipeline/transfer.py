"""Demand for an area without taxi data of its own, transferred from one that has it.

There is no Japanese taxi trip data in ``../shared/data``. The Shibuya pipeline therefore does
not *measure* demand: it transfers the statistical demand learned from the real NYC trips over
Midtown Manhattan to the Shibuya road network, by road class and local time. This is a
documented assumption, not an observation, and the resulting table says so in its metadata
(``source: "transferred"``). What it keeps and what it assumes:

* **Rates, by road class and time.** For every OSM highway class ``k`` and every (day type,
  30-minute slot), the source's street hails per hour *per kilometre* of cruisable link of
  class ``k``: ``d_k(t) = sum_{links of k} rate(t) / sum_{links of k} length_km``. A link of
  class ``k`` in the target gets ``d_k(t) * length_km * scale``. Classes with under
  ``min_class_km`` of cruisable source road use the all-class density. Slots are local wall
  clock in both cities: Shibuya is assumed to follow Manhattan's daily and weekly profile.
  ``scale`` (default 1) is the operator's knob for "Shibuya is busier / quieter per km".
  Links a taxi may not cruise (motorway, private, pier) get zero, as in models/.
* **Trip lengths and durations**, per class: the pickup-weighted means of the source links'.
* **Fares** are not transferred in dollars: the trip's mean road distance is priced with the
  Tokyo special-wards taxi tariff in yen (from 2022-11-14: 500 JPY up to 1,096 m, then 100 JPY
  per further 255 m, or part of it; the time-distance surcharge in slow traffic is left out, so
  fares are slightly low). The 10/50/90 % quantiles keep the source class's ratio to its mean.
* **Drop-offs**: a fresh ~500 m cell grid over the target network; from a pickup cell, the
  probability of ending in another cell decays as ``exp(-distance / mean trip distance)``, and
  the share of trips ending outside the area is the source's (pickup-weighted).

``version`` is ``transfer-<sha256 prefix>`` of the source table's version, the target network
and the parameters, so the same inputs give the same table (and the same bytes).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.demand import CellGrid, DemandTable
from models.statistics import edge_midpoints, make_grid
from tiles import Graph
from tiles.tags import HIGHWAY_CLASSES

F64 = npt.NDArray[np.float64]

#: Tokyo special wards (23-ku), Musashino, Mitaka: taxi tariff from 2022-11-14 (yen)
TOKYO_INITIAL_FARE_JPY = 500.0
TOKYO_INITIAL_DISTANCE_M = 1096.0
TOKYO_STEP_FARE_JPY = 100.0
TOKYO_STEP_DISTANCE_M = 255.0
_M_PER_DEG_LAT = 111_320.0


def tokyo_fare_jpy(distance_m: F64) -> F64:
    """The distance part of the Tokyo special-wards tariff for road distances (metres)."""
    d = np.asarray(distance_m, dtype=np.float64)
    extra = np.ceil(np.maximum(d - TOKYO_INITIAL_DISTANCE_M, 0.0) / TOKYO_STEP_DISTANCE_M)
    return TOKYO_INITIAL_FARE_JPY + TOKYO_STEP_FARE_JPY * extra


@dataclass(frozen=True)
class TransferConfig:
    scale: float = 1.0  # target hails per km relative to the source's, same class and time
    min_class_km: float = 1.0  # less cruisable source road of a class: use the all-class density
    cell_m: float = 500.0  # drop-off cell size of the target grid
    currency: str = "JPY"

    def __post_init__(self) -> None:
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"scale must be positive, got {self.scale}")
        if not self.min_class_km >= 0:
            raise ValueError(f"min_class_km must be >= 0, got {self.min_class_km}")
        if not self.cell_m >= 50:
            raise ValueError(f"cell_m must be >= 50, got {self.cell_m}")


def _weighted_mean(values: F64, weights: F64, default: float) -> float:
    w = weights.sum()
    return float((values * weights).sum() / w) if w > 0 else default


@dataclass(frozen=True)
class _SourceProfile:
    """What the source table says per road class (index into ``HIGHWAY_CLASSES``)."""

    density: F64  # (classes, 3, 48) street hails per hour per cruisable km
    trip_distance_m: F64  # (classes,) pickup-weighted mean trip distance
    trip_duration_s: F64  # (classes,)
    fare_ratio: F64  # (classes, 3) the fare quantiles' ratio to the mean fare
    all_distance_m: float  # the all-class mean trip distance
    ok_ids: npt.NDArray[np.int64]  # the source's cruisable links (global ids)
    ok_weight: F64  # their pickups over the week profile
    per_class: dict[str, Any]  # the report's per-class figures


def _source_profile(source: DemandTable, sg: Graph, config: TransferConfig) -> _SourceProfile:
    """Densities, trip lengths and durations and fare ratios of ``source`` by road class."""
    s_ids = sg.edge_id.astype(np.int64)
    s_ok = sg.cruise_allowed() & (s_ids < source.n_edges)
    s_km = sg.length_m.astype(np.float64) / 1000.0
    s_cls = sg.highway.astype(np.int64)
    rates = source.pickups_per_h.astype(np.float64)  # (3, 48, n_source)
    weight = rates.sum(axis=(0, 1))  # pickups per link over the week profile
    all_km = float(s_km[s_ok].sum())
    all_density = rates[:, :, s_ids[s_ok]].sum(axis=2) / max(all_km, 1e-9)  # (3, 48) per km
    n_cls = len(HIGHWAY_CLASSES)
    density = np.repeat(all_density[None], n_cls, axis=0)  # (classes, 3, 48)
    dist_cls = np.zeros(n_cls)
    dur_cls = np.zeros(n_cls)
    q_ratio = np.zeros((n_cls, 3))
    w_ok = weight[s_ids[s_ok]]
    all_dist = _weighted_mean(source.trip_distance_m[s_ids[s_ok]].astype(np.float64), w_ok, 0.0)
    all_dur = _weighted_mean(source.trip_duration_s[s_ids[s_ok]].astype(np.float64), w_ok, 0.0)
    fm = source.fare_mean.astype(np.float64)
    fq = source.fare_quantiles.astype(np.float64)
    pos = fm > 0
    ratio_links = np.where(pos[:, None], fq / np.where(pos, fm, 1.0)[:, None], 1.0)
    all_ratio = np.array(
        [
            _weighted_mean(ratio_links[s_ids[s_ok], j], w_ok * pos[s_ids[s_ok]], 1.0)
            for j in range(3)
        ]
    )
    per_class: dict[str, Any] = {}
    for k in range(n_cls):
        m = s_ok & (s_cls == k)
        km = float(s_km[m].sum())
        ids = s_ids[m]
        own = km >= config.min_class_km and km > 0
        if own:
            density[k] = rates[:, :, ids].sum(axis=2) / km
        w = weight[ids]
        dist_cls[k] = _weighted_mean(source.trip_distance_m[ids].astype(np.float64), w, all_dist)
        dur_cls[k] = _weighted_mean(source.trip_duration_s[ids].astype(np.float64), w, all_dur)
        q_ratio[k] = [
            _weighted_mean(ratio_links[ids, j], w * pos[ids], float(all_ratio[j])) for j in range(3)
        ]
        if km > 0:
            per_class[HIGHWAY_CLASSES[k]] = {
                "source_km": round(km, 3),
                "own_density": own,
                "hails_per_km_h_mean": round(float(density[k].mean()), 4),
                "trip_distance_m": round(float(dist_cls[k]), 1),
            }
    return _SourceProfile(
        density, dist_cls, dur_cls, q_ratio, all_dist, s_ids[s_ok], w_ok, per_class
    )


@dataclass(frozen=True)
class _TargetLinks:
    """Per target link (global ids, every edge of the network): rates and trip figures."""

    pickups_per_h: F64  # (3, 48, n)
    trip_distance_m: F64
    trip_duration_s: F64
    fare_mean: F64  # yen, the Tokyo tariff on the class's mean trip distance
    fare_quantiles: F64  # (n, 3)


def _target_links(prof: _SourceProfile, tg: Graph, config: TransferConfig) -> _TargetLinks:
    """Each target link gets its class's density times its length, and its class's trips."""
    t_ids = tg.edge_id.astype(np.int64)
    n = tg.n_edges_total
    t_ok = tg.cruise_allowed()
    t_cls = tg.highway.astype(np.int64)
    t_km = tg.length_m.astype(np.float64) / 1000.0
    out_rates = np.zeros((3, 48, n), dtype=np.float64)
    local_rates = prof.density[t_cls] * (t_km * config.scale)[:, None, None]  # (n_local, 3, 48)
    local_rates[~t_ok] = 0.0
    out_rates[:, :, t_ids] = np.transpose(local_rates, (1, 2, 0))
    distance = np.zeros(n)
    duration = np.zeros(n)
    distance[t_ids] = prof.trip_distance_m[t_cls]
    duration[t_ids] = prof.trip_duration_s[t_cls]
    fare = np.zeros(n)
    fare[t_ids] = tokyo_fare_jpy(prof.trip_distance_m[t_cls])
    quant = np.zeros((n, 3))
    quant[t_ids] = fare[t_ids, None] * prof.fare_ratio[t_cls]
    return _TargetLinks(out_rates, distance, duration, fare, quant)


@dataclass(frozen=True)
class _Dropoffs:
    grid: CellGrid
    edge_cell: npt.NDArray[np.int64]
    dropoff: F64  # (cells, cells + 1): the last column is "outside the area"
    outside: float


def _dropoffs(
    source: DemandTable, prof: _SourceProfile, tg: Graph, config: TransferConfig
) -> _Dropoffs:
    """Drop-offs over a fresh grid of the target network (see the module docstring)."""
    t_ids = tg.edge_id.astype(np.int64)
    grid = make_grid(tg, config.cell_m)
    mid_lon, mid_lat = edge_midpoints(tg)
    edge_cell = np.full(tg.n_edges_total, 0, dtype=np.int64)
    edge_cell[t_ids] = grid.cell_of(mid_lon, mid_lat)
    cx = (np.arange(grid.n_cells) % grid.ncols + 0.5) * grid.cell_deg_lon
    cy = (np.arange(grid.n_cells) // grid.ncols + 0.5) * grid.cell_deg_lat
    lat0 = grid.min_lat + 0.5 * grid.nrows * grid.cell_deg_lat
    kx = _M_PER_DEG_LAT * math.cos(math.radians(lat0))
    dx = (cx[:, None] - cx[None, :]) * kx
    dy = (cy[:, None] - cy[None, :]) * _M_PER_DEG_LAT
    mean_trip_m = max(prof.all_distance_m, config.cell_m)
    kernel = np.exp(-np.hypot(dx, dy) / mean_trip_m)
    kernel /= kernel.sum(axis=1, keepdims=True)
    s_cell_w = np.bincount(
        source.edge_cell[prof.ok_ids].astype(np.int64),
        weights=prof.ok_weight,
        minlength=source.grid.n_cells,
    ).astype(np.float64)
    outside = _weighted_mean(source.dropoff[:, -1].astype(np.float64), s_cell_w, 0.0)
    dropoff = np.concatenate(
        [kernel * (1.0 - outside), np.full((grid.n_cells, 1), outside)], axis=1
    )
    return _Dropoffs(grid, edge_cell, dropoff, outside)


def transfer_demand(
    source: DemandTable,
    source_graph: Graph,
    target_graph: Graph,
    target_network_sha256: str,
    config: TransferConfig = TransferConfig(),
) -> tuple[DemandTable, dict[str, Any]]:
    """The transferred table for ``target_graph`` (every edge) and a report per class."""
    prof = _source_profile(source, source_graph, config)
    links = _target_links(prof, target_graph, config)
    drop = _dropoffs(source, prof, target_graph, config)
    out_rates = links.pickups_per_h
    params = asdict(config)
    version_src = json.dumps(
        [source.version, source.network_sha256, target_network_sha256, params], sort_keys=True
    )
    version = "transfer-" + hashlib.sha256(version_src.encode()).hexdigest()[:12]
    report = {
        "method": "road class x local time density transfer (tools.pipeline.transfer)",
        "source_version": source.version,
        "source_network_sha256": source.network_sha256,
        "config": params,
        "fare_tariff": "Tokyo special wards 2022-11-14: 500 JPY to 1,096 m, +100 JPY per 255 m",
        "dropoff_outside_share": round(drop.outside, 4),
        "mean_trip_distance_m": round(prof.all_distance_m, 1),
        "classes": prof.per_class,
        "area_hails_per_day": round(
            float(sum(out_rates[d].sum() * 0.5 * days for d, days in enumerate((5, 1, 1))) / 7),
            1,
        ),
    }
    table = DemandTable(
        network_sha256=target_network_sha256,
        n_edges=target_graph.n_edges_total,
        pickups_per_h=out_rates.astype(np.float32),
        fare_mean=links.fare_mean.astype(np.float32),
        fare_quantiles=links.fare_quantiles.astype(np.float32),
        trip_duration_s=links.trip_duration_s.astype(np.float32),
        trip_distance_m=links.trip_distance_m.astype(np.float32),
        grid=drop.grid,
        edge_cell=drop.edge_cell.astype(np.int32),
        dropoff=drop.dropoff.astype(np.float32),
        scale_factor=float(source.scale_factor),
        version=version,
        meta={
            "source": "transferred",
            "predicted_model": None,
            "currency": config.currency,
            "transfer": report,
            "note": "no taxi data of this area: demand transferred from "
            f"{source.version} by road class and local time (see tools/pipeline/transfer.py)",
        },
    )
    table.validate()
    return table, report
