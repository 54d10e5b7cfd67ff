"""The route read-out's junction choice (``best_next``, one successor at a time on Python floats)
is the maximum of the vectorised ``action_values`` over the allowed successors, bit for bit:
on the real Manhattan table, at every layer, with the table's passes, the fleet's and the
cab's own, and with links to skip."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.planner import (
    PlannerParams,
    ValueTable,
    action_values,
    plan_from_table,
    route_from_table,
)
from agent.planner.readout import best_next
from tests.conftest import EVENING_MINUTE

MINUTE = EVENING_MINUTE  # Tuesday 17:00: the minute of the session's tables


def reference(
    table: ValueTable,
    link: int,
    t_rel_s: float,
    last_pass_s: np.ndarray | None,
    own: dict[int, float] | None,
    skip: set[int] | None,
) -> int:
    """``best_next`` as it was written on numpy arrays: the masked argmax of action_values."""
    prep = table.prep
    lo, hi = int(prep.arc_offsets[link]), int(prep.arc_offsets[link + 1])
    if hi == lo:
        return -1
    succ = prep.arc_dst[lo:hi]
    ok = table.allowed_at(table.start_minute_of_week + t_rel_s / 60.0)[succ]
    if skip:
        ok = ok & ~np.isin(succ, np.fromiter(skip, dtype=succ.dtype, count=len(skip)))
    if not ok.any():
        return -1
    layer = math.floor(t_rel_s / prep.step_s + 0.5)
    age = None
    if last_pass_s is not None or own or table.pass_age_s is not None:
        last = (
            np.asarray(last_pass_s[succ], dtype=np.float64)
            if last_pass_s is not None
            else np.full(succ.shape[0], -np.inf)
        )
        if table.pass_age_s is not None:
            last = np.maximum(last, -table.pass_age_s[succ])
        if own:
            for j, f in enumerate(succ.tolist()):
                if f in own:
                    last[j] = max(last[j], own[f])
        age = t_rel_s - last
    q = np.where(ok, action_values(table, layer, succ, age), -np.inf)
    return int(succ[int(np.argmax(q))])


@pytest.fixture(scope="module")
def tables(evening_tables: tuple[ValueTable, ValueTable]) -> tuple[ValueTable, ValueTable]:
    """The Manhattan table without passes and with the passes of 300 links (some fresh): the
    session's (tests/conftest.py)."""
    return evening_tables


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    t_rel_s=st.floats(-30.0, 4000.0, allow_nan=False),
    with_passes=st.booleans(),
    fleet=st.booleans(),
    own=st.booleans(),
    skip=st.booleans(),
)
def test_best_next_is_the_argmax_of_action_values_bit_for_bit(
    tables: tuple[ValueTable, ValueTable],
    data: st.DataObject,
    t_rel_s: float,
    with_passes: bool,
    fleet: bool,
    own: bool,
    skip: bool,
) -> None:
    table = tables[1] if with_passes else tables[0]
    prep = table.prep
    link = data.draw(st.integers(0, prep.n - 1))
    succ = prep.arc_dst[int(prep.arc_offsets[link]) : int(prep.arc_offsets[link + 1])].tolist()
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    # the fleet's last passes: most links unknown, some a few minutes before the decision
    last = None
    if fleet:
        last = np.where(rng.random(prep.n) < 0.3, t_rel_s - rng.uniform(0, 600, prep.n), -np.inf)
    mine = {f: t_rel_s - float(rng.uniform(0, 400)) for f in succ if rng.random() < 0.5}
    barred = {f for f in succ if rng.random() < 0.3}
    args = (last, mine if own else None, barred if skip else None)
    assert best_next(table, link, t_rel_s, *args) == reference(table, link, t_rel_s, *args)


def test_route_from_table_is_the_plans_route(tables: tuple[ValueTable, ValueTable]) -> None:
    """The simulator's read-out (the route alone) is the driver's plan's route and choice, with
    and without a route shown before."""
    params = PlannerParams()
    for table in tables:
        g = table.prep.graph
        cruisable = np.flatnonzero(table.prep.cruisable)
        for e in cruisable[:: max(cruisable.size // 25, 1)].tolist():
            gid = int(g.edge_id[e])
            minute = MINUTE + 1.5
            plan = plan_from_table(table, gid, 1.0, minute, params, "statistics")
            route, choice = route_from_table(table, gid, 1.0, minute, params)
            assert tuple(int(x) for x in g.edge_id[route]) == plan.edges and choice is None
            # a route shown before: the first read-out's without its last link
            before = list(plan.edges[:-1])
            kept = plan_from_table(
                table,
                gid,
                1.0,
                minute + 0.25,
                params,
                "statistics",
                previous_route=before,
                committed_links=1 if before else 0,
            )
            route, choice = route_from_table(
                table,
                gid,
                1.0,
                minute + 0.25,
                params,
                previous_route=before,
                committed_links=1 if before else 0,
            )
            assert tuple(int(x) for x in g.edge_id[route]) == kept.edges
            assert choice == kept.route_choice
