r"""Cruising planner: where an empty taxi should drive next, as a finite-horizon MDP.

The formulation follows Qu et al., "A cost-effective recommender system for taxi drivers"
(KDD 2014) and Rong et al., "The rich and the poor: a Markov decision process approach to
optimizing taxi driver revenue efficiency" (CIKM 2016), on the edge-based road graph, extended
with the value of continuing from where a passenger is dropped off.

States and actions
------------------
A state is ``(e, k)``: the cab is vacant at the end of directed link ``e`` at time layer
``k`` (``t_k = t_0 + k Δ``, ``Δ = step_s``, ``k = 0..K-1``, ``K = horizon_s / Δ``). An action
enters a successor ``f`` of ``e`` along a legal turn (``graph.turn_pairs``; a turn restriction
is a missing turn) that a cruising taxi may enter at ``t_k``:

    A(e, k) = { f : (e, f) ∈ turns,  cruise_allowed(f, minute(t_k)),  area(f) }

so a motorway, private road, pier, link inside its no-entry window, or link outside the
business area can never be chosen: the planner is safe by construction.

Pickups
-------
The demand (``models.TickDemand``) gives ``λ_f(t)``, hails per hour on ``f`` in the 30-minute
slot of ``t``. A cab driving ``f`` for ``τ_f`` seconds (free-flow time divided by
``speed_factor``) meets the hails that arise while it is there plus those already waiting at the
curb. A waiting hail leaves at rate ``1/θ`` (patience ``patience_s``) and is taken by another
vacant cab at rate ``ν_f`` per hour (the supply: ``competing_vacant_per_h`` plus an optional
per-link supply map of the own fleet), so it is still there on average for
``W_f = 1 / (ν_f/3600 + 1/θ)`` seconds. With Poisson hails:

    P_f(t) = 1 − exp( −λ_f(t) (τ_f + W_f) / 3600 )

A pickup on ``f`` pays the mean fare ``F_f`` and ends ``D_f`` seconds later (mean trip duration)
in cell ``c'`` with probability ``π(c' | c(f))`` (``TickDemand.dropoff``), where the cab is
vacant again. Its value there is the mean value of the cruisable links of that cell,

    U_c(k) = mean_{e ∈ c} V(e, k),

and a drop-off outside the considered links (the last column of ``dropoff``) is worth
``U_out(k) = outside_value_share · mean_c U_c(k)``. The default share 0 counts only the fare
of a trip that leaves the planned area: what the cab earns afterwards, away from its area, is
not known here (and a Japanese cab must drive back empty into its business area). Hence

    C_f(k) = Σ_{c'} π(c' | c(f)) U_{c'}(k + (τ_f + D_f)/Δ) + π(out | c(f)) U_out(·).

Bellman recursion (backward over layers)
----------------------------------------
    Q(e → f, k) = −(c_m L_f + c_s τ_f)
                  + P_f(t_k) [F_f + C_f(k)] + (1 − P_f(t_k)) V(f, k + τ_f/Δ)
    V(e, k)     = max_{f ∈ A(e, k)} Q(e → f, k)        (U_out(k+1) when A(e, k) is empty)
    V(·, k)     = 0 for k ≥ K                            (finite horizon)

``c_m``/``c_s`` are the driving costs per metre and per second (``cost_per_m``,
``cost_per_s``, in the fare's currency). A fare counts in full when the pickup falls inside the
horizon. Values at fractional layers are linear in time between layers; for links shorter than
one layer (``τ_f < Δ``) the value is extrapolated linearly from the next two layers (``V`` is
almost linear in the remaining time, so the error is of second order) instead of rounding every
short link up to a whole layer. ``Q`` depends on ``e`` only through ``A(e, k)``, so one layer is
an ``n``-vector of ``Q``, and the successor maximum is taken column by column over the sources
sorted by out-degree (``_planner_core._successor_columns``: one ``np.maximum`` per out-degree
rank, faster here than ``np.maximum.reduceat``); the Python loops run over the ``K`` layers and
the few out-degree ranks.

Recent passes
-------------
The state ``(e, k)`` cannot remember which curbs a vacant cab has just drained, so the tick
passes it in: ``a_e``, the seconds since a vacant cab (this one; later the fleet's) last passed
``e``, at layer 0 (``last_pass_age_s``; unknown: ``∞``). A hail still waiting when the cab
enters ``e`` at ``t_k`` arrived at most ``W`` before (it leaves at rate ``1/W``) *and* after the
last pass (that cab would have taken it), so of the window ``W`` only the last
``a_e + (t_k − t_0)`` seconds can have filled:

    P_e(k) = 1 − exp( −λ_e(t_k) (τ_e + min(W_e, a_e + k Δ)) / 3600 )

(the exact expectation under exponential waiting is ``λ W (1 − e^{−a/W})``; ``min(W, a)`` is its
piecewise-linear envelope, equal at both ends, the read-out's and the simulator's rule, and it
ends: from ``k ≥ (W_e − a_e)/Δ`` the curb is as fresh as the model assumes, so only the first
few layers of the recently passed links differ, ``core._depleted_probability``). The backward
pass uses ``P_e(k)`` in those layers: a hail arriving after now builds up again, so later
layers are unchanged. The cab's own link counts as passed when it leaves it (``a = 0``).

The recommended route follows ``argmax Q`` from the cab's link (decision at the end of the
current link, ties to the lowest local index), advancing time by each link's ``τ``, until it
covers ``route_min_m`` and ``route_min_s`` (or the horizon ends). The read-out counts the
route's own passes as vacant passes (as above, from the time of the route's pass), enters no
link twice (``route_max_visits = 1``) and makes no U-turn: beyond the cab's past passes the
values assume a fresh curb, so the bare policy may circle one hot block. With the route shown
before, :mod:`agent.planner.stability` keeps it unless the new one is better by
``route_switch_margin`` and never takes back a manoeuvre the cab is committed to.
``V(e₀, 0)`` is the expected net revenue over the horizon. Same inputs, same bytes:
:meth:`Plan.to_json`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely

from agent.errors import AgentError
from agent.planner.core import ValueTable, prepare, solve_table
from agent.planner.directions import Direction, directions
from agent.planner.fleet import FleetView, demand_aligned, fleet_view, with_fleet
from agent.planner.readout import action_values, best_next, follow
from agent.planner.stability import RouteChoice, choose_route, is_committed, route_value
from models.demand import DemandTable, TickDemand, tick_demand_from_table
from tiles.graph import Graph
from tiles.matching import match_fix
from tiles.store import TileStore

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
Bool = npt.NDArray[np.bool_]
#: seconds since a vacant cab last passed each link: a mapping global edge id -> seconds, or an
#: array aligned to the graph's links (``inf``: unknown, i.e. long ago)
PassAges = Mapping[int, float] | npt.NDArray[np.floating[Any]]
WayNames = Callable[[Iterable[int]], Mapping[int, str]]


class PlannerError(AgentError):
    """The planner cannot plan from these inputs (start link unknown, demand for another
    network): keep the previous recommendation or tell the driver to follow the road."""


@dataclass(frozen=True)
class PlannerParams:
    """Cruising planner parameters. Money is in the demand table's currency (USD for NYC)."""

    #: links considered around the cab (issue 4: 3 km)
    radius_m: float = 3000.0
    #: planning horizon (issue 4: 30 to 60 minutes)
    horizon_s: float = 2700.0
    #: layer length; demand changes per 30-min slot and no-entry windows per minute, so 10 s
    #: resolves both while links shorter than a layer are handled by extrapolation
    step_s: float = 10.0
    #: cruising speed as a share of the free-flow speed of the tiles;
    #: :func:`speed_factor_from_demand` measures it from the trips of a demand table
    speed_factor: float = 1.0
    #: driving cost per metre and per second; 0 makes the objective revenue, as in issue 4
    cost_per_m: float = 0.0
    cost_per_s: float = 0.0
    #: mean time a hailing passenger waits at the curb before giving up (the simulator uses the
    #: same default): trip records only hold served trips, so it is an assumption, 5 minutes
    patience_s: float = 300.0
    #: other vacant cabs passing a link per hour (supply); 0 is a lone cab
    competing_vacant_per_h: float = 0.0
    #: value of a drop-off outside the planned links, as a share of the mean cell value
    outside_value_share: float = 0.0
    #: the route covers at least this distance and this time (unless the horizon ends first)
    route_min_m: float = 2000.0
    route_min_s: float = 300.0
    max_route_edges: int = 400
    #: the route enters a link at most this often (counting the cab's own) and makes no U-turn;
    #: 1: never a link twice (issue 15: a driver is not told to circle; where only a link the
    #: route already holds is left, the route ends there and the next tick plans on), within
    #: safety/'s ``RouteConfig.max_visits_per_link``; 0 reads out the bare policy
    route_max_visits: int = 1
    #: hysteresis (agent.planner.stability): a new route replaces the one shown only when its
    #: expected revenue is higher by this share of the shown route's
    route_switch_margin: float = 0.02
    #: commitment: within this many seconds (at the cab's speed) or metres of the shown route's
    #: next manoeuvre, a new route that does not make that same manoeuvre is refused
    route_commit_s: float = 8.0
    route_commit_m: float = 30.0

    def __post_init__(self) -> None:
        checks = {
            "radius_m": self.radius_m > 0,
            "step_s": 0 < self.step_s <= 120,
            "horizon_s": self.step_s <= self.horizon_s <= 4 * 3600,
            "speed_factor": 0 < self.speed_factor <= 2,
            "cost_per_m": self.cost_per_m >= 0,
            "cost_per_s": self.cost_per_s >= 0,
            "patience_s": self.patience_s > 0,
            "competing_vacant_per_h": self.competing_vacant_per_h >= 0,
            "outside_value_share": 0 <= self.outside_value_share <= 1,
            "route_min_m": self.route_min_m >= 0,
            "route_min_s": self.route_min_s >= 0,
            "max_route_edges": self.max_route_edges >= 1,
            "route_max_visits": self.route_max_visits >= 0,
            "route_switch_margin": 0 <= self.route_switch_margin <= 1,
            "route_commit_s": 0 <= self.route_commit_s <= 60,
            "route_commit_m": 0 <= self.route_commit_m <= 500,
        }
        bad = [k for k, ok in checks.items() if not (ok and math.isfinite(float(getattr(self, k))))]
        if bad:
            raise ValueError(f"invalid planner parameters: {', '.join(bad)}")

    @property
    def hail_window_s(self) -> float:
        """``W``: how long a waiting hail stays available to this cab, seconds."""
        return 1.0 / (self.competing_vacant_per_h / 3600.0 + 1.0 / self.patience_s)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(
        cls, raw: object, *, base: PlannerParams | None = None, where: str = "params.yaml"
    ) -> PlannerParams:
        """The planner section of a ``params.yaml`` (the one parser: bundle, cruise, simulate),
        over ``base`` (default: the defaults). Unknown keys are ignored with a warning (a bundle
        from a newer planner must still load); a value of the wrong type or out of range is a
        ValueError of one line naming ``where``."""
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: planner must be a mapping")
        types = {f.name: f.type for f in fields(cls)}
        unknown = sorted(str(k) for k in set(raw) - set(types))
        if unknown:
            log.warning("%s: unknown planner parameter(s) ignored: %s", where, ", ".join(unknown))
        values = {k: v for k, v in raw.items() if k in types}
        for k, v in values.items():
            whole = types[k] in ("int", int)
            if isinstance(v, bool) or not isinstance(v, int if whole else int | float):
                kind = "a whole number" if whole else "a number"
                raise ValueError(f"{where}: planner.{k} must be {kind}, got {v!r}")
        try:
            return replace(base or cls(), **values)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None


