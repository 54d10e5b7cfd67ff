"""The backward pass's penalty (``0`` where a link may be entered, ``−∞`` where not) is built
from one row per run of minutes with the same links allowed (issue 20): every layer reads the
row of its own minute, bit for bit, on the real Manhattan no-entry windows over a week."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from agent.planner import PlannerParams, speed_factor_from_demand
from agent.planner.core import _penalty, prepare
from agent.planner.terms import _layers
from models import DemandTable, tick_demand_from_table
from tiles import TileStore


def test_each_layer_reads_the_penalty_of_its_minute(
    manhattan_tiles: Path, manhattan_demand: Path
) -> None:
    table = DemandTable.load(manhattan_demand)
    with TileStore(manhattan_tiles) as store:
        g = store.all()
    params = PlannerParams(speed_factor=speed_factor_from_demand(table, g))
    prep = prepare(g, params.step_s, params.speed_factor, None)
    cz = np.flatnonzero(prep.cruisable).astype(np.int64)
    demand = tick_demand_from_table(table, g.edge_id, 0, 46)
    shared = 0
    # every quarter hour of the week, and the last minutes before the week wraps
    for start in [*np.arange(0.0, 7 * 1440.0, 15.0).tolist(), 10_070.5]:
        minutes, layer_minute, allowed, _ = _layers(prep, demand, start, 270, None)
        reference = np.where(np.ascontiguousarray(allowed[:, cz]), 0.0, -np.inf)
        penalty, row = _penalty(allowed, cz, layer_minute)
        assert penalty.flags.c_contiguous and row.dtype == np.int64
        assert np.array_equal(penalty[row], reference[layer_minute])
        assert penalty.shape[0] <= minutes.shape[0]
        shared += 1 < penalty.shape[0] < minutes.shape[0]
    assert shared > 0  # some horizons cross a window's opening or closing: several rows


def test_runs_of_minutes_share_a_row_and_a_reopened_link_gets_a_new_one() -> None:
    allowed = np.array([[True, True, True], [True, True, True], [True, False, True], [True] * 3])
    cz = np.array([0, 1], dtype=np.int64)
    penalty, row = _penalty(allowed, cz, np.array([0, 1, 1, 2, 3, 3], dtype=np.int64))
    assert penalty.tolist() == [[0.0, 0.0], [0.0, -math.inf], [0.0, 0.0]]
    assert row.tolist() == [0, 0, 0, 1, 2, 2]  # minutes 0 and 1 share the first row
    one, one_row = _penalty(allowed[:1], cz, np.zeros(3, dtype=np.int64))
    assert one.tolist() == [[0.0, 0.0]] and one_row.tolist() == [0, 0, 0]
