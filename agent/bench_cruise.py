"""Cruising planner latency: 200 seeded positions and times in Manhattan (or 20 in a whole city),
p50/p95, peak RSS.

Each case is what the agent does per tick: load the links within the radius, map-match the fix,
cut the TickDemand for the horizon, solve the MDP and read out the plan (``plan_ms``: the path
the agent runs: the C pass where the install built it, else numba's when the ``jit`` extra is
installed and warmed up). In the same run,
per case and interleaved, on the same arrays (the kernel that plan solved):

* ``plan_numpy_ms``: the same plan on the numpy path (when the compiled one is available);
* ``plan_warm_ms``: the same plan again at once on the path the agent runs, its inputs still in
  the caches (as the kernel's are when the kernel is timed, right after the passes on its
  arrays); ``plan_ms`` is timed after the other case's peers have filled the caches, as an
  agent's plan runs after the tablet's other work. ``ratio_plan_warm_to_kernel_p50`` is the
  plan's work against the kernel's with the caches alike; the goal is judged on ``plan_ms``;
* ``backward_ms`` / ``backward_numpy_ms``: the value iteration alone (``core._backward_pass``)
  on the path the agent runs (``backward_pass``: ``c`` where the install built
  ``agent/planner/_vi.c``, else ``numba``) and on numpy; ``backward_numba_ms``: numba's pass
  too, where the agent runs the C one and numba is installed;
* ``kernel_ms``, the peer: the minimal kernel, the per-layer successor maximum alone over the
  same layers (``np.maximum`` per out-degree rank, as the numpy path does it); reported as the
  ratios ``plan / kernel`` and ``value iteration / kernel`` of medians (issue 20: goal 3x);
* ``kernel_numba_ms``: the same minimal kernel compiled
  (``agent.planner._kernel_min.successor_max_only``, with numba), the compiled pass's own
  peer: ``ratio_plan_to_kernel_numba_p50`` and ``ratio_backward_to_kernel_numba_p50``.

``--case city`` (issue 20): the same figures for ``plan_cruise`` on a whole city of
``--districts`` real districts (:mod:`agent._bench_city`: 9 copies of the Manhattan extract,
30,879 links, 432 drop-off cells, demand of different times of the week), from a cruisable link
of any district at any minute; the city's demand cut is timed apart (``demand_cut_ms``) and the
goal is p95 100 ms. ``peak_rss_mb`` is the bench process's peak (it also holds every plan's
numpy twin); ``agent_peak_rss_mb`` is the agent's path alone: a fresh child process that warms
the compiled kernel up, loads the city and plans the same cases on the path the agent runs
(``agent_rss_mb_imports`` / ``_jit_warm`` / ``_city_loaded``: its resident set after each
stage; ``agent_workspace_mb``: its kept ``V`` and ``C``), with the layers the bundles ship
(``agent_step_s``: ``SHIPPED_STEP_S``, 20 s; the timed plans above are the exact solver's).

The process is pinned to one core.

Without ``--tiles``/``--demand``, both are built from the real data (``data/``) into a temporary
directory first, in a child process (neither timed nor counted in the peak RSS).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent._bench_memory import agent_memory as agent_memory
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
    p.add_argument(
        "--case",
        choices=("radius", "city"),
        default="radius",
        help="radius: plan_from_fix within --radius-m (the cab's tick); city: plan_cruise on "
        "the whole city of --districts real districts (issue 20)",
    )
    p.add_argument("--districts", type=int, default=9, help="city case (9: 30,879 links)")
    p.add_argument("--cases", type=int, default=None, help="positions and times (200; city 20)")
    p.add_argument(
        "--dropoff-top-k",
        type=int,
        default=0,
        help="also plan each case with the top-k drop-off approximation and compare it with "
        "the exact plan (value difference, same first move, time)",
    )
    p.add_argument(
        "--approx-step-s",
        type=float,
        default=None,
        help="also plan each case with coarser layers of this many seconds (PlannerParams."
        "step_s; with --dropoff-top-k, both) and compare it with the exact plan",
    )
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


@contextlib.contextmanager
def _capturing(kernels: list[Any]) -> Iterator[None]:
    """Keep the kernel (``core._Kernel``) of every backward pass run meanwhile."""
    from agent.planner import core

    solve = core._backward_pass

    def capture(kn: Any, ws: Any = None) -> Any:
        kernels.append(kn)
        return solve(kn, ws)

    core._backward_pass = capture
    try:
        yield
    finally:
        core._backward_pass = solve


def successor_max_kernel(kn: Any) -> None:
    """The minimal kernel: per layer, only the successor maximum of the backward pass."""
    q_ext = np.full(kn.cz.shape[0] + 1, -np.inf)
    q_ext[:-1] = -kn.cost
    columns = kn.columns
    for _ in range(kn.n_layers):
        best = q_ext[columns[0]]
        for col in columns[1:]:
            head = best[: col.shape[0]]
            np.maximum(head, q_ext[col], out=head)


def _timed(f: Any, *a: Any) -> tuple[Any, float]:
    """``f(*a)`` and its wall time in milliseconds."""
    t = time.perf_counter()
    out = f(*a)
    return out, (time.perf_counter() - t) * 1000.0


def _ms(f: Any, *a: Any) -> float:
    return _timed(f, *a)[1]


def _figures(xs: list[float], name: str) -> dict[str, float]:
    if not xs:
        return {}
    return {f"{name}_p50": round(statistics.median(xs), 3), f"{name}_p95": round(_pct(xs, 95), 3)}


@dataclass
class _Samples:
    """Per case: the timed plan, its numpy twin, the value iteration alone on both paths and
    the minimal kernel on the same arrays, with the plan's size."""

    plan_ms: list[float] = field(default_factory=list)
    plan_numpy_ms: list[float] = field(default_factory=list)
    plan_warm_ms: list[float] = field(default_factory=list)
    backward_ms: list[float] = field(default_factory=list)
    backward_numpy_ms: list[float] = field(default_factory=list)
    backward_numba_ms: list[float] = field(default_factory=list)
    kernel_ms: list[float] = field(default_factory=list)
    kernel_numba_ms: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    lengths: list[float] = field(default_factory=list)
    layers: list[int] = field(default_factory=list)
    same_bytes: int = 0
    #: with --dropoff-top-k / --approx-step-s: the approximate plan's time, |V - V_exact| at
    #: the start, and whether its first link is the exact plan's
    approx_ms: list[float] = field(default_factory=list)
    approx_abs_diff: list[float] = field(default_factory=list)
    approx_rel_diff: list[float] = field(default_factory=list)
    approx_same_first: int = 0


