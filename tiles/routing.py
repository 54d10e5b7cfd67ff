"""Shortest paths on the edge-based (line) graph, so turn restrictions are honoured exactly.

A path from a position on edge ``s`` (fraction ``fs``) to a position on edge ``t`` (fraction
``ft``) costs the rest of ``s``, every edge in between, and the first part of ``t``. Arcs of the
line graph weigh the cost of the edge they enter, so a search from ``s`` gives every
``dist[t]`` with ``t`` fully traversed.

The searches (:class:`EdgeRouter`: one path, one-to-many, many-to-one) run on a customisable
contraction hierarchy (:mod:`tiles.cch`, RoutingKit's CCH) when ``routingkit-cch`` is installed,
and on ``scipy.sparse.csgraph.dijkstra`` otherwise (:func:`routing_backend` says which; chosen
when :mod:`tiles.cch` is imported). Both give the same costs; between paths of equal cost they may
choose differently.

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

from tiles import cch as _cch
from tiles import tags as T
from tiles.errors import NoRouteError
from tiles.geo import EARTH_RADIUS_M
from tiles.graph import Graph
from tiles.matching import MatchConfig, match_fix
from tiles.store import TileStore

Weight = Literal["time", "distance"]
Backend = Literal["cch", "dijkstra"]
DEFAULT_AVOID = T.FLAG_PRIVATE | T.FLAG_PIER
F64 = npt.NDArray[np.float64]


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


def routing_backend() -> Backend:
    """The search engine of :class:`EdgeRouter` and :func:`edge_path` in this process."""
    return "cch" if _cch.ENABLED else "dijkstra"


class EdgeRouter:
    """Exact searches on one graph's edge-based graph under one cost and one allowed mask.

    A path from ``src`` to ``dst`` costs every link after ``src`` up to and including ``dst``
    (the line graph's arcs weigh the link they enter); links outside ``allowed`` are never
    entered (``src`` itself may be one). ``backend`` defaults to :func:`routing_backend`. On the
    CCH a path is optimal under weights rounded to ``1 / scale`` cost units and its cost is the
    float sum along it, so it exceeds Dijkstra's by at most ``0.5 / scale`` a link of the two paths
    (``scale`` is 10,000 on city graphs: 0.05 ms a link); the one-to-many and many-to-one
    costs are the rounded sums (the same bound). Build one per cost and mask and keep it: the
    CCH's order is cached per graph (and on disk), its customisation takes a few ms.
    """

    def __init__(
        self,
        g: Graph,
        cost: npt.ArrayLike,
        allowed: npt.ArrayLike | None = None,
        *,
        backend: Backend | None = None,
    ) -> None:
        # no reference to ``g``: the caches hold routers weakly keyed by their graph
        self.cost = np.asarray(cost, dtype=np.float64)
        self.allowed = (
            np.ones(g.n, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
        )
        if self.cost.shape != (g.n,) or self.allowed.shape != (g.n,):
            raise ValueError("cost and allowed need one value per link of the graph")
        self.backend: Backend = backend if backend is not None else routing_backend()
        if self.backend == "cch" and not _cch.ENABLED and _cch.library_version() is None:
            raise ValueError("the cch backend needs routingkit-cch (pip install nagashi[cch])")
        self._n = g.n
        self._cost_list: list[float] = self.cost.tolist()
        self._metric: _cch.Metric | None = None
        self._csr: sp.csr_matrix | None = None
        self._csr_t: sp.csr_matrix | None = None
        if self.backend == "cch":
            self._metric = _cch.Metric(_cch.hierarchy(g), self.cost, self.allowed)
        else:
            self._csr = g.line_graph(self.cost, self.allowed)

    @property
    def scale(self) -> float | None:
        """Integer weight units per cost unit on the CCH (None on Dijkstra: exact floats)."""
        return self._metric.scale if self._metric is not None else None

    def _check(self, *links: int) -> None:
        for x in links:
            if not 0 <= x < self._n:
                raise ValueError(f"link {x} is not a local index of this graph (0..{self._n - 1})")

    def path(self, src: int, dst: int, limit: float | None = None) -> tuple[list[int], float]:
        """Local links from ``src`` to ``dst`` (both included) and the cost; NoRouteError when
        there is no legal path. ``limit`` (cost units) only speeds up Dijkstra: a target
        beyond it is searched again without one, so the answer is exact either way."""
        if src == dst:
            return [src], 0.0
        if not (0 <= src < self._n and 0 <= dst < self._n):
            self._check(src, dst)
        if self._metric is not None:
            p = self._metric.path(src, dst)
            if p is None:
                raise NoRouteError("no legal path between the two places")
            c = self._cost_list
            return p, sum(map(c.__getitem__, p)) - c[src]
        assert self._csr is not None
        return _dijkstra_path(self._csr, src, dst, limit)

    def costs_from(self, src: int, targets: npt.ArrayLike, limit: float | None = None) -> F64:
        """Cost from ``src`` to each of ``targets`` (inf: unreachable, or above ``limit``)."""
        t = np.asarray(targets, dtype=np.int64).ravel()
        self._check(src, *_bounds(t))
        if self._metric is not None:
            out = self._metric.distances_from(src, t) if t.size else np.zeros(0)
        else:
            lim = np.inf if limit is None else limit
            out = dijkstra(self._csr, directed=True, indices=src, limit=lim)[t]
        return _limited(out, limit)

    def costs_to(self, sources: npt.ArrayLike, dst: int, limit: float | None = None) -> F64:
        """Cost from each of ``sources`` to ``dst`` (inf: unreachable, or above ``limit``)."""
        s = np.asarray(sources, dtype=np.int64).ravel()
        self._check(dst, *_bounds(s))
        if self._metric is not None:
            out = self._metric.distances_to(s, dst) if s.size else np.zeros(0)
        else:
            if self._csr_t is None:
                assert self._csr is not None
                self._csr_t = self._csr.T.tocsr()
            lim = np.inf if limit is None else limit
            out = dijkstra(self._csr_t, directed=True, indices=dst, limit=lim)[s]
        return _limited(out, limit)


def _bounds(a: npt.NDArray[np.int64]) -> tuple[int, ...]:
    return (int(a.min()), int(a.max())) if a.size else ()


def _limited(d: F64, limit: float | None) -> F64:
    d = np.asarray(d, dtype=np.float64)
    if limit is not None:
        d[d > limit] = np.inf
    return d


def _dijkstra_path(
    m: sp.csr_matrix, src: int, dst: int, limit: float | None
) -> tuple[list[int], float]:
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


_ROUTER_CACHE: weakref.WeakKeyDictionary[Graph, dict[tuple[object, ...], EdgeRouter]] = (
    weakref.WeakKeyDictionary()
)


def router(
    g: Graph,
    weight: Weight = "time",
    avoid_flags: int = DEFAULT_AVOID,
    minute_of_week: int | None = None,
) -> EdgeRouter:
    """The graph's :class:`EdgeRouter` for this weight and these rules (cached per graph)."""
    per = _ROUTER_CACHE.get(g)
    if per is None:
        per = _ROUTER_CACHE.setdefault(g, {})
    key = (weight, avoid_flags, minute_of_week, _cch.ENABLED)
    r = per.get(key)
    if r is None:
        r = EdgeRouter(g, edge_cost(g, weight), allowed_mask(g, avoid_flags, minute_of_week))
        if len(per) > 16:
            per.clear()
        per[key] = r
    return r


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
    cost units) bounds the Dijkstra search for speed: Dijkstra settles every state cheaper
    than the limit, so a target found within it has its exact cost; if it is not found, the
    search is repeated without a limit. The CCH needs no limit (see :class:`EdgeRouter`).
    """
    global _LAST
    if src == dst:
        return [src], 0.0
    key = (weight, avoid_flags, minute_of_week, _cch.ENABLED)
    last = _LAST  # one read: another thread may replace it
    if last is not None and last[1] == key and last[0]() is g:
        r = last[2]
    else:
        r = router(g, weight, avoid_flags, minute_of_week)
        _LAST = (weakref.ref(g), key, r)
    return r.path(src, dst, limit)


#: the graph (weakly), rules and router of the last edge_path: a cab's queries repeat them,
#: and this skips the weak dictionary's lookup (about 1 us of a 15 us query)
_LAST: tuple[weakref.ref[Graph], tuple[object, ...], EdgeRouter] | None = None


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
    allowed = router(g, weight, avoid_flags, minute_of_week).allowed  # cached with the router
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
