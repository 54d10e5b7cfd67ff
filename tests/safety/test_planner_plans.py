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


@pytest.fixture(scope="module")
def plans(
    manhattan: Graph, manhattan_store: TileStore, manhattan_demand: Path
) -> list[tuple[Graph, int, float, float, tuple[int, ...]]]:
    """(graph, start edge, fraction, minute of week, plan edges) at random places and times."""
    table = DemandTable.load(manhattan_demand)
    params = planner.PlannerParams()
    rng = np.random.default_rng(11)
    allowed = np.flatnonzero(manhattan.cruise_allowed())
    out = []
    for _ in range(N_PLANS):
        a = int(rng.choice(allowed))
        frac = float(rng.uniform(0.1, 0.9))
        fix = fix_on(manhattan, a, frac)
        g = manhattan_store.radius_graph(fix.lon, fix.lat, params.radius_m)
        mow = float(rng.uniform(0, 7 * 1440))
        demand = tick_demand_from_table(table, g.edge_id, int(mow), int(params.horizon_s // 60) + 1)
        plan = planner.plan_cruise(g, demand, int(manhattan.edge_id[a]), mow, params, fraction=frac)
        out.append((g, int(manhattan.edge_id[a]), frac, mow, plan.edges))
    return out


def test_plans_never_hold_a_forbidden_link_or_illegal_turn(
    plans: list[tuple[Graph, int, float, float, tuple[int, ...]]],
    manhattan_store: TileStore,
) -> None:
    hard = Counter[str]()
    trimmed = Counter[str]()
    for g, start, frac, mow, edges in plans:
        if not edges:
            continue
        j = judge_route(g, edges, start, frac, mow, RouteConfig())
        hard.update(j.reasons)
        trimmed.update(j.trimmed)
    # the planner is safe by construction: nothing that condemns a whole route
    assert hard == Counter(), hard
    # (it does circle and U-turn: see test_gate_trims_planner_loops)
    assert set(trimmed) <= {Reason.ROUTE_LOOP, Reason.ROUTE_CLOSED_WINDOW}


def test_gate_trims_planner_loops_and_validates_the_rest(
    plans: list[tuple[Graph, int, float, float, tuple[int, ...]]],
    manhattan: Graph,
    manhattan_store: TileStore,
) -> None:
    oracle = Oracle.from_restrictions(manhattan, manhattan_store.restrictions())
    gate = SafetyGate(SafetyConfig(require_demand=False, require_bundle_status=False))
    validated = trimmed = 0
    for g, start, frac, mow, edges in plans:
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
