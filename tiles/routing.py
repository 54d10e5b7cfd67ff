"""Shortest paths on the edge-based (line) graph, so turn restrictions are honoured exactly.

A path from a position on edge ``s`` (fraction ``fs``) to a position on edge ``t`` (fraction
``ft``) costs the rest of ``s``, every edge in between, and the first part of ``t``. Arcs of the
line graph weigh the cost of the edge they enter, so one ``scipy.sparse.csgraph.dijkstra`` from
``s`` gives every ``dist[t]`` with ``t`` fully traversed.

Which edges a route may enter: by default never a private road or a pier (they may be where the
cab starts, never on the way), and, given a time, no link inside a no-entry window then.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from tiles import tags as T
from tiles.errors import NoRouteError
from tiles.geo import EARTH_RADIUS_M
from tiles.graph import Graph
from tiles.matching import MatchConfig, match_fix
from tiles.store import TileStore

Weight = Literal["time", "distance"]
DEFAULT_AVOID = T.FLAG_PRIVATE | T.FLAG_PIER


@dataclass(frozen=True)
class Route:
    edges: tuple[int, ...]  # global edge ids in driving order
    length_m: float
    duration_s: float
    coordinates: tuple[tuple[float, float], ...] = field(repr=False)

    def to_json(self) -> dict[str, object]:
        return {
            "length_m": round(self.length_m, 3),
            "duration_s": round(self.duration_s, 3),
            "edges": list(self.edges),
            "coordinates": [[round(x, 7), round(y, 7)] for x, y in self.coordinates],
        }


_LINE_CACHE: weakref.WeakKeyDictionary[Graph, dict[tuple[object, ...], sp.csr_matrix]] = (
    weakref.WeakKeyDictionary()
)


def edge_cost(g: Graph, weight: Weight) -> npt.NDArray[np.float64]:
    if weight == "time":
        return g.travel_time_s
    if weight == "distance":
        return np.asarray(g.length_m, dtype=np.float64)
    raise ValueError(f"unknown weight {weight!r}")


def allowed_mask(
    g: Graph, avoid_flags: int = DEFAULT_AVOID, minute_of_week: int | None = None
) -> npt.NDArray[np.bool_]:
    ok = (g.flags & avoid_flags) == 0
    if minute_of_week is not None:
        ok &= ~g.closed_at(minute_of_week)
    return np.asarray(ok)


def line_graph_cached(
    g: Graph, weight: Weight, avoid_flags: int, minute_of_week: int | None
) -> sp.csr_matrix:
    per = _LINE_CACHE.setdefault(g, {})
    key = (weight, avoid_flags, minute_of_week)
    m = per.get(key)
    if m is None:
        m = g.line_graph(edge_cost(g, weight), allowed_mask(g, avoid_flags, minute_of_week))
        if len(per) > 16:
            per.clear()
        per[key] = m
    return m


def edge_path(
    g: Graph,
    src: int,
    dst: int,
    weight: Weight = "time",
    avoid_flags: int = DEFAULT_AVOID,
    minute_of_week: int | None = None,
    limit: float | None = None,
) -> tuple[list[int], float]:
    """Local edge path from ``src`` to ``dst`` (both fully traversed after ``src``) and its cost.

    The cost excludes ``src`` and includes ``dst``, as the line graph's arcs do. ``limit`` (in
    cost units) bounds the search for speed: Dijkstra settles every state cheaper than the
    limit, so a target found within it has its exact cost; if it is not found, the search is
    repeated without a limit.
    """
    if src == dst:
        return [src], 0.0
    m = line_graph_cached(g, weight, avoid_flags, minute_of_week)
    dist, pred = dijkstra(
        m,
        directed=True,
        indices=src,
        return_predecessors=True,
        limit=limit if limit is not None else np.inf,
    )
    if not math.isfinite(dist[dst]) and limit is not None:
        # nothing within the limit: search without one (still exact either way)
        dist, pred = dijkstra(m, directed=True, indices=src, return_predecessors=True)
    if not math.isfinite(dist[dst]):
        raise NoRouteError("no legal path between the two places")
    path = [dst]
    while path[-1] != src:
        p = int(pred[path[-1]])
        if p < 0:
            raise NoRouteError("no legal path between the two places")
        path.append(p)
    path.reverse()
    return path, float(dist[dst])


def _route_on(
    g: Graph,
    origin: tuple[float, float],
    dest: tuple[float, float],
    weight: Weight,
    avoid_flags: int,
    minute_of_week: int | None,
    heading_deg: float | None,
    match_config: MatchConfig,
) -> Route:
    allowed = allowed_mask(g, avoid_flags, minute_of_week)
    # a route needs each end's best candidate only (not the runner-ups of an ambiguity check)
    match_config = dataclasses.replace(match_config, max_candidates=1)
    m0 = match_fix(
        g,
        origin[0],
        origin[1],
        heading_deg,
        10.0 if heading_deg is not None else None,
        match_config,
    )
    m1 = match_fix(g, dest[0], dest[1], None, None, match_config, allowed=allowed)
    s = g.local_index(m0.best.edge_id)
    t = g.local_index(m1.best.edge_id)
    fs, ft = m0.best.fraction, m1.best.fraction
    cost = edge_cost(g, weight)
    if s == t and ft >= fs:
        path = [s]
        total = (ft - fs) * cost[s]
    else:
        crow_m = _crow_m(origin, dest)
        # a bound most city routes respect (1.5x the crow-fly distance at 30 km/h, plus a
        # minute); a route beyond it is found by the exact unlimited retry in edge_path
        limit = (1.5 * crow_m / (30 / 3.6) + 60.0) if weight == "time" else 1.5 * crow_m + 500.0
        path, dist = edge_path(g, s, t, weight, avoid_flags, minute_of_week, limit)
        total = (1 - fs) * cost[s] + dist - (1 - ft) * cost[t]
    length = _partial_sum(np.asarray(g.length_m, dtype=np.float64), path, fs, ft)
    duration = _partial_sum(g.travel_time_s, path, fs, ft)
    if weight == "time":
        duration = float(total)
    coords = _path_coords(g, path, fs, ft, (m0.best.lon, m0.best.lat), (m1.best.lon, m1.best.lat))
    return Route(tuple(g.edge_id[path].tolist()), float(length), float(duration), coords)


def _crow_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance of two points (scalar; ``haversine_m`` is for arrays)."""
    la1, la2 = math.radians(a[1]), math.radians(b[1])
    h = (
        math.sin((la2 - la1) / 2) ** 2
        + math.cos(la1) * math.cos(la2) * math.sin(math.radians(b[0] - a[0]) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(max(h, 0.0), 1.0)))


