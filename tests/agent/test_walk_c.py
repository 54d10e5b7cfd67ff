"""The route read-out's walk in C (agent/planner/walk_c.py, _walk.c) gives Python's routes,
lengths, durations and route values bit for bit: on the real Manhattan table, with the table's
passes, the fleet's claims and seen cabs, the cab's own route, prefixes (a kept route), every
rule of the shown route, and links closed minute by minute (so the walk asks for masks as it
crosses minutes); and it gives way where it should."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.planner import ValueTable, walk_c
from agent.planner.fleet import FleetView, with_fleet
from agent.planner.readout import _follow_py, follow, successor_values
from agent.planner.stability import _enterable, _enterable_py, _route_value_py, route_value


def _bits(x: float) -> int:
    return int(np.float64(x).view(np.int64))


@pytest.fixture(scope="module")
def tables(evening_tables: tuple[ValueTable, ValueTable]) -> list[ValueTable]:
    """The session's Manhattan tables (without and with passes), a view of the second with the
    fleet's claims and seen cabs, one with links closed at random minute by minute, and one
    with every link passed in the last two minutes."""
    plain, passed = evening_tables
    n = plain.prep.n
    rng = np.random.default_rng(11)
    claims = np.where(rng.random(n) < 0.2, rng.uniform(0.5, 30.0, n), 0.0)
    seen = np.where(rng.random(n) < 0.1, rng.uniform(0.0, 600.0, n), np.inf)
    fleet = with_fleet(
        passed, FleetView("test", claims_per_h=claims, seen_age_s=seen), seen_offset_s=40.0
    )
    closed = plain.allowed & (rng.random(plain.allowed.shape) > 0.08)
    windows = dataclasses.replace(plain, allowed=closed)
    # every link passed a moment ago: every pickup probability is a depleted one (numpy's
    # expm1, whose last bit differs from the C library's on a few per cent of these)
    drained = dataclasses.replace(plain, pass_age_s=rng.uniform(0.0, 120.0, n))
    return [plain, passed, fleet, windows, drained]


def test_the_install_built_it_and_numpys_expm1_is_checked() -> None:
    assert walk_c.library_path() is not None, "pip install -e . builds agent/planner/_walk"
    assert walk_c.ready(), walk_c.status()
    assert walk_c.numpy_expm1_loop() is not None


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    which=st.integers(0, 4),
    t0=st.floats(-30.0, 2600.0, allow_nan=False),
    min_m=st.sampled_from([0.0, 300.0, 1500.0, 6000.0]),
    min_s=st.sampled_from([0.0, 60.0, 300.0, 1200.0]),
    max_edges=st.integers(0, 60),
    max_visits=st.integers(1, 3),
    with_last=st.booleans(),
)
def test_the_walk_and_the_route_value_are_pythons_bit_for_bit(
    tables: list[ValueTable],
    data: st.DataObject,
    which: int,
    t0: float,
    min_m: float,
    min_s: float,
    max_edges: int,
    max_visits: int,
    with_last: bool,
) -> None:
    table = tables[which]
    n = table.prep.n
    start = data.draw(st.integers(0, n - 1))
    last = None
    if with_last:
        rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
        last = np.where(rng.random(n) < 0.3, rng.uniform(-900.0, 600.0, n), -np.inf)
    # a prefix: the Python walk's own first links (a kept route), cut anywhere
    head, _, _ = _follow_py(table, start, t0, 2000.0, 0.0, 30, last, max_visits, (), None)
    prefix = tuple(head[: data.draw(st.integers(0, len(head)))])
    args = (table, start, t0, min_m, min_s, max_edges, last, max_visits, prefix)
    want = _follow_py(*args, None)
    got = walk_c.follow(*args)
    assert got is not None
    assert got[0] == want[0]
    assert (_bits(got[1]), _bits(got[2])) == (_bits(want[1]), _bits(want[2]))
    assert follow(*args[:6], last_pass_s=last, max_visits=max_visits, prefix=prefix) == got
    # each choice's Q, bit for bit (a last bit that changes no choice shows here)
    trace = np.full(max(max_edges, 1), np.nan)
    walk_c.follow(*args, trace=trace)
    want_q = _trace_of_python(table, start, t0, got[0], last)[len(prefix) :]
    assert [_bits(q) for q in trace[: len(want_q)]] == [_bits(q) for q in want_q]
    for route in (want[0], list(prefix), head):
        if route:
            value = walk_c.route_value(table, start, t0, route)
            assert value is not None
            assert _bits(value) == _bits(_route_value_py(table, start, t0, route))
            assert route_value(table, start, t0, route) == value


def _trace_of_python(
    table: ValueTable, start: int, t0: float, route: list[int], last: np.ndarray | None = None
) -> list[float]:
    """The ``Q`` of each link of ``route`` when the walk chose it, from Python's scores."""
    own = {start: t0}
    t, e = t0, start
    out = []
    for f in route:
        out.append(dict(successor_values(table, e, t, last, dict(own)))[f])
        t += float(table.prep.tau_s[f])
        own[f], e = t, f
    return out


