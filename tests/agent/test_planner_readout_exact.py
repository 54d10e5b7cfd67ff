"""The route read-out's scalar action values (issue 20: a few links per step, in Python floats)
are those of the vectorised :func:`agent.planner.action_values`, bit for bit, on a real table:
with and without the table's recent passes, with ages shorter than the window, zero, unknown."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from agent.planner import PlannerParams, action_values, solve, speed_factor_from_demand
from agent.planner.readout import _scalar_action_values
from models import DemandTable
from models.demand import tick_demand_from_table
from tiles import TileStore


@pytest.mark.parametrize("recent_passes", [False, True])
def test_scalar_action_values_are_the_vectorised_bits(
    manhattan_tiles: Path, manhattan_demand: Path, recent_passes: bool
) -> None:
    table = DemandTable.load(manhattan_demand)
    with TileStore(manhattan_tiles) as store:
        g = store.all()
    params = PlannerParams(horizon_s=1800.0, speed_factor=speed_factor_from_demand(table, g))
    demand = tick_demand_from_table(table, g.edge_id, 1085, 32)
    rng = np.random.default_rng(20)
    ages = None
    if recent_passes:
        ages = np.full(g.n, np.inf)
        passed = rng.integers(0, g.n, g.n // 5)
        ages[passed] = rng.uniform(0.0, 400.0, passed.shape[0])
    t = solve(g, demand, 1085.0, params, last_pass_age_s=ages)
    checked = 0
    for _ in range(400):
        links = rng.integers(0, g.n, int(rng.integers(1, 5))).astype(np.int64)
        layer = int(rng.integers(-2, t.n_layers + 3))  # clamped to the table on both sides
        age = None
        if rng.random() < 0.6:
            age = rng.choice([0.0, 5.0, 60.0, 250.0, math.inf], links.shape[0])
        want = action_values(t, layer, links, None if age is None else age.astype(np.float64))
        got = _scalar_action_values(t, layer, links.tolist(), None if age is None else age.tolist())
        assert np.asarray(got, dtype=np.float64).tobytes() == want.tobytes()
        checked += int(np.isfinite(want).sum())
    assert checked > 500  # real values, not only the horizon's zeros
