"""Cruising planner latency: 200 seeded positions and times in Manhattan, p50/p95, peak RSS.

Each case is what the agent does per tick: load the links within the radius, map-match the fix,
cut the TickDemand for the horizon, solve the MDP and read out the plan. In the same run, one
``scipy.sparse.csgraph.dijkstra`` from the cab's link over the same sub-graph's line graph is
timed as the peer; the ratio of medians is reported. The process is pinned to one core.

Without ``--tiles``/``--demand``, both are built from the real data (``data/``) into a temporary
directory first, in a child process (neither timed nor counted in the peak RSS).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse.csgraph import dijkstra

from agent.errors import AgentError
from tiles.fileio import real_data_dir

SHARED_DATA = real_data_dir()
MANHATTAN_OSM = SHARED_DATA / "osm" / "nyc_manhattan_midtown.osm.pbf"
MANHATTAN_TRIPS = (
    SHARED_DATA / "trips" / "nyc_tlc_yellow_2009-2015_gcp_taxi-train.csv",
    SHARED_DATA / "trips" / "nyc_tlc_yellow_2015-06_reuven.csv",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiles", help="Manhattan tile database (default: built from shared data)")
    p.add_argument("--demand", help="demand directory for those tiles (default: built)")
    p.add_argument("--cases", type=int, default=200, help="positions and times")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--radius-m", type=float, default=3000.0)
    p.add_argument("--horizon-min", type=float, default=45.0)


def _build_inputs(tmp: str, tiles: str | None, demand: bool) -> None:
    """Build what is missing (runs in a child process: its memory is not the planner's)."""
    from models.statistics import build_demand_table
    from tiles import TileStore, build_tiles

    path = Path(tiles) if tiles else build_tiles(MANHATTAN_OSM, Path(tmp) / "tiles")[0]
    if demand:
        with TileStore(path) as store:
            table, _ = build_demand_table(store, list(MANHATTAN_TRIPS))
        table.save(Path(tmp) / "demand")


def _inputs(args: argparse.Namespace, tmp: Path) -> tuple[Path, Path]:
    if args.tiles and args.demand:
        return Path(args.tiles), Path(args.demand)
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_build_inputs, args=(str(tmp), args.tiles, not args.demand))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise AgentError(f"building the benchmark inputs failed (exit code {child.exitcode})")
    tiles = Path(args.tiles) if args.tiles else tmp / "tiles" / "tiles.sqlite"
    return tiles, Path(args.demand) if args.demand else tmp / "demand"


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from agent.planner import PlannerParams, plan_from_fix, speed_factor_from_demand
    from models import DemandTable
    from tiles import TileStore, edge_cost

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with tempfile.TemporaryDirectory(prefix="nagashi-bench-cruise-") as tmp_name:
        tiles, demand_dir = _inputs(args, Path(tmp_name))
        table = DemandTable.load(demand_dir)
        store = TileStore(tiles)
        params = PlannerParams(
            radius_m=args.radius_m,
            horizon_s=args.horizon_min * 60.0,
            speed_factor=speed_factor_from_demand(table, store.all()),
        )
        rng = np.random.default_rng(args.seed)
        # fixes on cruisable links of the whole extract (5 m GPS noise), any minute of the week
        full = store.all()
        cand = np.flatnonzero(full.cruise_allowed())
        picks = cand[rng.integers(0, cand.shape[0], args.cases)]
        frac = rng.uniform(0.0, 1.0, args.cases)
        noise = rng.normal(0.0, 5.0 / 111_195.0, (args.cases, 2))
        lons = full.u_lon[picks] + frac * (full.v_lon[picks] - full.u_lon[picks]) + noise[:, 0]
        lats = full.u_lat[picks] + frac * (full.v_lat[picks] - full.u_lat[picks]) + noise[:, 1]
        heads = (full.bearing_start[picks].astype(np.float64) + rng.normal(0, 10, args.cases)) % 360
        minutes = rng.uniform(0.0, 7 * 1440.0, args.cases)
        # warm-up (imports, tile cache): not timed
        plan_from_fix(store, table, float(lons[0]), float(lats[0]), None, 600.0, params)
        plan_ms: list[float] = []
        dijkstra_ms: list[float] = []
        sizes: list[int] = []
        lengths: list[float] = []
        for i in range(args.cases):
            t0 = time.perf_counter()
            plan = plan_from_fix(
                store,
                table,
                float(lons[i]),
                float(lats[i]),
                float(heads[i]),
                float(minutes[i]),
                params,
            )
            plan_ms.append((time.perf_counter() - t0) * 1000.0)
            lengths.append(plan.length_m)
            g = store.radius_graph(float(lons[i]), float(lats[i]), params.radius_m)
            sizes.append(g.n)
            src = int(g.local([plan.start_edge_id])[0])
            allowed = g.cruise_allowed(int(minutes[i]))
            t1 = time.perf_counter()
            m = g.line_graph(edge_cost(g, "time"), allowed)
            dijkstra(m, directed=True, indices=src)
            dijkstra_ms.append((time.perf_counter() - t1) * 1000.0)
        store.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    p50 = statistics.median(plan_ms)
    d50 = statistics.median(dijkstra_ms)
    return {
        "cases": args.cases,
        "seed": args.seed,
        "radius_m": args.radius_m,
        "horizon_min": args.horizon_min,
        "step_s": params.step_s,
        "speed_factor": round(params.speed_factor, 4),
        "links_in_radius_p50": int(np.median(sizes)),
        "route_length_m_p50": round(statistics.median(lengths), 1),
        "plan_ms_p50": round(p50, 3),
        "plan_ms_p95": round(_pct(plan_ms, 95), 3),
        "plan_ms_max": round(max(plan_ms), 3),
        "dijkstra_ms_p50": round(d50, 3),
        "dijkstra_ms_p95": round(_pct(dijkstra_ms, 95), 3),
        "ratio_plan_to_dijkstra_p50": round(p50 / d50, 2) if d50 > 0 else None,
        "peak_rss_mb": round(rss_mb, 1),
        "goal_p95_ms": 100.0,
        "goal_rss_mb": 200.0,
        "cores": 1,
    }