def _measure(
    plan: Callable[[], Any], jit: Any, s: _Samples, approx: Callable[[], Any] | None = None
) -> None:
    """One case, interleaved: ``plan()`` on the path the agent runs, the same again at once
    (warm; it must give the same bytes), then (numba installed) on the numpy path, the value
    iteration of that plan on both, the minimal kernel, and the approximate plan ``approx()``
    (top-k drop-offs, coarser layers) against the exact one."""
    from agent.planner import core, kernel_jit
    from agent.planner.workspace import WORKSPACE

    numba = kernel_jit.warm_up()  # numba's pass, if installed (loaded by run(): returns it)
    kernels: list[Any] = []
    with _capturing(kernels):
        got, ms = _timed(plan)
    s.plan_ms.append(ms)
    kn = kernels[-1]
    got_bytes = got.to_json()
    warm, ms = _timed(plan)  # the same plan at once: its inputs in the caches
    s.plan_warm_ms.append(ms)
    if warm.to_json() != got_bytes:
        raise AgentError("bench cruise: the same plan run twice gave other bytes")
    s.lengths.append(got.length_m)
    s.sizes.append(kn.n)
    s.layers.append(kn.n_layers)
    with kernel_jit.suspended():
        if jit is not None:
            again, ms = _timed(plan)
            s.plan_numpy_ms.append(ms)
            s.same_bytes += again.to_json() == got_bytes
        with WORKSPACE.borrowed() as ws:  # V and C kept between passes, as plans keep them
            if jit is not None:
                s.backward_ms.append(_ms(jit, kn, ws))
            s.backward_numpy_ms.append(_ms(core._backward_pass, kn, ws))
            if numba is not None and numba is not jit:  # the agent runs the C pass: numba too
                s.backward_numba_ms.append(_ms(numba, kn, ws))
    s.kernel_ms.append(_ms(successor_max_kernel, kn))
    if numba is not None:
        from agent.planner._kernel_min import successor_max_only

        s.kernel_numba_ms.append(_ms(successor_max_only, kn))
    if approx is not None:
        near, ms = _timed(approx)
        s.approx_ms.append(ms)
        diff = abs(near.expected_revenue - got.expected_revenue)
        s.approx_abs_diff.append(diff)
        s.approx_rel_diff.append(diff / abs(got.expected_revenue) if got.expected_revenue else 0.0)
        s.approx_same_first += near.edges[:1] == got.edges[:1]