def test_every_depleted_probability_is_numpys_expm1(tables: list[ValueTable]) -> None:
    """On the table where every curb was passed in the last two minutes each step's ``P`` goes
    through expm1: a C library's expm1 in its place changes the last bit of a few dozen of
    these 13,500 choices (measured: 44) and of some of the routes' values, numpy's none."""
    table = tables[4]
    steps = 0
    for start in range(0, table.prep.n, 7):
        trace = np.full(40, np.nan)
        got = walk_c.follow(table, start, 10.0, 3000.0, 300.0, 40, None, 2, (), trace=trace)
        assert got is not None
        want = _trace_of_python(table, start, 10.0, got[0])
        assert [_bits(q) for q in trace[: len(want)]] == [_bits(q) for q in want]
        steps += len(want)
        if got[0]:
            value = walk_c.route_value(table, start, 10.0, got[0])
            assert value is not None
            assert _bits(value) == _bits(_route_value_py(table, start, 10.0, got[0]))
    assert steps > 10_000


@settings(max_examples=150, deadline=None)
@given(data=st.data(), t0=st.floats(-30.0, 2600.0, allow_nan=False), cut=st.integers(0, 40))
def test_enterable_is_pythons(
    tables: list[ValueTable], data: st.DataObject, t0: float, cut: int
) -> None:
    """The kept route's check: a route read on one table (so mostly legal), cut, with a link
    changed or not, on the table with links closed minute by minute."""
    table = tables[3]
    n = table.prep.n
    start = data.draw(st.integers(0, n - 1))
    route = list(_follow_py(tables[0], start, t0, 1e9, 1e9, cut, None, 2, (), None)[0])
    change: bool = data.draw(st.booleans())
    if route and change:
        route[data.draw(st.integers(0, len(route) - 1))] = data.draw(st.integers(-1, n))
    want = _enterable_py(table, start, t0, tuple(route))
    assert walk_c.enterable(table, start, t0, route) is want
    assert _enterable(table, start, t0, tuple(route)) is want


def test_a_walk_across_many_minutes_asks_for_each_mask_and_leaves_no_state(
    tables: list[ValueTable],
) -> None:
    table = tables[3]
    for start in range(0, table.prep.n, 97):
        want = _follow_py(table, start, 5.0, 1e9, 2400.0, 400, None, 3, (), None)
        assert walk_c.follow(table, start, 5.0, 1e9, 2400.0, 400, None, 3, ()) == want
    own_t, visits = walk_c._work_arrays(table.prep.n)
    assert bool(np.all(own_t == -np.inf)) and not visits.any()


def test_it_gives_way_where_python_decides(tables: list[ValueTable]) -> None:
    table = tables[0]
    n = table.prep.n
    assert walk_c.follow(table, 0, math.nan, 0.0, 0.0, 10, None, 2, ()) is None
    assert walk_c.follow(table, n, 0.0, 0.0, 0.0, 10, None, 2, ()) is None
    assert walk_c.follow(table, 0, 0.0, 0.0, 0.0, 10, None, 2, (-1,)) is None
    assert walk_c.route_value(table, 0, 0.0, []) is None
    assert walk_c.route_value(table, 0, 0.0, [n]) is None
    assert walk_c.route_value(table, 0, math.inf, [1]) is None
    # the route rules the C walk does not take (no visit bound) are Python's
    assert follow(table, 0, 0.0, 500.0, 0.0, 10) == _follow_py(
        table, 0, 0.0, 500.0, 0.0, 10, None, 0, (), None
    )


def test_turned_off_the_agent_walks_in_python() -> None:
    code = "from agent.planner import walk_c\nprint(walk_c.ready(), walk_c.status()['state'])\n"
    env = {**os.environ, "NAGASHI_WALK_C": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "disabled"]
