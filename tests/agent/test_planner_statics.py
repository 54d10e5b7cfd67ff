"""The kernel's per-graph arrays are computed once per prepared graph (``Prepared.statics``,
issue 20): a kernel built from them is the kernel built from scratch, array for array, and a
table solved twice on one graph (the second time from the kept arrays) has the same bits."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from agent.planner import PlannerParams, core, solve, speed_factor_from_demand
from models import DemandTable, tick_demand_from_table
from tiles import TileStore

MINUTE = 2 * 1440 + 8 * 60 + 0.25  # Wednesday morning


def test_kernels_from_the_kept_arrays_are_the_kernels_from_scratch(
    manhattan_tiles: Path, manhattan_demand: Path
) -> None:
    table = DemandTable.load(manhattan_demand)
    with TileStore(manhattan_tiles) as store:
        g = store.all()
    params = PlannerParams(speed_factor=speed_factor_from_demand(table, g))
    demand = tick_demand_from_table(table, g.edge_id, math.floor(MINUTE), 46)
    kernels: list[core._Kernel] = []
    build = core._kernel

    def keep(prep: core.Prepared, d: object, cz: np.ndarray, *rest: object) -> core._Kernel:
        kept = build(prep, d, cz, *rest)  # type: ignore[arg-type]  # the same arguments
        fresh = build(prep, d, cz.copy(), *rest)  # type: ignore[arg-type]  # not the kept cz
        kernels.extend([kept, fresh])
        return kept

    core._kernel = keep  # type: ignore[assignment]  # a recording twin
    try:
        first = solve(g, demand, MINUTE, params)
        second = solve(g, demand, MINUTE, params)
    finally:
        core._kernel = build
    assert first.prep is second.prep  # one prepared graph: the second solve reuses its arrays
    assert first.values.tobytes() == second.values.tobytes()
    assert first.cont.tobytes() == second.cont.tobytes()
    kept, fresh = kernels[-2], kernels[-1]
    assert kept.v_off is first.prep.statics.v_off and fresh.v_off is not kept.v_off
    for f in dataclasses.fields(core._Kernel):
        a, b = getattr(kept, f.name), getattr(fresh, f.name)
        if isinstance(a, list):
            assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        else:
            assert np.array_equal(a, b), f.name