def _approx_params(args: argparse.Namespace, params: Any) -> Any:
    """The approximate planner of ``--dropoff-top-k`` / ``--approx-step-s`` (None: neither)."""
    changes: dict[str, Any] = {}
    if args.dropoff_top_k:
        changes["dropoff_top_k"] = args.dropoff_top_k
    if args.approx_step_s is not None:
        changes["step_s"] = args.approx_step_s
    return dataclasses.replace(params, **changes) if changes else None


def radius_fixes(store: Any, seed: int, cases: int) -> list[tuple[float, float, float, float]]:
    """The radius case's fixes ``(lon, lat, heading, minute of week)``: on cruisable links of
    the whole extract (5 m GPS noise, heading within 10 degrees), any minute of the week."""
    rng = np.random.default_rng(seed)
    full = store.all()
    cand = np.flatnonzero(full.cruise_allowed())
    picks = cand[rng.integers(0, cand.shape[0], cases)]
    frac = rng.uniform(0.0, 1.0, cases)
    noise = rng.normal(0.0, 5.0 / 111_195.0, (cases, 2))
    lons = full.u_lon[picks] + frac * (full.v_lon[picks] - full.u_lon[picks]) + noise[:, 0]
    lats = full.u_lat[picks] + frac * (full.v_lat[picks] - full.u_lat[picks]) + noise[:, 1]
    heads = (full.bearing_start[picks].astype(np.float64) + rng.normal(0, 10, cases)) % 360
    minutes = rng.uniform(0.0, 7 * 1440.0, cases)
    return [
        (float(lons[i]), float(lats[i]), float(heads[i]), float(minutes[i])) for i in range(cases)
    ]


def _radius_case(
    args: argparse.Namespace, store: Any, table: Any, params: Any, jit: Any
) -> _Samples:
    """What the agent does per tick: fixes on cruisable links of the whole extract (5 m GPS
    noise, heading within 10 degrees), any minute of the week, through ``plan_from_fix``."""
    from agent.planner import plan_from_fix

    fixes = radius_fixes(store, args.seed, args.cases)
    # warm-up (imports, tile cache): not timed
    plan_from_fix(store, table, fixes[0][0], fixes[0][1], None, 600.0, params)
    s = _Samples()
    for fix in fixes:
        near = _approx_params(args, params)
        approx = (
            None if near is None else functools.partial(plan_from_fix, store, table, *fix, near)
        )
        _measure(functools.partial(plan_from_fix, store, table, *fix, params), jit, s, approx)
    return s


