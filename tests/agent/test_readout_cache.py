"""What the route read-out keeps between read-outs (issues 16/20): a minute's allowed mask and
live links as lists once the minute is read often (``agent.planner.deadends.allowed_list``),
keyed by the table's arrays and the minute, and each link's facts per prepared graph, on the
real Midtown table: the same values as the arrays they were read from, and a table with other
allowed links (the same graph, the same minute) reads its own."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from agent.planner import ValueTable
from agent.planner.deadends import _AS_LIST_AFTER, allowed_list, live_links, live_list
from agent.planner.readout import best_next, follow, link_facts, successor_values
from tests.conftest import EVENING_MINUTE

MINUTE = EVENING_MINUTE  # Tuesday 17:00: the minute of the session's tables


@pytest.fixture(scope="module")
def table(evening_tables: tuple[ValueTable, ValueTable]) -> ValueTable:
    """The Manhattan table of Tuesday 17:00 without passes: the session's (tests/conftest.py)."""
    return evening_tables[0]


def test_a_minutes_lists_are_its_arrays(table: ValueTable) -> None:
    start = table.start_minute_of_week
    # the table's minutes, one minute again (kept), and one before its start (computed)
    for m in (start, start + 0.4, start + 7.2, start + 30.0, start - 60.0):
        for _ in range(_AS_LIST_AFTER + 2):
            assert list(allowed_list(table, m)) == table.allowed_at(m).tolist()
            assert list(live_list(table, m)) == live_links(table, m).tolist()
        assert isinstance(allowed_list(table, m), list) and isinstance(live_list(table, m), list)


def test_a_table_with_other_allowed_links_reads_its_own(table: ValueTable) -> None:
    """The same graph and minute, another ``allowed`` array: its own mask, never the kept one
    of the first table; and the first table's choice is unchanged after it."""
    prep = table.prep
    t = 120.0
    for e in np.flatnonzero(prep.cruisable).tolist():
        if len(successor_values(table, e, t)) >= 2:
            break
    else:
        pytest.fail("no junction with two allowed successors in Midtown")
    f = best_next(table, e, t)
    route = follow(table, e, t, 2000.0, 0.0, 40, max_visits=1)[0]
    for _ in range(_AS_LIST_AFTER + 1):  # the first table's minutes kept as lists
        assert follow(table, e, t, 2000.0, 0.0, 40, max_visits=1)[0] == route
    assert isinstance(allowed_list(table, table.start_minute_of_week + t / 60.0), list)
    allowed = table.allowed.copy()
    allowed[:, f] = False
    barred = dataclasses.replace(table, allowed=allowed)
    other = best_next(barred, e, t)
    assert other >= 0 and other != f and bool(allowed[0, other])
    assert f not in follow(barred, e, t, 2000.0, 0.0, 40, max_visits=1)[0]
    assert best_next(table, e, t) == f
    assert follow(table, e, t, 2000.0, 0.0, 40, max_visits=1)[0] == route


def test_link_facts_are_the_arrays(table: ValueTable) -> None:
    prep = table.prep
    g = prep.graph
    for e in range(prep.n):
        succ, u, v, length_m, tau_s, forward = link_facts(prep, e)
        lo, hi = int(prep.arc_offsets[e]), int(prep.arc_offsets[e + 1])
        assert succ == prep.arc_dst[lo:hi].tolist()
        assert (u, v) == (int(g.u_node[e]), int(g.v_node[e]))
        assert (length_m, tau_s) == (float(prep.length_m[e]), float(prep.tau_s[e]))
        assert forward == [x for x in succ if int(g.v_node[x]) != u]  # no U-turn, in order
