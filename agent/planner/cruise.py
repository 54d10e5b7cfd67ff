"""The planner's entry points: solve the MDP on a graph, the policy from a solved table, and a
plan from a cab's link (:func:`plan_cruise`) or from a GPS fix (:func:`plan_from_fix`)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely

from agent.planner.core import ValueTable, prepare, solve_table
from agent.planner.errors import PlannerError
from agent.planner.fleet import LIVE, FleetView, demand_aligned, with_fleet
from agent.planner.inputs import Bool, PassAges, area_mask, pass_age_array
from agent.planner.params import PlannerParams
from agent.planner.plan import Plan, WayNames, plan_from_table
from agent.planner.readout import Spread, best_next
from agent.planner.workspace import WORKSPACE, Workspace
from models.demand import DemandTable, TickDemand, tick_demand_from_table
from tiles.graph import Graph
from tiles.matching import match_fix
from tiles.store import TileStore


def solve(
    graph: Graph,
    demand: TickDemand,
    minute_of_week: float,
    params: PlannerParams = PlannerParams(),
    area: Bool | None = None,
    supply_per_h: npt.NDArray[np.floating[Any]] | None = None,
    monday: dt.date | None = None,
    last_pass_age_s: PassAges | None = None,
) -> ValueTable:
    """Solve the MDP on ``graph`` from ``minute_of_week`` (layer 0) for all links at once.

    ``supply_per_h`` (aligned with ``demand.edge_id``, optional) adds, per link, the vacant cabs
    of the own fleet passing it per hour (a supply map, e.g. from the fleet's last positions)
    to ``params.competing_vacant_per_h``. ``monday``: the local date of the Monday of
    ``minute_of_week``'s week, so that no-entry windows that depend on the date (public
    holidays, months, sun times) are those of the real dates; None: an ordinary week.
    ``last_pass_age_s`` (:data:`PassAges`, at ``minute_of_week``): how long ago a vacant cab
    (this one, or later the fleet's) last passed each link; a recently passed curb holds only
    the hails that arrived since (module docstring, "Recent passes").

    ``params.matching == "dispatch"``: the pickup term is the cab's share of the requests
    around each link (:mod:`agent.planner.dispatch`); ``supply_per_h`` counts the cabs it
    competes with there, and recent passes deplete nothing (no request waits at the curb).
    """
    return _solve(
        graph, demand, minute_of_week, params, area, supply_per_h, monday, last_pass_age_s
    )


def _solve(
    graph: Graph,
    demand: TickDemand,
    minute_of_week: float,
    params: PlannerParams,
    area: Bool | None,
    supply_per_h: npt.NDArray[np.floating[Any]] | None,
    monday: dt.date | None,
    last_pass_age_s: PassAges | None,
    workspace: Workspace | None = None,
) -> ValueTable:
    """:func:`solve`; with ``workspace`` the table's ``V`` and ``C`` are its buffers (the table
    is then valid only while the caller holds the workspace)."""
    prep = prepare(graph, params.step_s, params.speed_factor, area)
    if params.matching == "dispatch":
        from agent.planner.dispatch import assigned_demand

        demand = assigned_demand(
            prep, demand, params.dispatch_reach_s, params.competing_vacant_per_h, supply_per_h
        )
        supply_per_h = None
    return solve_table(
        prep,
        demand,
        minute_of_week,
        params.horizon_s,
        params.cost_per_m,
        params.cost_per_s,
        params.patience_s,
        params.competing_vacant_per_h,
        params.outside_value_share,
        supply_per_h,
        monday,
        pass_age_array(graph, last_pass_age_s),
        dropoff_top_k=params.dropoff_top_k,
        workspace=workspace,
    )


def next_link(table: ValueTable, edge_id: int, minute_of_week: float) -> int:
    """The policy: global id of the best link to enter on leaving ``edge_id`` at
    ``minute_of_week`` (within the table's horizon), or -1 when no link may be entered."""
    local = int(table.prep.graph.local([edge_id])[0])
    if local < 0:
        return -1
    t_rel = (minute_of_week - table.start_minute_of_week) * 60.0
    f = best_next(table, local, max(t_rel, 0.0))
    return -1 if f < 0 else int(table.prep.graph.edge_id[f])


def policy_step(
    table: ValueTable,
    local_link: int,
    t_rel_s: float,
    last_pass_s: npt.NDArray[np.float64] | None = None,
) -> int:
    """:func:`next_link` in the table's local indices and seconds after its start (for
    simulators stepping many cabs on the table's own graph); -1 when nothing may be entered.
    ``last_pass_s``: per local link, when a vacant cab last passed it (seconds after the
    table's start, ``-inf`` if unknown)."""
    return best_next(table, local_link, max(t_rel_s, 0.0), last_pass_s)


def plan_cruise(
    graph: Graph,
    demand: TickDemand,
    start_edge_id: int,
    minute_of_week: float,
    params: PlannerParams = PlannerParams(),
    *,
    fraction: float = 0.0,
    area: Bool | None = None,
    way_names: WayNames | None = None,
    supply_per_h: npt.NDArray[np.floating[Any]] | None = None,
    monday: dt.date | None = None,
    last_pass_age_s: PassAges | None = None,
    previous_route: Sequence[int] | None = None,
    committed_links: int = 0,
    fleet: FleetView | None = None,
    spread_salt: int | None = None,
) -> Plan:
    """Plan from a cab on ``start_edge_id`` (at ``fraction`` of it) at ``minute_of_week``.

    Pure given its inputs; ``way_names`` (e.g. ``store.way_names``) names the streets of the
    directions; ``monday``: see :func:`solve`. ``last_pass_age_s``: seconds (at
    ``minute_of_week``) since a vacant cab last passed each link (:func:`solve`); the cab's
    own link counts as passed when the cab leaves it (a vacant cab is driving it now).
    ``previous_route`` / ``committed_links``: the route shown before (global ids of the links
    still to enter after ``start_edge_id``) and the hysteresis of :func:`plan_from_table`.
    ``fleet`` (:func:`agent.planner.fleet.fleet_view`, per local link of ``graph``): the other
    cabs, from the live snapshot or the supply prior: its background supply adds to
    ``supply_per_h``, the links where another vacant cab is now count as passed, and the others'
    planned passes weigh on the route read-out (:func:`agent.planner.fleet.with_fleet`).
    ``spread_salt``: the cab's own salt (:func:`agent.planner.readout.spread_salt_of`): with
    ``params.route_spread_eps`` > 0 and no live snapshot in ``fleet``, the read-out spreads
    (:func:`spread_of`); None reads out ``argmax Q``.
    """
    g = graph
    e0 = int(g.local([start_edge_id])[0])
    if e0 < 0:
        raise PlannerError(f"start link {start_edge_id} is not among the planned links")
    frac = min(max(float(fraction), 0.0), 1.0)
    prep = prepare(g, params.step_s, params.speed_factor, area)
    rest_s = (1.0 - frac) * float(prep.tau_s[e0])
    t_dec = minute_of_week + rest_s / 60.0
    ages = pass_age_array(g, last_pass_age_s)
    ages = np.full(g.n, np.inf) if ages is None else ages + rest_s  # aged to the decision
    ages[e0] = 0.0
    if fleet is not None:
        background = demand_aligned(g, fleet.supply_per_h, demand.edge_id)
        if background is not None:
            given = 0.0 if supply_per_h is None else np.asarray(supply_per_h, dtype=np.float64)
            supply_per_h = background + given
        if fleet.seen_age_s is not None:
            ages = np.minimum(ages, fleet.seen_age_s + rest_s)
    # the table never leaves this call, so its V and C may live in the planner's workspace
    # (no page faults on a fresh array every tick: agent/planner/workspace.py)
    with WORKSPACE.borrowed() as ws:
        table = _solve(g, demand, t_dec, params, area, supply_per_h, monday, ages, ws)
        if fleet is not None and fleet.claims_per_h is not None:
            table = with_fleet(table, FleetView(fleet.source, claims_per_h=fleet.claims_per_h))
        return plan_from_table(
            table,
            start_edge_id,
            frac,
            minute_of_week,
            params,
            demand.source,
            way_names,
            previous_route=previous_route,
            committed_links=committed_links,
            spread=spread_of(params, fleet, spread_salt),
        )


def spread_of(params: PlannerParams, fleet: FleetView | None, salt: int | None) -> Spread | None:
    """The read-out's spread of a cab with ``salt`` (None: none given): only without a live
    snapshot (``fleet`` from the supply prior, or none), where the cabs would otherwise all read
    the same values the same way; with one, the other cabs' planned passes keep them apart."""
    if salt is None or params.route_spread_eps <= 0.0:
        return None
    if fleet is not None and fleet.source == LIVE:
        return None
    return Spread(params.route_spread_eps, salt)


def plan_from_fix(
    store: TileStore,
    table: DemandTable,
    lon: float,
    lat: float,
    heading_deg: float | None,
    minute_of_week: float,
    params: PlannerParams = PlannerParams(),
    *,
    speed_mps: float | None = None,
    area_polygon: shapely.Geometry | None = None,
) -> Plan:
    """Map-match a GPS fix, load the links within ``params.radius_m`` and plan from there."""
    sha = store.meta.get("source_sha256")
    if table.network_sha256 != sha or table.n_edges != store.n_edges_total:
        raise PlannerError(
            "the demand table was built for another road network "
            f"({table.network_sha256[:12]} vs tiles {str(sha)[:12]})"
        )
    g = store.radius_graph(lon, lat, params.radius_m)
    if g.n == 0:
        raise PlannerError(f"no road links within {params.radius_m:.0f} m of the cab")
    moving = heading_deg is not None
    match = match_fix(
        g, lon, lat, heading_deg, speed_mps if speed_mps is not None else (10.0 if moving else None)
    )
    area = area_mask(g, area_polygon) if area_polygon is not None else None
    horizon_min = math.ceil(params.horizon_s / 60.0) + 1
    demand = tick_demand_from_table(table, g.edge_id, math.floor(minute_of_week), horizon_min)
    return plan_cruise(
        g,
        demand,
        match.best.edge_id,
        minute_of_week,
        params,
        fraction=match.best.fraction,
        area=area,
        way_names=store.way_names,
    )