def _city_case(
    args: argparse.Namespace, store: Any, table: Any, params: Any, jit: Any
) -> tuple[_Samples, dict[str, Any]]:
    """The whole city (:mod:`agent._bench_city`): ``plan_cruise`` from a cruisable link of any
    district at any minute, on the city graph (prepared once, as a cab keeping its city would)
    and the tick's city demand (its cut timed apart: ``demand_cut_ms``)."""
    from agent._bench_city import city_demand, city_graph
    from agent.planner import plan_cruise

    district = store.all()
    city = city_graph(district, args.districts)
    rng = np.random.default_rng(args.seed)
    cand = np.flatnonzero(city.cruise_allowed())
    starts = city.edge_id[cand[rng.integers(0, cand.shape[0], args.cases)]]
    minutes = rng.uniform(0.0, 7 * 1440.0, args.cases)
    demand = city_demand(table, district, args.districts, 600.0, params.horizon_s)
    plan_cruise(city, demand, int(starts[0]), 600.0, params)  # warm-up: not timed
    s = _Samples()
    cut_ms: list[float] = []
    for i in range(args.cases):
        minute = float(minutes[i])
        demand, ms = _timed(city_demand, table, district, args.districts, minute, params.horizon_s)
        cut_ms.append(ms)
        case = (int(starts[i]), float(minutes[i]))
        near = _approx_params(args, params)
        approx = None if near is None else functools.partial(plan_cruise, city, demand, *case, near)
        _measure(functools.partial(plan_cruise, city, demand, *case, params), jit, s, approx)
    extra = {
        "districts": args.districts,
        "city_links": city.n,
        "city_cells": int(demand.dropoff.shape[0]),
        **_figures(cut_ms, "demand_cut_ms"),
    }
    return s, extra


def run(args: argparse.Namespace) -> dict[str, Any]:
    from agent.planner import PlannerParams, kernel_jit, speed_factor_from_demand
    from models import DemandTable
    from tiles import TileStore

    if args.cases is None:
        args.cases = 20 if args.case == "city" else 200
    if args.cases < 1 or args.districts < 1:
        raise AgentError("bench cruise: --cases and --districts must be at least 1")
    if args.approx_step_s is not None and not args.approx_step_s > 0:
        raise AgentError("bench cruise: --approx-step-s must be a positive number of seconds")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    t = time.perf_counter()
    numba = kernel_jit.warm_up()  # compile or load it now: never inside a timed plan
    warm_up_s = time.perf_counter() - t
    jit = kernel_jit.ready()  # the pass the agent runs: C where built, else numba's
    if numba is not None:  # the compiled minimal kernel too (the agent's warm-up leaves it out)
        from agent.planner._kernel_min import successor_max_only
        from agent.planner.core import _Kernel

        successor_max_only(kernel_jit._tiny_kernel(_Kernel, "C"))
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="nagashi-bench-cruise-") as tmp_name:
        tiles, demand_dir = _inputs(args, Path(tmp_name))
        table = DemandTable.load(demand_dir)
        store = TileStore(tiles)
        params = PlannerParams(
            radius_m=args.radius_m,
            horizon_s=args.horizon_min * 60.0,
            speed_factor=speed_factor_from_demand(table, store.all()),
        )
        if args.case == "city":
            s, extra = _city_case(args, store, table, params, jit)
        else:
            s = _radius_case(args, store, table, params, jit)
        store.close()
        if args.case == "city":
            extra.update(agent_memory(args, tiles, demand_dir))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out = _report(args, params, s, jit, warm_up_s, rss_mb)
    out.update(extra)
    return out


def _dropoff_product(jit: Any) -> str:
    from agent.planner import kernel_jit

    if jit is None:
        return "numpy"
    if kernel_jit.compiled_pass() == "c":
        return "blas"  # the C pass calls numpy's cblas_dgemv (kernel_c checked it first)
    from agent.planner import _kernel_numba

    return "blas" if _kernel_numba.USE_GEMV else "objmode"


def _numba_ratios(kernel_numba_ms: list[float], p50: float, b50: float) -> dict[str, Any]:
    """Plan and value iteration against the compiled minimal kernel (empty without numba)."""
    if not kernel_numba_ms:
        return {}
    k = statistics.median(kernel_numba_ms)
    if k <= 0:
        return {}
    return {
        "ratio_plan_to_kernel_numba_p50": round(p50 / k, 2),
        "ratio_backward_to_kernel_numba_p50": round(b50 / k, 2),
    }


