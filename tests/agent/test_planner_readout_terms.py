"""The route read-out's terms of ``Q`` (issue 20): computed one link at a time on Python floats
(a cab's read-out asks a few links per layer) they are, bit for bit, the terms computed for
every link at once (the simulator's many cabs on one table), on the real Manhattan table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.planner import ValueTable
from agent.planner.readout_terms import _LayerTerms, _link_terms, _terms_at
from tests.conftest import EVENING_MINUTE

MINUTE = EVENING_MINUTE  # Tuesday 17:00: the minute of the session's tables


@pytest.fixture(scope="module")
def table(evening_tables: tuple[ValueTable, ValueTable]) -> ValueTable:
    """The Manhattan table of Tuesday 17:00 without passes: the session's (tests/conftest.py)."""
    return evening_tables[0]


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


def test_the_link_demand_of_a_demand_cut_for_the_graph_is_the_scattered_one(
    manhattan_tiles: Path, manhattan_demand: Path
) -> None:
    """``_link_demand`` copies a demand on the graph's own links in its order (what
    ``plan_from_fix`` cuts) instead of scattering it through ``Graph.local``: the same arrays
    as the scattering path gives for the same demand in another order, and a demand on part
    of the links still goes through the scattering path (zeros, a one-step trip, no cell)."""
    import dataclasses as dc

    from agent.planner.core import prepare
    from agent.planner.terms import _link_demand
    from models import DemandTable, tick_demand_from_table
    from tiles import TileStore

    table = DemandTable.load(manhattan_demand)
    with TileStore(manhattan_tiles) as store:
        full = store.all()
        e = int(np.flatnonzero(full.cruise_allowed())[full.n // 3])
        g = store.radius_graph(float(full.u_lon[e]), float(full.u_lat[e]), 1200.0)
    prep = prepare(g, 10.0, 0.5, None)
    demand = tick_demand_from_table(table, g.edge_id, 600, 46)
    rev = slice(None, None, -1)
    reversed_ = dc.replace(
        demand, edge_id=demand.edge_id[rev], pickups_per_h=demand.pickups_per_h[:, rev],
        fare_mean=demand.fare_mean[rev], trip_duration_s=demand.trip_duration_s[rev],
        cell=demand.cell[rev],
    )  # fmt: skip
    a, b = _link_demand(prep, demand), _link_demand(prep, reversed_)
    for name in ("rate_h", "fare", "trip_s", "cell", "p_in", "p_out", "local", "present"):
        x, y = getattr(a, name), getattr(b, name)
        if name in ("local", "present"):  # per demand link: the reversed order's own
            y = y[rev]
        assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert a.rate_h.flags.c_contiguous and a.rate_h.dtype == np.float64
    part = dc.replace(
        demand, edge_id=demand.edge_id[1:], pickups_per_h=demand.pickups_per_h[:, 1:],
        fare_mean=demand.fare_mean[1:], trip_duration_s=demand.trip_duration_s[1:],
        cell=demand.cell[1:],
    )  # fmt: skip
    c = _link_demand(prep, part)
    assert c.rate_h[:, 0].tolist() == [0.0] * c.rate_h.shape[0]
    assert c.trip_s[0] == 10.0 and c.cell[0] == c.n_cells
    assert np.array_equal(c.rate_h[:, 1:], a.rate_h[:, 1:])
