"""Safety gate per tick: the full check against the map match it needs anyway (same run).

Seeded ticks on the real tiles, as the agent sees them: a graph of the links within
``--radius-m`` of the cab (the planner's graph), a fix on a random cruise-allowed link with GPS
noise, a legal route of ``--route-links`` links from it (with a U-turn appended every fourth
tick, so trimming is measured too), and statistical demand for those links. Reported: the gate
(``SafetyGate.check``, which map-matches the fix itself here), its parts (route judgement,
demand check), and the peer every tick pays anyway, ``tiles.match_fix`` on the same fix and
graph (warm: the graph's segment index already built, as after the agent's own match), as a
ratio. The graph is a fresh ``radius_graph`` per tick, as in the agent, so the gate's per-graph
indexes (legal-turn keys, windows) are rebuilt and timed every tick.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from models import SLOT_MINUTES, CellGrid, DemandTable, tick_demand_from_table
from safety.config import SafetyConfig
from safety.data import check_demand
from safety.gate import SafetyGate
from safety.inputs import BundleStatus, Fix, TickInput
from safety.route import judge_route
from tiles import Graph, TileStore, build_tiles, match_fix
from tiles.fileio import real_data_dir
from tiles.geo import bearing_deg

DEFAULT_OSM = str(real_data_dir() / "osm" / "nyc_manhattan_midtown.osm.pbf")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiles", help="tile database (default: build from --osm into a temp dir)")
    p.add_argument("--osm", default=DEFAULT_OSM, help="OSM extract, when --tiles is not given")
    p.add_argument("--ticks", type=int, default=1000)
    p.add_argument("--route-links", type=int, default=60)
    p.add_argument("--radius-m", type=float, default=3000.0)
    p.add_argument("--seed", type=int, default=5)


def _ms(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1000.0
    return {
        "median_ms": round(float(np.median(a)), 4),
        "p95_ms": round(float(np.percentile(a, 95)), 4),
        "max_ms": round(float(a.max()), 4),
    }


def _table(n_edges: int, rng: np.random.Generator) -> DemandTable:
    grid = CellGrid(-180.0, -90.0, 1.0, 1.0, 4, 4)
    drop = np.full((16, 17), 1.0 / 17, dtype=np.float32)
    return DemandTable(
        network_sha256="bench",
        n_edges=n_edges,
        pickups_per_h=rng.gamma(0.5, 2.0, (3, 48, n_edges)).astype(np.float32),
        fare_mean=rng.uniform(8, 30, n_edges).astype(np.float32),
        fare_quantiles=np.sort(rng.uniform(5, 40, (n_edges, 3)), axis=1).astype(np.float32),
        trip_duration_s=rng.uniform(300, 1500, n_edges).astype(np.float32),
        trip_distance_m=rng.uniform(1000, 6000, n_edges).astype(np.float32),
        grid=grid,
        edge_cell=np.zeros(n_edges, dtype=np.int32),
        dropoff=drop,
        scale_factor=1.0,
        version="bench",
    )


def _walk(g: Graph, start: int, n: int, rng: np.random.Generator) -> list[int]:
    allowed = g.cruise_allowed()
    out, cur = [start], start
    for _ in range(n):
        succ = g.local(g.turn_to[g.turn_offsets[cur] : g.turn_offsets[cur + 1]])
        succ = succ[(succ >= 0) & allowed[np.maximum(succ, 0)]]
        succ = succ[~((g.u_node[succ] == g.v_node[cur]) & (g.v_node[succ] == g.u_node[cur]))]
        if succ.size == 0:
            break
        cur = int(rng.choice(succ))
        out.append(cur)
    return [int(g.edge_id[i]) for i in out]


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.tiles) if args.tiles else build_tiles(args.osm, tmp)[0]
        with TileStore(path) as store:
            return _run(store, args)


def _run(store: TileStore, args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    whole = store.all()
    table = _table(store.n_edges_total, rng)
    starts = np.flatnonzero(whole.cruise_allowed())
    gate = SafetyGate(SafetyConfig())
    t_gate: list[float] = []
    t_match: list[float] = []
    t_route: list[float] = []
    t_demand: list[float] = []
    now = 1_790_000_000.0
    for k in range(args.ticks):
        a = int(rng.choice(starts))
        geom = whole.geometry(a)
        i = int(rng.integers(geom.shape[0] - 1))
        f = float(rng.random())
        lon = float(geom[i, 0] + f * (geom[i + 1, 0] - geom[i, 0]) + rng.normal(0, 2e-5))
        lat = float(geom[i, 1] + f * (geom[i + 1, 1] - geom[i, 1]) + rng.normal(0, 2e-5))
        heading = float(bearing_deg(geom[i, 0], geom[i, 1], geom[i + 1, 0], geom[i + 1, 1]))
        g = store.radius_graph(lon, lat, args.radius_m)
        route = _walk(g, int(g.local([int(whole.edge_id[a])])[0]), args.route_links, rng)
        if k % 4 == 3:  # a U-turn at the end, where the graph has one
            last = int(g.local([route[-1]])[0])
            succ = g.local(g.turn_to[g.turn_offsets[last] : g.turn_offsets[last + 1]])
            back = [int(x) for x in succ if x >= 0 and g.v_node[x] == g.u_node[last]]
            route = [*route, *(int(g.edge_id[x]) for x in back[:1])]
        mow = float(rng.uniform(0, 7 * 1440))
        demand = tick_demand_from_table(table, g.edge_id, int(mow), 2 * SLOT_MINUTES)
        fix = Fix(now - 0.5, lon, lat, heading, 8.0, 5.0)
        tick = TickInput(
            now_s=now,
            minute_of_week=mow,
            fix=fix,
            graph=g,
            route=route,
            bundle=BundleStatus(True),
            demand=demand,
            demand_table=table,
        )
        match_fix(g, lon, lat, heading, 8.0)  # the agent matched first: segment index built
        t0 = time.perf_counter()
        m = match_fix(g, lon, lat, heading, 8.0)
        t1 = time.perf_counter()
        v = gate.check(tick)
        t2 = time.perf_counter()
        judge_route(g, route, m.best.edge_id, m.best.fraction, mow, gate.config.route)
        t3 = time.perf_counter()
        check_demand(demand, table, mow, gate.config.demand)
        t4 = time.perf_counter()
        t_match.append(t1 - t0)
        t_gate.append(t2 - t1)
        t_route.append(t3 - t2)
        t_demand.append(t4 - t3)
        del v
    s = gate.stats()
    return {
        "ticks": args.ticks,
        "tiles": str(store.path.name),
        "graph_radius_m": args.radius_m,
        "route_links": args.route_links,
        "gate": _ms(t_gate),
        "judge_route": _ms(t_route),
        "check_demand": _ms(t_demand),
        "peer_match_fix": _ms(t_match),
        "gate_over_match_fix_median": round(float(np.median(t_gate) / np.median(t_match)), 3),
        "validated_share": round(s["validated"] / max(s["ticks"], 1), 4),
        "fallbacks_by_reason": s["by_reason"],
    }
