"""The dead-end peel (``agent.planner.deadends._peel``, issue 20) works from the links that died
in the last round only; it finds the same live links as counting every link's ways on again
until nothing changes, on real Manhattan radius graphs at real minutes and under random
closures (long chains of dead ends)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from agent.planner import PlannerParams, ValueTable, solve, speed_factor_from_demand
from agent.planner.deadends import _peel
from models import DemandTable, tick_demand_from_table
from tiles import TileStore


def recounted(table: ValueTable, allowed: np.ndarray) -> np.ndarray:
    """The live links by the definition: re-count every link's ways on until nothing changes."""
    prep = table.prep
    g = prep.graph
    src, dst = prep.arc_src, prep.arc_dst
    forward = g.v_node[dst] != g.u_node[src]
    src, dst = src[forward], dst[forward]
    beyond = np.zeros(g.n, dtype=bool)
    outside = g.local(g.turn_to) < 0
    beyond[np.repeat(np.arange(g.n), np.diff(g.turn_offsets))[outside]] = True
    live = allowed.copy()
    while True:
        has = np.bincount(src[live[dst]], minlength=g.n) > 0
        nxt = live & (has | beyond)
        if np.array_equal(nxt, live):
            return live
        live = nxt


@pytest.mark.parametrize("radius_m", [400.0, 3000.0])
def test_the_peel_finds_the_recounted_live_links(
    manhattan_tiles: Path, manhattan_demand: Path, radius_m: float
) -> None:
    table = DemandTable.load(manhattan_demand)
    rng = np.random.default_rng(int(radius_m))
    with TileStore(manhattan_tiles) as store:
        full = store.all()
        params = dataclasses.replace(
            PlannerParams(speed_factor=speed_factor_from_demand(table, full)), horizon_s=60.0
        )
        dead = 0
        for e in rng.integers(0, full.n, 6).tolist():
            g = store.radius_graph(float(full.u_lon[e]), float(full.u_lat[e]), radius_m)
            minute = float(rng.uniform(0.0, 7 * 1440.0))
            demand = tick_demand_from_table(table, g.edge_id, math.floor(minute), 3)
            solved = solve(g, demand, minute, params)
            for allowed in (solved.allowed_at(minute), rng.random(g.n) < 0.7):
                want = recounted(solved, np.asarray(allowed, dtype=bool))
                assert np.array_equal(_peel(solved, allowed), want)
                dead += int((allowed & ~want).sum())
        assert dead > 0  # the peel had dead ends to find
