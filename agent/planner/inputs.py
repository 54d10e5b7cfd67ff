"""What a tick passes to the planner, in the planner's terms: the minute of week and its
week's Monday, the business-area mask, the cruising speed share, the recent-pass ages."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely

from agent.planner.errors import PlannerError
from models.demand import DemandTable
from tiles.graph import Graph

Bool = npt.NDArray[np.bool_]
#: seconds since a vacant cab last passed each link: a mapping global edge id -> seconds, or an
#: array aligned to the graph's links (``inf``: unknown, i.e. long ago)
PassAges = Mapping[int, float] | npt.NDArray[np.floating[Any]]


def monday_of(when: dt.datetime) -> dt.date:
    """Local date of the Monday of the week of a local wall-clock time (minute of week 0)."""
    return when.date() - dt.timedelta(days=when.weekday())


def minute_of_week_of(when: dt.datetime) -> float:
    """Fractional minute of week (Monday 00:00 = 0) of a local wall-clock time."""
    return (
        when.weekday() * 1440
        + when.hour * 60
        + when.minute
        + (when.second + when.microsecond / 1e6) / 60.0
    )


def area_mask(graph: Graph, polygon: shapely.Geometry) -> Bool:
    """Links with both ends inside the business area polygon (lon, lat)."""
    shapely.prepare(polygon)  # in place (its return value differs across shapely versions)
    return np.asarray(
        shapely.contains_xy(polygon, graph.u_lon, graph.u_lat)
        & shapely.contains_xy(polygon, graph.v_lon, graph.v_lat)
    )


def speed_factor_from_demand(table: DemandTable, graph: Graph) -> float:
    """Cruising speed share measured from trips: the pickup-weighted median occupied speed
    (``trip_distance_m / trip_duration_s`` of the links' trips) over the length-weighted mean
    free-flow speed of the cruisable links of ``graph``. Clamped to (0.05, 1]."""
    ids = graph.edge_id.astype(np.int64)
    ok = (ids < table.n_edges) & graph.cruise_allowed()
    ids = ids[ok]
    dur = table.trip_duration_s[ids].astype(np.float64)
    dist = table.trip_distance_m[ids].astype(np.float64)
    weight = table.pickups_per_h[:, :, ids].sum(axis=(0, 1)).astype(np.float64)
    use = (dur > 0) & (dist > 0) & (weight > 0)
    if not use.any():
        return 1.0
    speed = dist[use] / dur[use]
    order = np.argsort(speed, kind="stable")
    cum = np.cumsum(weight[use][order])
    median_mps = float(speed[order][int(np.searchsorted(cum, cum[-1] / 2.0))])
    lengths = np.asarray(graph.length_m, dtype=np.float64)[ok]
    free_mps = float(lengths.sum() / graph.travel_time_s[ok].sum())
    return float(min(max(median_mps / free_mps, 0.05), 1.0))


def pass_age_array(graph: Graph, ages: PassAges | None) -> npt.NDArray[np.float64] | None:
    """:data:`PassAges` as an array over ``graph``'s local links (``inf`` where unknown), or
    None when no pass is known. Links not in ``graph`` are ignored; negative ages are 0."""
    if ages is None:
        return None
    if isinstance(ages, Mapping):
        out = np.full(graph.n, np.inf, dtype=np.float64)
        if ages:
            ids = np.fromiter(ages.keys(), dtype=np.int64, count=len(ages))
            vals = np.fromiter(ages.values(), dtype=np.float64, count=len(ages))
            loc = graph.local(ids)
            ok = loc >= 0
            np.minimum.at(out, loc[ok], vals[ok])
    else:
        out = np.array(ages, dtype=np.float64)
        if out.shape != (graph.n,):
            raise PlannerError(f"last_pass_age_s has {out.shape} values for {graph.n} links")
    out[np.isnan(out)] = np.inf
    return np.maximum(out, 0.0)
