"""The route read-out's terms of ``Q`` (issue 20): computed one link at a time on Python floats
(a cab's read-out asks a few links per layer) they are, bit for bit, the terms computed for
every link at once (the simulator's many cabs on one table), on the real Manhattan table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from agent.planner import PlannerParams, ValueTable, solve, speed_factor_from_demand
from agent.planner.readout import _LayerTerms, _link_terms, _terms_at
from models import DemandTable, tick_demand_from_table
from tiles import TileStore

MINUTE = 1440 + 17 * 60 + 0.5  # Tuesday 17:00: the evening peak


@pytest.fixture(scope="module")
def table(manhattan_tiles: Path, manhattan_demand: Path) -> ValueTable:
    demand_table = DemandTable.load(manhattan_demand)
    with TileStore(manhattan_tiles) as store:
        g = store.all()
    params = PlannerParams(speed_factor=speed_factor_from_demand(demand_table, g))
    demand = tick_demand_from_table(demand_table, g.edge_id, math.floor(MINUTE), 46)
    return solve(g, demand, MINUTE, params)


def _bits(xs: list[float]) -> np.ndarray:
    return np.asarray(xs, dtype=np.float64).view(np.int64)


def test_one_link_terms_are_the_whole_layers_bit_for_bit(table: ValueTable) -> None:
    n = table.prep.n
    # the first and last layers (the clamp of the lower row) and some between
    for k in (0, 1, 37, table.n_layers // 2, table.n_layers - 2, table.n_layers - 1):
        full = _terms_at(table, k)
        one = [_link_terms(table, k, f) for f in range(n)]
        for j in range(3):
            assert np.array_equal(_bits([t[j] for t in one]), _bits(full[j])), (k, j)


def test_links_shorter_than_a_layer_are_covered(table: ValueTable) -> None:
    """The sub-layer branch (``V`` of the next layer plus the unused part times the slope) is
    among the links compared above, and so is the linear one."""
    shift = table.prep.tau_s / table.prep.step_s
    assert (shift < 1.0).any() and (shift > 1.5).any()


def test_a_layer_asked_for_many_links_computes_them_all_at_once(table: ValueTable) -> None:
    k = 12
    terms = _LayerTerms(table, k)
    full = _terms_at(table, k)
    got = [terms.at(f) for f in range(terms.limit)]
    assert terms.full is None  # a cab's read-out: one link at a time
    got += [terms.at(f) for f in range(terms.limit, table.prep.n)]
    assert terms.full is not None  # the simulator's many cabs: the whole layer
    for j in range(3):
        assert np.array_equal(_bits([t[j] for t in got]), _bits(full[j]))