def _report(
    args: argparse.Namespace, params: Any, s: _Samples, jit: Any, warm_up_s: float, rss_mb: float
) -> dict[str, Any]:
    from agent.planner import kernel_jit, walk_c
    from agent.planner.workspace import WORKSPACE

    p50 = statistics.median(s.plan_ms)
    k50 = statistics.median(s.kernel_ms)
    b50 = statistics.median(s.backward_ms or s.backward_numpy_ms)
    out: dict[str, Any] = {
        "case": args.case,
        "cases": args.cases,
        "seed": args.seed,
        "radius_m": args.radius_m,
        "horizon_min": args.horizon_min,
        "step_s": params.step_s,
        "layers_p50": int(np.median(s.layers)),
        "speed_factor": round(params.speed_factor, 4),
        "links_in_radius_p50": int(np.median(s.sizes)),
        "route_length_m_p50": round(statistics.median(s.lengths), 1),
        "backward_pass": kernel_jit.compiled_pass(),
        "readout_walk": walk_c.which(),  # the route walk the plans ran: c or python
        # the compiled pass's drop-off product: numpy's BLAS called directly, or np.matmul
        # in object mode once a layer (kernel_jit's warm-up decides)
        "dropoff_product": _dropoff_product(jit),
        "jit": kernel_jit.status(),
        "jit_warm_up_s": round(warm_up_s, 3),
        "plan_ms_p50": round(p50, 3),
        "plan_ms_p95": round(_pct(s.plan_ms, 95), 3),
        "plan_ms_max": round(max(s.plan_ms), 3),
        **_figures(s.plan_numpy_ms, "plan_numpy_ms"),
        **_figures(s.plan_warm_ms, "plan_warm_ms"),
        **_figures(s.backward_ms, "backward_ms"),
        **_figures(s.backward_numpy_ms, "backward_numpy_ms"),
        **_figures(s.backward_numba_ms, "backward_numba_ms"),
        **_figures(s.kernel_ms, "kernel_ms"),
        "ratio_plan_to_kernel_p50": round(p50 / k50, 2) if k50 > 0 else None,
        "ratio_backward_to_kernel_p50": round(b50 / k50, 2) if k50 > 0 else None,
        "ratio_plan_warm_to_kernel_p50": (
            round(statistics.median(s.plan_warm_ms) / k50, 2) if k50 > 0 else None
        ),
        **_figures(s.kernel_numba_ms, "kernel_numba_ms"),
        **_numba_ratios(s.kernel_numba_ms, p50, b50),
        "peak_rss_mb": round(rss_mb, 1),
        "workspace_mb": round(WORKSPACE.nbytes() / 2**20, 1),
        "goal_p95_ms": 100.0 if args.case == "city" else 10.0,
        "goal_ratio_to_kernel": 3.0,
        "goal_rss_mb": 200.0,
        "cores": 1,
    }
    if s.plan_numpy_ms:
        n50 = statistics.median(s.backward_numpy_ms)
        out["speedup_backward_numba_p50"] = round(n50 / b50, 2) if b50 > 0 else None
        out["speedup_plan_numba_p50"] = round(statistics.median(s.plan_numpy_ms) / p50, 2)
        out["ratio_backward_numpy_to_kernel_p50"] = round(n50 / k50, 2) if k50 > 0 else None
        out["plans_bit_identical"] = f"{s.same_bytes}/{args.cases}"
    if s.approx_ms:
        a50 = statistics.median(s.approx_ms)
        out["approx"] = {"dropoff_top_k": args.dropoff_top_k, "step_s": args.approx_step_s}
        out.update(_figures(s.approx_ms, "plan_approx_ms"))
        out["approx_speedup_p50"] = round(p50 / a50, 2) if a50 > 0 else None
        out["approx_value_abs_diff_max"] = round(max(s.approx_abs_diff), 6)
        out["approx_value_abs_diff_mean"] = round(statistics.fmean(s.approx_abs_diff), 6)
        out["approx_value_rel_diff_max"] = round(max(s.approx_rel_diff), 6)
        out["approx_same_first_move"] = f"{s.approx_same_first}/{args.cases}"
    return out
