"""The cruising planner's real plans (agent.planner on the real TLC demand) against the checks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from models import DemandTable, tick_demand_from_table
from safety import Reason, RouteConfig, SafetyConfig, SafetyGate, TickInput, judge_route
from tiles import Graph, TileStore

from .helpers import NOW_S, Oracle, fix_on

planner = pytest.importorskip("agent.planner")

N_PLANS = 30


Plans = list[tuple[Graph, int, float, float, tuple[int, ...]]]


def _plans(store: TileStore, manhattan: Graph, demand_dir: Path, route_max_visits: int) -> Plans:
    """(graph, start edge, fraction, minute of week, plan edges) at random places and times."""
    table = DemandTable.load(demand_dir)
    params = planner.PlannerParams(route_max_visits=route_max_visits)
    rng = np.random.default_rng(11)
    allowed = np.flatnonzero(manhattan.cruise_allowed())
    out = []
    for _ in range(N_PLANS):
        a = int(rng.choice(allowed))
        frac = float(rng.uniform(0.1, 0.9))
        fix = fix_on(manhattan, a, frac)
        g = store.radius_graph(fix.lon, fix.lat, params.radius_m)
        mow = float(rng.uniform(0, 7 * 1440))
        demand = tick_demand_from_table(table, g.edge_id, int(mow), int(params.horizon_s // 60) + 1)
        plan = planner.plan_cruise(g, demand, int(manhattan.edge_id[a]), mow, params, fraction=frac)
        out.append((g, int(manhattan.edge_id[a]), frac, mow, plan.edges))
    return out


@pytest.fixture(scope="module")
def plans(manhattan: Graph, manhattan_store: TileStore, manhattan_demand: Path) -> Plans:
    """The planner's routes as the agent asks for them."""
    return _plans(manhattan_store, manhattan, manhattan_demand, 2)


@pytest.fixture(scope="module")
def bare_plans(manhattan: Graph, manhattan_store: TileStore, manhattan_demand: Path) -> Plans:
    """The bare policy read out (``route_max_visits=0``): it circles hot blocks and U-turns."""
    return _plans(manhattan_store, manhattan, manhattan_demand, 0)


def test_plans_never_hold_a_forbidden_link_or_illegal_turn(
    plans: Plans, bare_plans: Plans, manhattan_store: TileStore
) -> None:
    for which, trims_allowed in (
        (plans, {Reason.ROUTE_CLOSED_WINDOW}),  # no loop, no U-turn: nothing to cut there
        (bare_plans, {Reason.ROUTE_LOOP, Reason.ROUTE_CLOSED_WINDOW}),
    ):
        hard = Counter[str]()
        trimmed = Counter[str]()
        for g, start, frac, mow, edges in which:
            if not edges:
                continue
            j = judge_route(g, edges, start, frac, mow, RouteConfig())
            hard.update(j.reasons)
            trimmed.update(j.trimmed)
        # the planner is safe by construction: nothing that condemns a whole route
        assert hard == Counter(), hard
        assert set(trimmed) <= trims_allowed, trimmed


def test_gate_trims_planner_loops_and_validates_the_rest(
    bare_plans: Plans, manhattan: Graph, manhattan_store: TileStore
) -> None:
    oracle = Oracle.from_restrictions(manhattan, manhattan_store.restrictions())
    gate = SafetyGate(SafetyConfig(require_demand=False, require_bundle_status=False))
    validated = trimmed = 0
    for g, start, frac, mow, edges in bare_plans:
        a = int(manhattan.local([start])[0])
        tick = TickInput(
            now_s=NOW_S,
            minute_of_week=mow,
            fix=fix_on(manhattan, a, frac),
            graph=g,
            route=edges,
            demand=None,
        )
        v = gate.check(tick)
        if v.ok:
            validated += 1
            trimmed += bool(v.trimmed)
            assert v.route == edges[: len(v.route)]
            assert oracle.violations(list(v.route), start, mow, v.fraction or 0.0) == []
            again = judge_route(g, v.route, start, v.fraction or 0.0, mow, RouteConfig())
            assert again.all_reasons == ()
        else:
            assert not {
                Reason.ROUTE_FORBIDDEN_LINK,
                Reason.ROUTE_ILLEGAL_TURN,
                Reason.ROUTE_DISCONNECTED,
                Reason.ROUTE_UNKNOWN_LINK,
                Reason.INTERNAL_ERROR,
            } & set(v.reasons)
    assert validated >= N_PLANS // 2
    assert trimmed >= 1  # the planner's loops were cut, not the whole route
