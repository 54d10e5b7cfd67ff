"""``bench cruise --case city``'s agent-memory child (:func:`agent_memory`): the agent's own
path in a fresh process, its resident set after each stage and its own peak."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import AgentError


def _rss_now_mb() -> float:
    """This process's resident set now (Linux ``/proc``; else its peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _peak_rss_mb() -> float:
    """This process's own peak RSS: ``VmHWM``, which starts again at ``exec`` (Linux keeps
    ``ru_maxrss`` across it: a spawned child got the bench's peak); elsewhere ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _agent_memory(args: argparse.Namespace, tiles: str, demand_dir: str, out: Any) -> None:
    """The agent's path alone, in a fresh process (the bench's own peak also holds every
    plan's numpy twin): warm the compiled kernel up, load the city, plan the bench's cases on
    the path the agent runs (each with its tick's demand cut), and send the resident set after
    each stage and the peak."""
    from agent._bench_city import city_demand, city_graph
    from agent.planner import (
        SHIPPED_STEP_S,
        PlannerParams,
        kernel_jit,
        plan_cruise,
        speed_factor_from_demand,
    )
    from agent.planner.workspace import WORKSPACE
    from models import DemandTable
    from tiles import TileStore

    base = _rss_now_mb()
    if kernel_jit.ready() is None:  # as core: numba's warm-up only where there is no C pass
        kernel_jit.warm_up()
    warm = _rss_now_mb()
    table = DemandTable.load(Path(demand_dir))
    with TileStore(Path(tiles)) as store:
        district = store.all()
    params = PlannerParams(
        radius_m=args.radius_m,
        horizon_s=args.horizon_min * 60.0,
        speed_factor=speed_factor_from_demand(table, district),
        step_s=SHIPPED_STEP_S,  # the layers the bundles ship: what a cab's planner holds
    )
    city = city_graph(district, args.districts)
    rng = np.random.default_rng(args.seed)
    cand = np.flatnonzero(city.cruise_allowed())
    starts = city.edge_id[cand[rng.integers(0, cand.shape[0], args.cases)]]
    minutes = rng.uniform(0.0, 7 * 1440.0, args.cases)
    loaded = _rss_now_mb()
    for start, minute in zip(starts, minutes, strict=True):
        tick = city_demand(table, district, args.districts, float(minute), params.horizon_s)
        plan_cruise(city, tick, int(start), float(minute), params)
    out.send(
        {
            "agent_peak_rss_mb": round(_peak_rss_mb(), 1),
            "agent_rss_mb_imports": round(base, 1),
            "agent_rss_mb_jit_warm": round(warm, 1),
            "agent_rss_mb_city_loaded": round(loaded, 1),
            "agent_workspace_mb": round(WORKSPACE.nbytes() / 2**20, 1),
            "agent_step_s": SHIPPED_STEP_S,
        }
    )
    out.close()


def agent_memory(args: argparse.Namespace, tiles: Path, demand_dir: Path) -> dict[str, Any]:
    """:func:`_agent_memory` in a spawned child process (its peak RSS is the agent's path's)."""
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_agent_memory, args=(args, str(tiles), str(demand_dir), send))
    child.start()
    send.close()
    got: dict[str, Any] = recv.recv() if recv.poll(600) else {}
    child.join()
    if child.exitcode != 0 or not got:
        raise AgentError(f"the agent-path memory child failed (exit code {child.exitcode})")
    return got