@dataclass(frozen=True)
class Plan:
    """A cruising recommendation (see :meth:`to_json` for the canonical bytes)."""

    start_edge_id: int
    start_fraction: float
    minute_of_week: float
    edges: tuple[int, ...]  # global ids of the links to enter, in order
    coordinates: tuple[tuple[float, float], ...]  # from the cab's position, (lon, lat)
    length_m: float
    duration_s: float
    pickup_probability: tuple[float, ...]  # per link of ``edges``, as planned
    expected_revenue: float  # V(e0, 0) over the horizon
    expected_revenue_per_h: float
    directions: tuple[Direction, ...]
    params: PlannerParams
    demand_source: str
    #: the hysteresis' decision when a previous route was given (agent.planner.stability)
    route_choice: RouteChoice | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "start": {
                "edge_id": self.start_edge_id,
                "fraction": round(self.start_fraction, 6),
                "minute_of_week": round(self.minute_of_week, 6),
            },
            "edges": list(self.edges),
            "coordinates": [[round(x, 7), round(y, 7)] for x, y in self.coordinates],
            "length_m": round(self.length_m, 2),
            "duration_s": round(self.duration_s, 2),
            "pickup_probability": [round(p, 6) for p in self.pickup_probability],
            "expected_revenue": round(self.expected_revenue, 4),
            "expected_revenue_per_h": round(self.expected_revenue_per_h, 4),
            "directions": [d.to_json() for d in self.directions],
            "params": self.params.to_json(),
            "demand_source": self.demand_source,
        }
        if self.route_choice is not None:
            out["route_choice"] = self.route_choice.to_json()
        return out

    def to_json(self) -> bytes:
        """Canonical serialisation: sorted keys, fixed rounding, no whitespace."""
        return json.dumps(
            self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()


def monday_of(when: dt.datetime) -> dt.date:
    """Local date of the Monday of the week of a local wall-clock time (minute of week 0)."""
    return when.date() - dt.timedelta(days=when.weekday())


def minute_of_week_of(when: dt.datetime) -> float:
    """Fractional minute of week (Monday 00:00 = 0) of a local wall-clock time."""
    return (
        when.weekday() * 1440
        + when.hour * 60
        + when.minute
        + (when.second + when.microsecond / 1e6) / 60.0
    )


def area_mask(graph: Graph, polygon: shapely.Geometry) -> Bool:
    """Links with both ends inside the business area polygon (lon, lat)."""
    shapely.prepare(polygon)  # in place (its return value differs across shapely versions)
    return np.asarray(
        shapely.contains_xy(polygon, graph.u_lon, graph.u_lat)
        & shapely.contains_xy(polygon, graph.v_lon, graph.v_lat)
    )


def speed_factor_from_demand(table: DemandTable, graph: Graph) -> float:
    """Cruising speed share measured from trips: the pickup-weighted median occupied speed
    (``trip_distance_m / trip_duration_s`` of the links' trips) over the length-weighted mean
    free-flow speed of the cruisable links of ``graph``. Clamped to (0.05, 1]."""
    ids = graph.edge_id.astype(np.int64)
    ok = (ids < table.n_edges) & graph.cruise_allowed()
    ids = ids[ok]
    dur = table.trip_duration_s[ids].astype(np.float64)
    dist = table.trip_distance_m[ids].astype(np.float64)
    weight = table.pickups_per_h[:, :, ids].sum(axis=(0, 1)).astype(np.float64)
    use = (dur > 0) & (dist > 0) & (weight > 0)
    if not use.any():
        return 1.0
    speed = dist[use] / dur[use]
    order = np.argsort(speed, kind="stable")
    cum = np.cumsum(weight[use][order])
    median_mps = float(speed[order][int(np.searchsorted(cum, cum[-1] / 2.0))])
    lengths = np.asarray(graph.length_m, dtype=np.float64)[ok]
    free_mps = float(lengths.sum() / graph.travel_time_s[ok].sum())
    return float(min(max(median_mps / free_mps, 0.05), 1.0))


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
    """
    prep = prepare(graph, params.step_s, params.speed_factor, area)
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
    )


def pass_age_array(graph: Graph, ages: PassAges | None) -> npt.NDArray[np.float64] | None:
    """:data:`PassAges` as an array over ``graph``'s local links (``inf`` where unknown), or
    None when no pass is known. Links not in ``graph`` are ignored; negative ages are 0."""
    if ages is None:
        return None
    if isinstance(ages, Mapping):
        out = np.full(graph.n, np.inf, dtype=np.float64)
        if ages:
            ids = np.fromiter(ages.keys(), dtype=np.int64, count=len(ages))
            vals = np.fromiter(ages.values(), dtype=np.float64, count=len(ages))
            loc = graph.local(ids)
            ok = loc >= 0
            np.minimum.at(out, loc[ok], vals[ok])
    else:
        out = np.array(ages, dtype=np.float64)
        if out.shape != (graph.n,):
            raise PlannerError(f"last_pass_age_s has {out.shape} values for {graph.n} links")
    out[np.isnan(out)] = np.inf
    return np.maximum(out, 0.0)


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
    table = solve(g, demand, t_dec, params, area, supply_per_h, monday, ages)
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
    )


def plan_from_table(
    table: ValueTable,
    start_edge_id: int,
    fraction: float,
    minute_of_week: float,
    params: PlannerParams,
    demand_source: str,
    way_names: WayNames | None = None,
    *,
    previous_route: Sequence[int] | None = None,
    committed_links: int = 0,
) -> Plan:
    """The plan of a cab on ``start_edge_id`` read from an already solved table.

    With ``previous_route`` (global ids of the links still to enter after ``start_edge_id``
    on the route shown before; links outside the table make it unusable), the read-out's new
    route replaces it only as :func:`agent.planner.stability.choose_route` decides
    (``params.route_switch_margin``, ``committed_links``); a kept route is extended by the
    read-out from its last link to the minimum length. ``Plan.route_choice`` says why."""
    g = table.prep.graph
    prep = table.prep
    e0 = int(g.local([start_edge_id])[0])
    if e0 < 0:
        raise PlannerError(f"start link {start_edge_id} is not among the planned links")
    rest_s = (1.0 - fraction) * float(prep.tau_s[e0])
    t0_rel = (minute_of_week - table.start_minute_of_week) * 60.0 + rest_s
    route, length, duration = follow(
        table,
        e0,
        t0_rel,
        params.route_min_m,
        params.route_min_s,
        params.max_route_edges,
        max_visits=params.route_max_visits,
    )
    choice: RouteChoice | None = None
    if previous_route is not None:
        prev_local = g.local(list(previous_route)) if len(previous_route) else np.zeros(0, int)
        usable = bool(np.all(prev_local >= 0))

        def extend(prefix: tuple[int, ...]) -> list[int]:
            return follow(
                table,
                e0,
                t0_rel,
                params.route_min_m,
                params.route_min_s,
                params.max_route_edges,
                max_visits=params.route_max_visits,
                prefix=prefix,
            )[0]

        choice = choose_route(
            table,
            e0,
            t0_rel,
            route,
            [int(f) for f in prev_local] if usable else None,
            params.route_switch_margin,
            committed_links,
            extend,
        )
        if list(choice.route) != route:
            route, length, duration = follow(
                table,
                e0,
                t0_rel,
                0.0,
                0.0,
                len(choice.route),
                prefix=choice.route,
            )
    layer = max(math.floor(t0_rel / prep.step_s + 0.5), 0)
    value = float(table.values[min(layer, table.n_layers - 1), e0])
    probs: list[float] = []
    t = t0_rel
    for f in route:
        k = min(math.floor(t / prep.step_s + 0.5), table.n_layers - 1)
        probs.append(float(table.pickup_prob[table.layer_slot[k], f]))
        t += float(prep.tau_s[f])
    names: Mapping[int, str] = {}
    if way_names is not None and route:
        names = way_names(sorted({int(g.way_id[e]) for e in route}))
    horizon_h = (table.n_layers - min(layer, table.n_layers - 1)) * prep.step_s / 3600.0
    return Plan(
        start_edge_id=int(start_edge_id),
        start_fraction=float(fraction),
        minute_of_week=float(minute_of_week),
        edges=tuple(int(g.edge_id[e]) for e in route),
        coordinates=_coordinates(g, e0, fraction, route),
        length_m=float(length + (1.0 - fraction) * float(prep.length_m[e0])),
        duration_s=float(duration + rest_s),
        pickup_probability=tuple(probs),
        expected_revenue=value,
        expected_revenue_per_h=value / horizon_h if horizon_h > 0 else 0.0,
        directions=directions(g, e0, route, names),
        params=params,
        demand_source=demand_source,
        route_choice=choice,
    )


def _coordinates(
    g: Graph, e0: int, fraction: float, route: list[int]
) -> tuple[tuple[float, float], ...]:
    geom = g.geometry(e0)
    seg = np.hypot(np.diff(geom[:, 0]), np.diff(geom[:, 1]))
    along = np.concatenate([[0.0], np.cumsum(seg)])
    target = fraction * float(along[-1])
    i = min(int(np.searchsorted(along, target, side="right")), len(along) - 1)
    i = max(i, 1)
    span = along[i] - along[i - 1]
    w = (target - along[i - 1]) / span if span > 0 else 0.0
    p = geom[i - 1] + w * (geom[i] - geom[i - 1])
    pts: list[tuple[float, float]] = [(float(p[0]), float(p[1]))]
    pts.extend((float(x), float(y)) for x, y in geom[i:])
    for e in route:
        pts.extend((float(x), float(y)) for x, y in g.geometry(e)[1:])
    return tuple(pts)


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


__all__ = [
    "Direction",
    "FleetView",
    "PassAges",
    "Plan",
    "PlannerError",
    "PlannerParams",
    "RouteChoice",
    "ValueTable",
    "action_values",
    "area_mask",
    "choose_route",
    "fleet_view",
    "is_committed",
    "minute_of_week_of",
    "next_link",
    "pass_age_array",
    "plan_cruise",
    "plan_from_fix",
    "plan_from_table",
    "policy_step",
    "route_value",
    "solve",
    "speed_factor_from_demand",
    "with_fleet",
]
