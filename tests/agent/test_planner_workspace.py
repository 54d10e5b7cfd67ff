"""The planner's kept buffers (issue 20, agent/planner/workspace.py): a table solved into a
workspace another plan has written is the same, bit for bit, as one solved into fresh arrays, on
the numpy path and the compiled one; a plan while the workspace is lent elsewhere gets fresh
arrays and the same bytes."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.planner import (
    PlannerParams,
    cruise,
    kernel_jit,
    plan_cruise,
    solve,
    speed_factor_from_demand,
)
from agent.planner.core import ValueTable
from agent.planner.workspace import WORKSPACE, Workspace, release_workspace
from models import DemandTable
from models.demand import TickDemand, tick_demand_from_table
from tiles import TileStore
from tiles.graph import Graph

TIMES_SQUARE = (-73.98551, 40.75800)


def _case(
    store: TileStore, table: DemandTable, radius_m: float, horizon_s: float
) -> tuple[Graph, TickDemand, PlannerParams]:
    g = store.radius_graph(*TIMES_SQUARE, radius_m)
    params = PlannerParams(
        radius_m=radius_m,
        horizon_s=horizon_s,
        speed_factor=speed_factor_from_demand(table, store.all()),
    )
    demand = tick_demand_from_table(table, g.edge_id, 1085, math.ceil(horizon_s / 60.0) + 1)
    return g, demand, params


def _bits(t: ValueTable) -> list[bytes]:
    return [t.values.tobytes(), t.cont.tobytes(), t.exit_value.tobytes(), t.slope_v.tobytes()]


@pytest.mark.parametrize("path", ["numpy", "numba"])
def test_a_reused_workspace_gives_the_bits_of_fresh_arrays(
    manhattan: tuple[TileStore, Any], path: str
) -> None:
    store, table = manhattan
    if path == "numba":
        pytest.importorskip("numba")
        assert kernel_jit.warm_up() is not None, kernel_jit.status()
    ctx = kernel_jit.suspended() if path == "numpy" else contextlib.nullcontext()
    ws = Workspace()
    # a long horizon first: its values fill the rows that are past the second plan's horizon
    big = _case(store, table, 2500.0, 2700.0)
    small = _case(store, table, 2000.0, 1800.0)
    with ctx:
        first = cruise._solve(*big[:2], 1085.0, big[2], None, None, None, None, ws)
        assert float(np.abs(first.values).max()) > 0.0
        before = first.values.__array_interface__["data"][0]
        reused = cruise._solve(*small[:2], 1085.0, small[2], None, None, None, None, ws)
        # the same memory (a prefix of the first plan's buffer), so the test means something
        assert reused.values.__array_interface__["data"][0] == before
        fresh = solve(*small[:2], 1085.0, small[2])
    assert reused.values.shape == fresh.values.shape
    assert _bits(reused) == _bits(fresh)


def test_a_plan_while_the_workspace_is_lent_gets_fresh_arrays(
    manhattan: tuple[TileStore, Any],
) -> None:
    store, table = manhattan
    g, demand, params = _case(store, table, 1500.0, 1200.0)
    start = int(g.edge_id[int(np.flatnonzero(g.cruise_allowed(1085))[0])])
    alone = plan_cruise(g, demand, start, 1085.0, params)
    assert WORKSPACE.nbytes() > 0  # the plan kept its buffers
    with WORKSPACE.borrowed() as ws:
        assert ws is WORKSPACE
        with WORKSPACE.borrowed() as other:
            assert other is None  # lent: a second plan meanwhile allocates its own
        lent = plan_cruise(g, demand, start, 1085.0, params)
    assert lent.to_json() == alone.to_json()
    release_workspace()
    assert WORKSPACE.nbytes() == 0
    again = plan_cruise(g, demand, start, 1085.0, dataclasses.replace(params))
    assert again.to_json() == alone.to_json()


def test_a_workspace_buffer_is_replaced_when_far_too_large() -> None:
    ws = Workspace()
    a = ws.table("values", 100, 1000, 90)
    assert a.shape == (100, 1000) and not a[90:].any()
    a[:] = 7.0
    b = ws.table("values", 60, 1000, 50)  # 60 % of it: reused, the tail zeroed again
    assert np.shares_memory(a, b) and not b[50:].any() and (b[:50] == 7.0).all()
    c = ws.table("values", 10, 1000, 5)  # a tenth: a new, small buffer
    assert not np.shares_memory(a, c) and ws.nbytes() < 2 * c.nbytes


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 40), st.integers(1, 30), st.integers(0, 40)),
        min_size=1,
        max_size=8,
    )
)
def test_every_loan_is_zero_past_the_rows_its_pass_writes(
    loans: list[tuple[int, int, int]],
) -> None:
    """Passes of any sizes one after another (each writing its rows before ``zero_from``, as
    the backward pass does): every loan is 0 from ``zero_from`` on, whatever came before."""
    ws = Workspace()
    for i, (rows, width, zero_from) in enumerate(loans):
        t = ws.table("values", rows, width, min(zero_from, rows))
        assert t.shape == (rows, width)
        assert not t[min(zero_from, rows) :].any()
        t[: min(zero_from, rows)] = i + 1.0  # what the pass writes


def test_a_buffer_is_the_size_its_plan_needs_until_a_larger_plan_comes() -> None:
    """A city planned tick after tick needs the same V every time: its buffer has no spare
    (issue 20: an eighth of 72.6 MB); a larger plan after it gets an eighth to spare."""
    ws = Workspace()
    a = ws.table("values", 100, 1000, 90)
    assert ws.nbytes() == a.nbytes == 100 * 1000 * 8
    assert np.shares_memory(a, ws.table("values", 100, 1000, 90))
    b = ws.table("values", 120, 1000, 110)  # larger: a new buffer, with an eighth to spare
    assert not np.shares_memory(a, b) and ws.nbytes() == (120_000 + 15_000) * 8
    c = ws.table("values", 130, 1000, 120)  # within the spare: the same buffer
    assert np.shares_memory(b, c) and not c[120:].any()