def _partial_sum(values: npt.NDArray[np.float64], path: list[int], fs: float, ft: float) -> float:
    if len(path) == 1:
        return float(max(ft - fs, 0.0) * values[path[0]])
    inner = float(values[path[1:-1]].sum()) if len(path) > 2 else 0.0
    return float((1 - fs) * values[path[0]] + inner + ft * values[path[-1]])


def _path_coords(
    g: Graph,
    path: list[int],
    fs: float,
    ft: float,
    start: tuple[float, float],
    end: tuple[float, float],
) -> tuple[tuple[float, float], ...]:
    """Snapped start, the shape points driven, snapped end (vectorised gather)."""
    p = np.asarray(path, dtype=np.int64)
    lo = g.geom_offsets[p] + 1  # skip each edge's first point (the previous edge's last)
    hi = g.geom_offsets[p + 1].copy()
    n0 = int(g.geom_offsets[p[0] + 1] - g.geom_offsets[p[0]])
    lo[0] = g.geom_offsets[p[0]] + 1 + int(fs * (n0 - 1))
    n1 = int(g.geom_offsets[p[-1] + 1] - g.geom_offsets[p[-1]])
    hi[-1] = max(int(lo[-1]), int(g.geom_offsets[p[-1]]) + math.ceil(ft * (n1 - 1)))
    counts = np.maximum(hi - lo, 0)
    total = int(counts.sum())
    ends = np.cumsum(counts)
    idx = np.arange(total, dtype=np.int64) + np.repeat(lo - (ends - counts), counts)
    pts = g.geom_lonlat[idx]
    return (start, *map(tuple, pts.tolist()), end)


def shortest_path(
    store: TileStore,
    origin: tuple[float, float],
    dest: tuple[float, float],
    weight: Weight = "time",
    *,
    avoid_flags: int = DEFAULT_AVOID,
    minute_of_week: int | None = None,
    heading_deg: float | None = None,
    margin_m: float = 1500.0,
    match_config: MatchConfig = MatchConfig(),
) -> Route:
    """Fastest (or shortest) legal route between two points, across tile borders.

    Loads the tiles around both points (padded by ``margin_m`` or half their distance); if no
    path lies inside that area, retries on the whole network.
    """
    lon0, lat0 = origin
    lon1, lat1 = dest
    pad_deg = max(margin_m, 0.0) / 111_195.0
    span = max(abs(lon1 - lon0), abs(lat1 - lat0)) / 2
    pad = max(pad_deg, span)
    tiles = store.tile_ids_in_bbox(
        min(lon0, lon1) - pad, min(lat0, lat1) - pad, max(lon0, lon1) + pad, max(lat0, lat1) + pad
    )
    if not tiles:
        raise NoRouteError("both points lie outside the road network")
    g = store.working_graph(tiles)
    try:
        return _route_on(
            g, origin, dest, weight, avoid_flags, minute_of_week, heading_deg, match_config
        )
    except NoRouteError:
        if len(tiles) == len(store.tiles):
            raise
    return _route_on(
        store.all(), origin, dest, weight, avoid_flags, minute_of_week, heading_deg, match_config
    )
