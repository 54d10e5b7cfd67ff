"""Route queries: nagashi (tiled, from SQLite, cold and warm) against scipy's Dijkstra.

Builds the tiles from ``--osm`` (timed), then answers the same seeded point-to-point queries
three ways in one run:

* ``nagashi_cold``: a fresh :class:`~tiles.TileStore` per query (tiles read from SQLite);
* ``nagashi_warm``: one store, caches warm (what the agent sees), over the queries that have a
  route of two or more edges, the same ones the scipy reference answers below; queries with no
  legal route (a one-way street leaving the clipped extract, say) are timed apart
  (``nagashi_warm_no_route``): nagashi searches the whole network before it says so;
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
  order, contraction and customisation).

Warm and scipy timings alternate query by query (each query three times a side, its fastest
time kept), so both sides see the same machine load.

Peak RSS of the agent side (open the Manhattan tiles, load every tile, answer a route) is
measured in a fresh subprocess so the build's memory does not count.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

from tiles.build import build_tiles
from tiles.fileio import real_data_dir
from tiles.graph import Graph
from tiles.routing import DEFAULT_AVOID, Route, shortest_path
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
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
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
    with tempfile.TemporaryDirectory(prefix="nagashi-bench-route-") as tmp:
        t0 = time.perf_counter()
        path, summary = build_tiles(args.osm, Path(tmp))
        build_s = time.perf_counter() - t0
        store = TileStore(path)
        g = store.all()
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
        "nagashi_cold": _stats(cold),
        "nagashi_warm": warm_s,
        "nagashi_warm_no_route": {
            "queries": len(times["warm_none"]),
            **_stats(times["warm_none"] or [0.0]),
        },
        "scipy": ref_s,
        "scipy_dijkstra_only": _stats(times["ref_only"]),
        "ratio_warm_p95_nagashi_over_scipy": round(warm_s["p95_ms"] / ref_s["p95_ms"], 3),
        "ratio_warm_median_nagashi_over_scipy": round(warm_s["median_ms"] / ref_s["median_ms"], 3),
        **peer,
        "agent_peak_rss_mb": round(agent_rss, 1),
        "bench_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
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


def _warm_rounds(
    store: TileStore,
    g: Graph,
    m: Any,
    cch: dict[str, Any] | None,
    pairs: list[tuple[_Point, _Point]],
    routes: list[Route | None],
) -> dict[str, list[float]]:
    """Warm timings per query (seconds, the fastest of ``ROUNDS``): nagashi (``warm``, or
    ``warm_none`` with no legal route), the scipy peer (``ref``), Dijkstra alone
    (``ref_only``), CCH alone (``cch_s``) and CCH's travel time over Dijkstra's
    (``cch_ratio``)."""
    scipy_query = _scipy_query(g, m)

    def nagashi_query(o: _Point, d: _Point) -> float:
        t = time.perf_counter()
        with contextlib.suppress(Exception):
            shortest_path(store, o, d)
        return time.perf_counter() - t

    def cch_only(s: int, t_: int) -> tuple[float, int | None]:
        assert cch is not None
        t = time.perf_counter()
        res = cch["query"].run(s, t_)
        return time.perf_counter() - t, res.distance

    def dijkstra_only(s: int) -> float:
        t = time.perf_counter()
        dijkstra(m, directed=True, indices=s, return_predecessors=True)
        return time.perf_counter() - t

    # Each query is timed ROUNDS times, nagashi and scipy alternating, and keeps its fastest
    # time on each side: both sides see the same machine load, and a stray scheduler pause
    # does not land on one side only.
    out: dict[str, list[float]] = {
        k: [] for k in ("warm", "warm_none", "ref", "ref_only", "cch_s", "cch_ratio")
    }
    for (o, d), r in zip(pairs, routes, strict=True):
        if r is None or len(r.edges) < 2:
            out["warm_none"].append(min(nagashi_query(o, d) for _ in range(ROUNDS)))
            continue
        src = int(g.local([r.edges[0]])[0])
        a, b, c = [], [], []
        for _ in range(ROUNDS):
            a.append(nagashi_query(o, d))
            b.append(scipy_query(o, d))
            c.append(dijkstra_only(src))
        out["warm"].append(min(a))
        out["ref"].append(min(b))
        out["ref_only"].append(min(c))
        if cch is not None:
            dst = int(g.local([r.edges[-1]])[0])
            runs = [cch_only(src, dst) for _ in range(ROUNDS)]
            out["cch_s"].append(min(x for x, _ in runs))
            want = dijkstra(m, directed=True, indices=src)[dst]
            got = runs[0][1]
            if got is not None and want > 0:
                out["cch_ratio"].append(got / 1000.0 / float(want))
    return out


def _cch_figures(
    cch: dict[str, Any], times: dict[str, list[float]], warm_s: dict[str, float]
) -> dict[str, Any]:
    """RoutingKit's CCH as a peer: its timings, build time, and travel times against ours."""
    cst = _stats(times["cch_s"])
    cch_ratio = times["cch_ratio"]
    return {
        "cch": cst,
        "cch_build_s": round(cch["build_s"], 3),
        "cch_travel_time_ratio_min": round(min(cch_ratio), 6) if cch_ratio else None,
        "cch_travel_time_ratio_max": round(max(cch_ratio), 6) if cch_ratio else None,
        "cch_queries_compared": len(cch_ratio),
        "ratio_warm_p95_nagashi_over_cch": round(warm_s["p95_ms"] / cst["p95_ms"], 1),
        "ratio_dijkstra_only_p95_over_cch": round(
            _stats(times["ref_only"])["p95_ms"] / cst["p95_ms"], 1
        ),
    }


def _agent_peak_rss_mb(path: Path, mid: tuple[_Point, _Point]) -> float:
    """Peak RSS of a fresh process that opens the tiles and routes one query."""
    probe = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(path), *map(str, (*mid[0], *mid[1]))],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(probe.stdout)["peak_rss_mb"])
