"""Route queries: nagashi (tiled, from SQLite, cold and warm; on its CCH and on Dijkstra) against
scipy's Dijkstra and RoutingKit's CCH.

Builds the tiles from ``--osm`` (timed), then answers the same seeded point-to-point queries
in one run:

* ``nagashi_cold``: a fresh :class:`~tiles.TileStore` per query (tiles read from SQLite);
* ``nagashi_warm``: one store, caches warm (what the agent sees), over the queries that have a
  route of two or more edges, the same ones the scipy reference answers below; queries with no
  legal route (a one-way street leaving the clipped extract, say) are timed apart
  (``nagashi_warm_no_route``): nagashi searches the whole network before it says so. It runs
  on :func:`tiles.routing.routing_backend` (``backend``); ``nagashi_warm_dijkstra`` is the same
  with the scipy fallback forced (what an install without ``routingkit-cch`` runs);
* ``nagashi_cch`` / ``nagashi_dijkstra``: nagashi's own edge-to-edge query,
  :func:`tiles.edge_path` on the whole graph (path and float cost), on the CCH
  (:mod:`tiles.cch`) and on the Dijkstra fallback, over the same link pairs as the ``cch``
  peer below; their costs are compared (``nagashi_cch_cost_ratio_min/max``, CCH over Dijkstra,
  and ``nagashi_cch_cost_max_abs_diff``); ``nagashi_cch_build_s`` is the order, contraction
  and customisation (the order computed, not read from the disk cache:
  ``nagashi_cch_build_cached_s`` is with it); ``nagashi_cch_library_only`` is the library's
  query alone on the same hierarchy (path read), so the difference is nagashi's Python
  overhead (``nagashi_cch_python_overhead_median_ms``);
* ``scipy``: the same point-to-point query done the plain scipy way on the same edge-based graph
  held whole in memory: ``scipy.spatial.cKDTree`` over edge shape points to find the source and
  target edges, ``scipy.sparse.csgraph.dijkstra`` from the source, path read from the
  predecessors;
* ``scipy_dijkstra_only``: just that Dijkstra call with both edges given for free (a lower
  bound no point-to-point query can reach; reported for transparency);
* ``cch`` (when ``routingkit-cch`` is installed, an optional peer: x86_64 wheels only): a
  customisable contraction hierarchy (RoutingKit's CCH) on the same edge-based graph (states are
  links, arcs the legal turns: turn restrictions and avoided links included), weights in
  integer milliseconds; the same edge-to-edge queries with the path, and its travel times
  checked against Dijkstra's (``cch_travel_time_ratio_min/max``). Built once (``cch_build_s``:
  order, contraction and customisation). ``cch`` reads the distance only; ``cch_with_path``
  also reads the node path, the work ``nagashi_cch`` does (its path and cost).
  ``ratio_p95_nagashi_cch_over_cch`` and ``..._over_cch_with_path`` are the goal's ratios.

Timings alternate query by query (each query three times a side, its fastest time kept), so
every side sees the same machine load.

Peak RSS of the agent side (open the Manhattan tiles, load every tile, answer a route) is
measured in a fresh subprocess so the build's memory does not count.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

from tiles import cch as tiles_cch
from tiles.build import build_tiles
from tiles.fileio import real_data_dir
from tiles.graph import Graph
from tiles.routing import (
    DEFAULT_AVOID,
    EdgeRouter,
    Route,
    edge_path,
    routing_backend,
    shortest_path,
)
from tiles.store import TileStore

DEFAULT_OSM = str(real_data_dir() / "osm" / "nyc_manhattan_midtown.osm.pbf")
ROUNDS = 3  # timings per query and side; the fastest counts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--osm", default=DEFAULT_OSM, help="OSM extract to build and query")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--seed", type=int, default=7)


def _stats(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1000.0
    return {
        "median_ms": round(float(np.median(a)), 4),
        "p95_ms": round(float(np.percentile(a, 95)), 4),
    }


_RSS_PROBE = """
import json, resource, sys
from tiles import TileStore, shortest_path
s = TileStore(sys.argv[1]); s.all()
a = [float(x) for x in sys.argv[2:6]]
try:
    shortest_path(s, (a[0], a[1]), (a[2], a[3]))
except Exception:
    pass
