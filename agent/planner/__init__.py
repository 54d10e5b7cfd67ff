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
sorted by out-degree (``core._successor_columns``: one ``np.maximum`` per out-degree
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
few layers of the recently passed links differ, ``terms._depleted_probability``). The backward
pass uses ``P_e(k)`` in those layers: a hail arriving after now builds up again, so later
layers are unchanged. The cab's own link counts as passed when it leaves it (``a = 0``).

Dispatch
--------
With ``PlannerParams.matching == "dispatch"`` (an app sends the nearest vacant cab when a
request appears) ``P_f`` is the chance of being *assigned* while on ``f``: the cab's share of the
requests appearing within ``dispatch_reach_s`` of ``f`` among the vacant cabs there, with no curb
window (``W = 0``), and ``F``, ``D`` and the drop-off cell are those of the requests it would be
sent to (:mod:`agent.planner.dispatch`). Everything else above is unchanged.

The recommended route follows ``argmax Q`` from the cab's link (decision at the end of the
current link, ties to the lowest local index), advancing time by each link's ``τ``, until it
covers ``route_min_m`` and ``route_min_s`` (or the horizon ends). The read-out counts the
route's own passes as vacant passes (as above, from the time of the route's pass), enters no
link twice (``route_max_visits = 1``) and makes no U-turn: beyond the cab's past passes the
values assume a fresh curb, so the bare policy may circle one hot block. With the route shown
before, :mod:`agent.planner.stability` keeps it unless the new one is better by
``route_switch_margin`` and never takes back a manoeuvre the cab is committed to.
Without a live snapshot and with ``route_spread_eps`` > 0, each junction takes one of the
successors within ``eps · |Q_best|`` of the best, named by a hash of the cab's salt, the link
and the minute (:class:`agent.planner.readout.Spread`): offline cabs reading the same values no
longer drive the same corridors. ``V(e₀, 0)`` is the expected net revenue over the horizon.
Same inputs, same bytes: :meth:`Plan.to_json`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.planner.core import ValueTable
from agent.planner.cruise import (
    next_link,
    plan_cruise,
    plan_from_fix,
    policy_step,
    solve,
    spread_of,
)
from agent.planner.directions import Direction
from agent.planner.errors import PlannerError
from agent.planner.fleet import FleetView, fleet_view, with_fleet
from agent.planner.inputs import (
    PassAges,
    area_mask,
    minute_of_week_of,
    monday_of,
    pass_age_array,
    speed_factor_from_demand,
)
from agent.planner.params import ROUTE_SPREAD_EPS, SHIPPED_STEP_S, PlannerParams
from agent.planner.plan import SCHEMA_VERSION, Plan, plan_from_table, route_from_table
from agent.planner.readout import Spread, action_values, spread_salt_of
from tiles._lazy import lazy_attribute

if TYPE_CHECKING:  # the types, for mypy and editors; at run time see __getattr__
    from agent.planner.stability import RouteChoice, choose_route, is_committed, route_value

#: imported on first use: the first tick has no route shown before it to keep (issue 20)
_LAZY: dict[str, str] = {
    "RouteChoice": "agent.planner.stability",
    "choose_route": "agent.planner.stability",
    "is_committed": "agent.planner.stability",
    "route_value": "agent.planner.stability",
}

__all__ = [
    "ROUTE_SPREAD_EPS",
    "SCHEMA_VERSION",
    "SHIPPED_STEP_S",
    "Direction",
    "FleetView",
    "PassAges",
    "Plan",
    "PlannerError",
    "PlannerParams",
    "RouteChoice",
    "Spread",
    "ValueTable",
    "action_values",
    "area_mask",
    "choose_route",
    "fleet_view",
    "is_committed",
    "minute_of_week_of",
    "monday_of",
    "next_link",
    "pass_age_array",
    "plan_cruise",
    "plan_from_fix",
    "plan_from_table",
    "policy_step",
    "route_from_table",
    "route_value",
    "solve",
    "speed_factor_from_demand",
    "spread_of",
    "spread_salt_of",
    "with_fleet",
]


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, globals(), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
