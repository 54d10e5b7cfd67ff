"""Dead ends (agent.planner.deadends): the route read-out never leads the cab into a link it
could only leave by a U-turn, so the tick at the end of a route it showed still has a route
(the ROUTE_MISSING fallbacks of ``nagashi-agent``), on the real Midtown bundle."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import zoneinfo
from pathlib import Path

import numpy as np
import pytest

from agent.bundle import LoadedBundle, load_bundle
from agent.decide import TickInputs, decide, tick_demand
from agent.planner import FleetView, solve, with_fleet
from agent.planner.core import ValueTable
from agent.planner.deadends import _peel, live_links
from agent.planner.readout import follow
from safety import Fix, Reason
from tools.sim.agent_tick import _point_along

#: a Tuesday evening peak in Midtown (the bundle's time zone)
NOW_S = dt.datetime(2014, 4, 22, 17, 30, tzinfo=zoneinfo.ZoneInfo("America/New_York")).timestamp()


@pytest.fixture(scope="module")
def bundle(manhattan_bundle: Path) -> LoadedBundle:
    return load_bundle(manhattan_bundle)


@pytest.fixture(scope="module")
def table(bundle: LoadedBundle) -> ValueTable:
    """The table solved over the whole extract inside the business area, 17:30."""
    g = bundle.store.all()
    mow = bundle.minute_of_week(NOW_S)
    demand, _, error = tick_demand(bundle, g, mow, None)
    assert demand is not None, error
    area = bundle.area.edge_mask(g) if bundle.area is not None else None
    return solve(g, demand, mow, bundle.planner, area)


def test_a_live_link_has_a_live_way_on_and_a_dead_one_none(table: ValueTable) -> None:
    g = table.prep.graph
    mow = table.start_minute_of_week
    live = live_links(table, mow)
    allowed = table.allowed_at(mow)
    src, dst = table.prep.arc_src, table.prep.arc_dst
    forward = g.v_node[dst] != g.u_node[src]
    has = np.bincount(src[forward & live[dst]], minlength=g.n) > 0
    # the whole extract is loaded: no turn leads off the graph, so live = allowed with a live way on
    assert (g.local(g.turn_to) >= 0).all()
    assert np.array_equal(live, allowed & has)
    # the extract is cut out of the city: a good share of its links lead only off it
    assert 0 < int((allowed & ~live).sum()) < int(allowed.sum())
    assert not live[~allowed].any()


def test_no_route_from_a_live_link_enters_a_dead_end(
    bundle: LoadedBundle, table: ValueTable
) -> None:
    """Failed before the fix: the routes of 407 of the 2,264 live links entered a dead end
    (most a street cut by the extract's edge, some a service spur) and stopped there."""
    p = bundle.planner
    g = table.prep.graph
    live = live_links(table, table.start_minute_of_week)
    bad = []
    for e in np.flatnonzero(live)[::3].tolist():
        route, _, _ = follow(
            table,
            e,
            0.0,
            p.route_min_m,
            p.route_min_s,
            p.max_route_edges,
            max_visits=p.route_max_visits,
        )
        if not route or not live[route].all():
            bad.append(int(g.edge_id[e]))
    assert bad == []


def _fix(bundle: LoadedBundle, edge_id: int, fraction: float, time_s: float) -> Fix:
    g = bundle.store.all()
    local = int(g.local([edge_id])[0])
    lon, lat, bearing = _point_along(np.asarray(g.geometry(local), dtype=np.float64), fraction)
    return Fix(time_s=time_s, lon=lon, lat=lat, heading_deg=bearing, speed_mps=5.0, accuracy_m=7.6)


def test_the_tick_at_the_end_of_every_link_of_a_route_shown_still_has_a_route(
    bundle: LoadedBundle,
) -> None:
    """Failed before the fix: from the end of link 91 the route shown was 91, 43, 41, 89 (89
    leaves the extract at its southern edge: a dead end); at the end of 89 the tick planned
    nothing: ROUTE_MISSING, "follow the road"."""
    t = NOW_S
    prev = _fix(bundle, 91, 0.5, t - 5.0)
    fix = _fix(bundle, 91, 1.0, t)
    r = decide(
        bundle,
        TickInputs(now_s=t, fix=fix, previous_fix=prev, locale="en", trigger="first"),
    )
    assert r.instruction.kind == "route"
    shown = tuple(r.instruction.route_edges)
    assert shown[0] == 91
    for link in shown[1:6]:  # drive the route shown, a tick at the end of each link
        t += 5.0
        prev, fix = fix, _fix(bundle, link, 1.0, t)
        r = decide(
            bundle,
            TickInputs(
                now_s=t,
                fix=fix,
                previous_fix=prev,
                locale="en",
                trigger="interval",
                last_moving_fix=prev,
                previous_route=shown,
            ),
        )
        assert Reason.ROUTE_MISSING not in r.verdict.reasons, (link, r.verdict.reasons)
        assert r.plan is not None and r.plan.edges, link
        assert math.isfinite(r.plan.expected_revenue)
        if r.instruction.kind == "route":
            shown = tuple(r.instruction.route_edges)


def test_the_views_of_one_mask_share_its_live_links_and_another_mask_has_its_own(
    table: ValueTable,
) -> None:
    """A cab's view of the table with the fleet (the simulator's thousands a tick) peels no
    graph again (failed before: the cache was per table, and every view is a new table); a mask
    with links closed on the same graph gets its own live links, not the cached ones."""
    mow = table.start_minute_of_week
    live = live_links(table, mow)
    view = with_fleet(table, FleetView("none", seen_age_s=np.zeros(table.prep.n)))
    assert view is not table and view.prep is table.prep
    assert live_links(view, mow) is live
    shut = np.flatnonzero(live)[:50]
    allowed = table.allowed.copy()
    allowed[:, shut] = False
    other = dataclasses.replace(table, allowed=allowed)
    got = live_links(other, mow)
    assert np.array_equal(got, _peel(other, other.allowed_at(mow)))
    assert not got[shut].any() and live[shut].all()
    assert live_links(table, mow) is live  # the first mask's entry is still there