# VmHWM: this process's own peak (ru_maxrss keeps the forked parent's across the exec)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    with open("/proc/self/status") as f:
        peak = next(int(x.split()[1]) for x in f if x.startswith("VmHWM:"))
except (OSError, StopIteration):
    pass
print(json.dumps({"peak_rss_mb": peak / 1024}))
"""


def _cch_peer(g: Any, m: Any) -> dict[str, Any] | None:
    """RoutingKit's CCH on the line graph ``m`` (CSR: arc e -> f weighs f), or None."""
    try:
        import routingkit_cch as rk
    except ImportError:
        return None
    t = time.perf_counter()
    coo = m.tocoo()
    tail, head = coo.row.astype(np.int64).tolist(), coo.col.astype(np.int64).tolist()
    weights = np.maximum(np.rint(coo.data * 1000.0), 1).astype(np.int64).tolist()
    lat = ((g.u_lat + g.v_lat) / 2).tolist()
    lon = ((g.u_lon + g.v_lon) / 2).tolist()
    order = rk.compute_order_inertial(g.n, tail, head, lat, lon)
    graph = rk.CCH(order, tail, head, False)
    metric = rk.CCHMetric(graph, weights)
    query = rk.CCHQuery(metric)
    return {
        "cch": graph,
        "metric": metric,
        "query": query,
        "build_s": time.perf_counter() - t,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="nagashi-bench-route-") as tmp,
        _order_cache_in(Path(tmp) / "cache"),
    ):
        t0 = time.perf_counter()
        path, summary = build_tiles(args.osm, Path(tmp))
        build_s = time.perf_counter() - t0
        store = TileStore(path)
        g = store.all()
        own_build = _own_cch_build(g)  # before any query: the order is computed, not cached
        pairs = _query_pairs(g, args.queries, args.seed)
        cold: list[float] = []
        routes: list[Route | None] = []
        for o, d in pairs:
            t = time.perf_counter()
            with TileStore(path) as fresh, contextlib.suppress(Exception):
                shortest_path(fresh, o, d)
            cold.append(time.perf_counter() - t)
        for o, d in pairs:  # one warm-up pass fills the caches (as a running agent has)
            try:
                routes.append(shortest_path(store, o, d))
            except Exception:
                routes.append(None)
        m = g.line_graph(g.travel_time_s, (g.flags & DEFAULT_AVOID) == 0)
        cch = _cch_peer(g, m)
        times = _warm_rounds(store, g, m, cch, pairs, routes)
        mid = next(p for p, r in zip(pairs, routes, strict=True) if r is not None)
        agent_rss = _agent_peak_rss_mb(path, mid)
        store.close()
    warm_s, ref_s = _stats(times["warm"]), _stats(times["ref"])
    peer: dict[str, Any] = {"cch": None}
    if cch is not None:
        peer = _cch_figures(cch, times, warm_s)
    return {
        "osm": str(args.osm),
        "queries": len(pairs),
        "nodes": summary["nodes"],
        "directed_edges": summary["directed_edges"],
        "tiles": summary["tiles"],
        "build_s": round(build_s, 3),
        "backend": routing_backend(),
        "nagashi_cold": _stats(cold),
        "nagashi_warm": warm_s,
        "nagashi_warm_dijkstra": _stats(times["warm_dijkstra"]),
        "nagashi_warm_no_route": {
            "queries": len(times["warm_none"]),
            **_stats(times["warm_none"] or [0.0]),
        },
        "nagashi_warm_route_duration_max_abs_diff_s": _max_abs(times["warm_duration_diff"]),
        "scipy": ref_s,
        "scipy_dijkstra_only": _stats(times["ref_only"]),
        "ratio_warm_p95_nagashi_over_scipy": round(warm_s["p95_ms"] / ref_s["p95_ms"], 3),
        "ratio_warm_median_nagashi_over_scipy": round(warm_s["median_ms"] / ref_s["median_ms"], 3),
        **_own_figures(times, own_build),
        **peer,
        "agent_peak_rss_mb": round(agent_rss, 1),
        "bench_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


@contextlib.contextmanager
def _order_cache_in(folder: Path) -> Iterator[None]:
    """Keep the CCH orders of the bench's own tiles in its temporary folder."""
    old = os.environ.get(tiles_cch.CACHE_ENV)
    os.environ[tiles_cch.CACHE_ENV] = str(folder)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(tiles_cch.CACHE_ENV, None)
        else:
            os.environ[tiles_cch.CACHE_ENV] = old


def _own_cch_build(g: Graph) -> dict[str, float] | None:
    """Seconds to build nagashi's CCH on ``g``: order computed, then read from the disk cache
    (each with the contraction and the customisation)."""
    if not tiles_cch.ENABLED:
        return None
    allowed = (g.flags & DEFAULT_AVOID) == 0
    out: dict[str, float] = {}
    for name in ("computed", "disk"):
        t = time.perf_counter()
        h = tiles_cch.Hierarchy(g)
        tiles_cch.Metric(h, g.travel_time_s, allowed)
        out[name] = time.perf_counter() - t
        assert h.order_source == name, h.order_source
    return out


def _max_abs(xs: list[float]) -> float | None:
    return round(max(abs(x) for x in xs), 6) if xs else None


def _own_figures(times: dict[str, list[float]], build: dict[str, float] | None) -> dict[str, Any]:
    """nagashi's edge-to-edge query on its CCH and on Dijkstra, and their costs compared."""
    out: dict[str, Any] = {"nagashi_dijkstra": _stats(times["own_dijkstra"])}
    if build is None:
        return {**out, "nagashi_cch": None}
    ratio = times["own_cost_ratio"]
    return {
        **out,
        "nagashi_cch": _stats(times["own_cch"]),
        "nagashi_cch_library_only": _stats(times["own_library"]),
        "nagashi_cch_build_s": round(build["computed"], 3),
        "nagashi_cch_build_cached_s": round(build["disk"], 3),
        "nagashi_cch_cost_ratio_min": round(min(ratio), 9) if ratio else None,
        "nagashi_cch_cost_ratio_max": round(max(ratio), 9) if ratio else None,
        "nagashi_cch_cost_max_abs_diff": _max_abs(times["own_cost_diff"]),
        "nagashi_cch_queries_compared": len(ratio),
        "nagashi_cch_python_overhead_median_ms": round(
            _stats(times["own_cch"])["median_ms"] - _stats(times["own_library"])["median_ms"], 4
        ),
        "ratio_p95_nagashi_dijkstra_over_nagashi_cch": round(
            _stats(times["own_dijkstra"])["p95_ms"] / _stats(times["own_cch"])["p95_ms"], 1
        ),
    }


_Point = tuple[float, float]


def _query_pairs(g: Graph, queries: int, seed: int) -> list[tuple[_Point, _Point]]:
    """Random (origin, destination) points part way along two cruisable links."""
    rng = np.random.default_rng(seed)
    ok = np.flatnonzero((g.flags & DEFAULT_AVOID) == 0)
    pairs = []
    for _ in range(queries):
        a, b = rng.choice(ok, 2, replace=False)
        fa, fb = rng.uniform(0.2, 0.8, 2)
        pa = g.geometry(int(a))[0] * (1 - fa) + g.geometry(int(a))[-1] * fa
        pb = g.geometry(int(b))[0] * (1 - fb) + g.geometry(int(b))[-1] * fb
        pairs.append(((float(pa[0]), float(pa[1])), (float(pb[0]), float(pb[1]))))
    return pairs


def _scipy_query(g: Graph, m: Any) -> Callable[[_Point, _Point], float]:
    """The peer: snap both points with a cKDTree, scipy's Dijkstra from the origin's link,
    walk the predecessors back; returns its seconds per query."""
    pts = g.geom_lonlat
    owner = np.repeat(np.arange(g.n), np.diff(g.geom_offsets))
    coslat = np.cos(np.radians(float(pts[:, 1].mean())))
    kd = cKDTree(np.column_stack([pts[:, 0] * coslat, pts[:, 1]]))
    allowed = (g.flags & DEFAULT_AVOID) == 0

    def scipy_query(o: _Point, d: _Point) -> float:
        t = time.perf_counter()
        _, i_o = kd.query((o[0] * coslat, o[1]))
        _, i_d = kd.query((d[0] * coslat, d[1]), k=8)
        s = int(owner[i_o])
        cands = owner[np.atleast_1d(i_d)]
        t_ = int(next((c for c in cands if allowed[c]), cands[0]))
        _, pred = dijkstra(m, directed=True, indices=s, return_predecessors=True)
        node = t_
        while node != s and node >= 0:
            node = int(pred[node])
        return time.perf_counter() - t

    return scipy_query


class _Timers:
    """One timed call per way of answering a query on ``g`` (seconds)."""

    def __init__(self, store: TileStore, g: Graph, m: Any, cch: dict[str, Any] | None) -> None:
        self.store, self.g, self.m, self.cch = store, g, m, cch
        self.scipy_query = _scipy_query(g, m)
        self.own_cch = tiles_cch.ENABLED
        allowed = (g.flags & DEFAULT_AVOID) == 0
        self.dijkstra_router = EdgeRouter(g, g.travel_time_s, allowed, backend="dijkstra")
        self.raw = (
            tiles_cch.Metric(tiles_cch.hierarchy(g), g.travel_time_s, allowed)
            if self.own_cch
            else None
        )

    def nagashi(self, o: _Point, d: _Point) -> float:
        t = time.perf_counter()
        with contextlib.suppress(Exception):
            shortest_path(self.store, o, d)
        return time.perf_counter() - t

    def nagashi_dijkstra(self, o: _Point, d: _Point) -> float:
        tiles_cch.ENABLED = False
        try:
            return self.nagashi(o, d)
        finally:
            tiles_cch.ENABLED = self.own_cch

    def own_library(self, s: int, t_: int) -> float:
        """The library call alone on nagashi's own hierarchy (its path read, no wrapper)."""
        assert self.raw is not None
        t = time.perf_counter()
        res = self.raw.query.run(s, t_)
        _ = res.distance, res.node_path
        del res
        return time.perf_counter() - t

    def own(self, s: int, t_: int) -> float:
        t = time.perf_counter()
        edge_path(self.g, s, t_)
        return time.perf_counter() - t

    def own_dijkstra(self, s: int, t_: int) -> float:
        t = time.perf_counter()
        self.dijkstra_router.path(s, t_)
        return time.perf_counter() - t

    def cch_only(self, s: int, t_: int) -> tuple[float, int | None]:
        assert self.cch is not None
        t = time.perf_counter()
        res = self.cch["query"].run(s, t_)
        d: int | None = res.distance
        del res
        return time.perf_counter() - t, d

    def cch_time(self, s: int, t_: int) -> float:
        return self.cch_only(s, t_)[0]

    def cch_with_path(self, s: int, t_: int) -> float:
        assert self.cch is not None
        t = time.perf_counter()
        res = self.cch["query"].run(s, t_)
        _ = res.distance, res.node_path
        del res
        return time.perf_counter() - t

    def dijkstra_only(self, s: int) -> float:
        t = time.perf_counter()
        dijkstra(self.m, directed=True, indices=s, return_predecessors=True)
        return time.perf_counter() - t

    def fast(self) -> list[tuple[str, Callable[[int, int], float]]]:
        """The microsecond queries (the CCHs), timed apart from the millisecond ones."""
        out: list[tuple[str, Callable[[int, int], float]]] = []
        if self.own_cch:
            out += [("own_cch", self.own), ("own_library", self.own_library)]
        if self.cch is not None:
            out += [("cch_s", self.cch_time), ("cch_path_s", self.cch_with_path)]
        return out


_WARM_KEYS = [
    "warm",
    "warm_none",
    "warm_dijkstra",
    "warm_duration_diff",
    "ref",
    "ref_only",
    "own_cch",
    "own_dijkstra",
    "own_library",
    "own_cost_ratio",
    "own_cost_diff",
    "cch_s",
    "cch_path_s",
    "cch_ratio",
]


def _time_query(
    tm: _Timers, q: int, o: _Point, d: _Point, src: int, dst: int
) -> dict[str, list[float]]:
    """Each way timed ROUNDS times, the sides alternating, so every side sees the same machine
    load and a stray scheduler pause does not land on one side only. The microsecond queries
    are timed apart, each ROUNDS times in a row and in an order rotated query by query, so that
    none of them always comes first after the millisecond ones have flushed the CPU caches."""
    runs: dict[str, list[float]] = {k: [] for k in _WARM_KEYS}
    for _ in range(ROUNDS):
        runs["warm"].append(tm.nagashi(o, d))
        runs["warm_dijkstra"].append(tm.nagashi_dijkstra(o, d))
        runs["ref"].append(tm.scipy_query(o, d))
        runs["ref_only"].append(tm.dijkstra_only(src))
        runs["own_dijkstra"].append(tm.own_dijkstra(src, dst))
    fast = tm.fast()
    for i in range(len(fast)):
        name, fn = fast[(q + i) % len(fast)]
        runs[name] = [fn(src, dst) for _ in range(ROUNDS)]
    return runs


def _check_costs(
    tm: _Timers, o: _Point, d: _Point, src: int, dst: int, out: dict[str, list[float]]
) -> None:
    """The travel times of both backends and of RoutingKit against Dijkstra's optimum."""
    tiles_cch.ENABLED = False
    try:
        fallback = shortest_path(tm.store, o, d)
    finally:
        tiles_cch.ENABLED = tm.own_cch
    out["warm_duration_diff"].append(shortest_path(tm.store, o, d).duration_s - fallback.duration_s)
    want = float(dijkstra(tm.m, directed=True, indices=src)[dst])
    if tm.own_cch and want > 0:
        got = edge_path(tm.g, src, dst)[1]
        out["own_cost_ratio"].append(got / want)
        out["own_cost_diff"].append(got - want)
    if tm.cch is not None:
        got_ms = tm.cch_only(src, dst)[1]
        if got_ms is not None and want > 0:
            out["cch_ratio"].append(got_ms / 1000.0 / want)


def _warm_rounds(
    store: TileStore,
    g: Graph,
    m: Any,
    cch: dict[str, Any] | None,
    pairs: list[tuple[_Point, _Point]],
    routes: list[Route | None],
) -> dict[str, list[float]]:
    """Warm timings per query (seconds, the fastest of ``ROUNDS``): nagashi (``warm``, or
    ``warm_none`` with no legal route; ``warm_dijkstra`` with the fallback forced), the scipy
    peer (``ref``), Dijkstra alone (``ref_only``), nagashi's edge query (``own_cch``,
    ``own_dijkstra``), RoutingKit's CCH (``cch_s``, ``cch_path_s``) and the cost checks."""
    tm = _Timers(store, g, m, cch)
    out: dict[str, list[float]] = {k: [] for k in _WARM_KEYS}
    for q, ((o, d), r) in enumerate(zip(pairs, routes, strict=True)):
        if r is None or len(r.edges) < 2:
            out["warm_none"].append(min(tm.nagashi(o, d) for _ in range(ROUNDS)))
            continue
        src = int(g.local([r.edges[0]])[0])
        dst = int(g.local([r.edges[-1]])[0])
        for k, v in _time_query(tm, q, o, d, src, dst).items():
            if v:
                out[k].append(min(v))
        _check_costs(tm, o, d, src, dst, out)
    return out


def _cch_figures(
    cch: dict[str, Any], times: dict[str, list[float]], warm_s: dict[str, float]
) -> dict[str, Any]:
    """RoutingKit's CCH as a peer: its timings, build time, and travel times against ours."""
    cst = _stats(times["cch_s"])
    cpath = _stats(times["cch_path_s"])
    cch_ratio = times["cch_ratio"]
    out: dict[str, Any] = {
        "cch": cst,
        "cch_with_path": cpath,
        "cch_build_s": round(cch["build_s"], 3),
        "cch_travel_time_ratio_min": round(min(cch_ratio), 6) if cch_ratio else None,
        "cch_travel_time_ratio_max": round(max(cch_ratio), 6) if cch_ratio else None,
        "cch_queries_compared": len(cch_ratio),
        "ratio_warm_p95_nagashi_over_cch": round(warm_s["p95_ms"] / cst["p95_ms"], 1),
        "ratio_dijkstra_only_p95_over_cch": round(
            _stats(times["ref_only"])["p95_ms"] / cst["p95_ms"], 1
        ),
    }
    if times["own_cch"]:
        own = _stats(times["own_cch"])
        for name, peer in (("cch", cst), ("cch_with_path", cpath)):
            for q, col in (("p95", "p95_ms"), ("median", "median_ms")):
                out[f"ratio_{q}_nagashi_cch_over_{name}"] = round(own[col] / peer[col], 2)
    return out


def _agent_peak_rss_mb(path: Path, mid: tuple[_Point, _Point]) -> float:
    """Peak RSS of a fresh process that opens the tiles and routes one query."""
    probe = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(path), *map(str, (*mid[0], *mid[1]))],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(probe.stdout)["peak_rss_mb"])
