"""The route-stability check on Python floats (issue 16, the simulator's speed): ``route_value``
and ``_enterable`` of :mod:`agent.planner.stability` give the bits of their array forms (kept
here as they were written before the speed work) on the real Manhattan table, with and without
the table's passes, on legal routes of every length and from every layer, and on routes with a
link that cannot be entered."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.planner import (
    ValueTable,
    route_value,
)
from agent.planner.core import _interp
from agent.planner.stability import _enterable
from tests.conftest import EVENING_MINUTE

MINUTE = EVENING_MINUTE  # Tuesday 17:00: the minute of the session's tables


def reference_value(table: ValueTable, start: int, t0_rel_s: float, route: Sequence[int]) -> float:
    """``route_value`` as it was written on numpy arrays."""
    prep = table.prep
    dt = prep.step_s
    n = prep.n
    flat = table.values.reshape(-1)
    k0 = min(max(math.floor(t0_rel_s / dt + 0.5), 0), table.n_layers - 1)
    if not route:
        return float(table.values[k0, start])
    links = np.asarray(route, dtype=np.int64)
    tau = prep.tau_s[links]
    t_in = t0_rel_s + np.concatenate([[0.0], np.cumsum(tau)[:-1]])
    base = (
        -table.pass_age_s[links]
        if table.pass_age_s is not None
        else np.full(links.shape[0], -np.inf)
    )
    last = {int(start): t0_rel_s}
    since = np.empty(links.shape[0], dtype=np.float64)
    for i, f in enumerate(links.tolist()):
        since[i] = t_in[i] - max(float(base[i]), last.get(f, -math.inf))
        last[f] = float(t_in[i] + tau[i])
    layers = np.minimum(np.maximum(np.floor(t_in / dt + 0.5), 0), table.n_layers - 1)
    k = layers.astype(np.int64)
    slot = table.layer_slot[k]
    w = table.window_s[links]
    window = np.minimum(w, np.maximum(since, 0.0))
    p = -np.expm1(-table.rate_h[slot, links] * ((tau + window) / 3600.0))
    p = np.where(since < w, p, table.pickup_prob[slot, links])
    c_next = _interp(
        table.cont.reshape(-1),
        table.cont.shape[1],
        k,
        tau / dt + table.trip_layers[links],
        table.cell[links],
        table.slope_c[k],
    )
    end = int(links[-1])
    k_end = int(k[-1])
    r = float(
        _interp(flat, n, k_end, np.array([tau[-1] / dt]), np.array([end]), table.slope_v[k_end])[0]
    )
    for i in range(links.shape[0] - 1, -1, -1):
        f = int(links[i])
        r = (
            -float(table.cost[f])
            + float(p[i]) * (float(table.fare[f]) + float(c_next[i]))
            + (1.0 - float(p[i])) * r
        )
    return r


def reference_enterable(
    table: ValueTable, start: int, t0_rel_s: float, route: tuple[int, ...]
) -> bool:
    """``_enterable`` as it was written: the arcs and the allowed mask read at every link."""
    prep = table.prep
    if any(f < 0 or f >= prep.n for f in route):
        return False
    t = t0_rel_s
    e = start
    for f in route:
        lo, hi = int(prep.arc_offsets[e]), int(prep.arc_offsets[e + 1])
        if f not in prep.arc_dst[lo:hi].tolist():
            return False
        if not bool(table.allowed_at(table.start_minute_of_week + t / 60.0)[f]):
            return False
        t += float(prep.tau_s[f])
        e = f
    return True


@pytest.fixture(scope="module")
def tables(evening_tables: tuple[ValueTable, ValueTable]) -> tuple[ValueTable, ValueTable]:
    """The Manhattan table without passes and with the passes of 300 links (some fresh): the
    session's (tests/conftest.py)."""
    return evening_tables


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    t0_rel_s=st.floats(-30.0, 4000.0, allow_nan=False),
    with_passes=st.booleans(),
    length=st.integers(0, 60),
    broken=st.booleans(),
)
def test_route_value_and_enterable_are_the_array_forms_bit_for_bit(
    tables: tuple[ValueTable, ValueTable],
    data: st.DataObject,
    t0_rel_s: float,
    with_passes: bool,
    length: int,
    broken: bool,
) -> None:
    table = tables[1] if with_passes else tables[0]
    prep = table.prep
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    start = int(rng.integers(prep.n))
    # a legal walk (revisits and U-turns included: the route's own passes deplete its curbs)
    route: list[int] = []
    e = start
    for _ in range(length):
        succ = prep.arc_dst[int(prep.arc_offsets[e]) : int(prep.arc_offsets[e + 1])]
        if succ.size == 0:
            break
        e = int(succ[rng.integers(succ.size)])
        route.append(e)
    if broken and route:  # a link that does not follow the one before (or is out of range)
        route[int(rng.integers(len(route)))] = int(rng.integers(-1, prep.n + 1))
    valued = [f for f in route if 0 <= f < prep.n]
    got = route_value(table, start, t0_rel_s, valued)
    want = reference_value(table, start, t0_rel_s, valued)
    assert got == want or (math.isnan(got) and math.isnan(want))
    assert _enterable(table, start, t0_rel_s, tuple(route)) == reference_enterable(
        table, start, t0_rel_s, tuple(route)
    )


def test_a_route_through_a_closed_minute_is_not_enterable(
    tables: tuple[ValueTable, ValueTable],
) -> None:
    """Both forms refuse a legal turn onto a link that is not allowed when the cab gets there
    (the check reads the mask of each link's own minute, not the first one's)."""
    table = tables[0]
    prep = table.prep
    closed = np.flatnonzero(~table.allowed_at(MINUTE))
    assert closed.size  # Midtown has motorways, piers and private links
    arc_src = np.repeat(np.arange(prep.n), np.diff(prep.arc_offsets))
    hit = np.flatnonzero(np.isin(prep.arc_dst, closed))
    e, f = int(arc_src[hit[0]]), int(prep.arc_dst[hit[0]])
    assert not _enterable(table, e, 0.0, (f,))
    assert not reference_enterable(table, e, 0.0, (f,))
