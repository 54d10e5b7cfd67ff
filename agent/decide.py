"""One planning tick, as a pure function of the bundle and the tick's inputs.

    inputs (fix, previous fix, now, locale, the live snapshot) + bundle
      -> road graph around the cab (:func:`road_around`)
      -> map match, preferring the route shown (agent.tick_route.match_on_route)
      -> demand for the links considered (:func:`tick_demand`; a cell model with
         recent-demand inputs gets the live snapshot's per-cell pickups:
         agent.tick_recent.tick_recent)
      -> the fleet around it (agent.tick_live.tick_fleet: the live snapshot without this
         cab's own heartbeat, else the bundle's supply prior)
      -> cruising plan (:func:`tick_plan`, agent.planner) -> safety verdict (:func:`tick_verdict`,
         safety.SafetyGate) -> the driver's instruction

The runtime calls :func:`decide` and logs :meth:`TickResult.to_record`; ``nagashi replay``
calls it again on the logged inputs with the same bundle and compares the bytes. Nothing here
reads the clock, files other than the bundle's, or the network. The tick's inputs from the
live layer are in :mod:`agent.tick_live`, the recent-demand inputs in :mod:`agent.tick_recent`,
the use of the route shown before in :mod:`agent.tick_route`; their names are also importable
from here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Any

from agent.bundle import LoadedBundle
from agent.gps import Fix
from agent.instruction import Instruction, build_instruction
from agent.planner import FleetView, Plan, PlannerError, plan_cruise
from agent.tick_live import LIVE_NO_SNAPSHOT, LiveInput, LiveSnapshot, tick_fleet
from agent.tick_recent import (
    RECENT_BAD_COUNTS,
    RECENT_FILLED,
    RECENT_FROM_SNAPSHOT,
    RECENT_MAX_SCALE,
    RECENT_MIN_EXPECTED,
    RECENT_NO_SNAPSHOT,
    RECENT_NO_UNITS,
    RECENT_OTHER_GRID,
    RECENT_TOO_FEW,
    tick_recent,
)
from agent.tick_route import (
    ON_ROUTE_LINKS,
    finite,
    match_on_route,
    on_route_match,
    previous_route,
)
from agent.triplog import pack
from agent.version import code_version
from models import ModelsError, RecentCounts, TickDemand, tick_demand_from_table
from safety import BundleStatus, SafetyGate, TickInput, Verdict
from tiles import Graph, Match, TilesError

__all__ = [
    "LIVE_NO_SNAPSHOT",
    "ON_ROUTE_LINKS",
    "RECENT_BAD_COUNTS",
    "RECENT_FILLED",
    "RECENT_FROM_SNAPSHOT",
    "RECENT_MAX_SCALE",
    "RECENT_MIN_EXPECTED",
    "RECENT_NO_SNAPSHOT",
    "RECENT_NO_UNITS",
    "RECENT_OTHER_GRID",
    "RECENT_TOO_FEW",
    "RECORD_KIND",
    "LiveInput",
    "LiveSnapshot",
    "TickInputs",
    "TickResult",
    "decide",
    "demand_sha256",
    "match_record",
    "on_route_match",
    "previous_route",
    "road_around",
    "tick_demand",
    "tick_fleet",
    "tick_plan",
    "tick_recent",
    "tick_verdict",
]

log = logging.getLogger(__name__)

RECORD_KIND = "tick"


@dataclass(frozen=True)
class TickInputs:
    """What a tick depends on besides the bundle (all of it is logged)."""

    now_s: float
    fix: Fix | None
    previous_fix: Fix | None
    locale: str
    trigger: str  # "first" | "interval" | "off_route" | "no_fix" (receiver silent)
    last_moving_fix: Fix | None = None  # latest fix with a heading while moving (stopped cabs)
    #: (edge id, seconds since this cab last passed it vacant), sorted by edge id: the curbs it
    #: drained (agent.planner: ``last_pass_age_s``); later also the fleet's passes
    last_pass_age_s: tuple[tuple[int, float], ...] = ()
    #: the route the driver was shown (``Instruction.route_edges``: the cab's link first), for
    #: the hysteresis; () when none (first tick, fallback)
    previous_route: tuple[int, ...] = ()
    #: the live layer (None: off, no fleet server configured)
    live: LiveInput | None = None
    #: this cab's salt for the route read-out's spread without a live snapshot
    #: (agent.planner.spread_salt_of its ``vehicle_id``; None: no spread, ``argmax Q``)
    spread_salt: int | None = None


@dataclass(frozen=True, eq=False)
class TickResult:
    inputs: TickInputs
    minute_of_week: float
    graph: Graph | None
    match: Match | None
    demand: TickDemand | None
    plan: Plan | None
    planner_error: str
    verdict: Verdict
    instruction: Instruction
    fleet: FleetView | None = None  # None when there was no graph to plan on
    #: which recent-demand inputs the demand model was given (:func:`tick_recent`); None when
    #: the bundle's demand takes none (statistics, a link model) or no demand was asked
    recent: dict[str, Any] | None = None

    def to_record(self, lb: LoadedBundle) -> dict[str, Any]:
        """The trip-log record of this tick (``kind: tick``); see agent.triplog."""
        fix = self.inputs.fix
        prev = self.inputs.previous_fix
        moving = self.inputs.last_moving_fix
        m = self.match
        rec: dict[str, Any] = {
            "kind": RECORD_KIND,
            "time_s": self.inputs.now_s,
            "trigger": self.inputs.trigger,
            "locale": self.inputs.locale,
            "code": code_version(),
            "fix": None if fix is None else fix.to_record(),
            "previous_fix": None if prev is None else prev.to_record(),
            "last_moving_fix": None if moving is None else moving.to_record(),
            "last_pass_age_s": [[e, a] for e, a in self.inputs.last_pass_age_s],
            "previous_route": list(self.inputs.previous_route),
            "live": None if self.inputs.live is None else self.inputs.live.to_record(),
            "minute_of_week": self.minute_of_week,
            "match": None if m is None else match_record(m),
            "bundle": {"id": lb.bundle_id, "manifest": lb.manifest},
            "params": lb.params_record(),
            "demand": None if self.demand is None else self.demand.to_record(),
            "demand_sha256": None if self.demand is None else demand_sha256(self.demand),
            "recent": self.recent,
            "fleet": None if self.fleet is None else self.fleet.to_json(),
            "plan": None if self.plan is None else self.plan.to_json(),
            "planner_error": self.planner_error,
            "safety": self.verdict.to_record(),
            "instruction": self.instruction.to_json(),
        }
        if self.inputs.spread_salt is not None:  # logs from before the spread keep their bytes
            rec["spread_salt"] = self.inputs.spread_salt
        return rec


def demand_sha256(d: TickDemand) -> str:
    """Content hash of a tick's demand record (the log keeps each distinct one once per file)."""
    return hashlib.sha256(pack(d.to_record())).hexdigest()


def _fixed(x: float | None, decimals: int) -> float | None:
    return None if x is None else round(float(x), decimals)


def match_record(m: Match) -> dict[str, Any]:
    """The match as the trip log keeps it, its figures at fixed decimals, as the plan's
    canonical bytes keep theirs (fraction 6, coordinates 7): numpy's ``exp`` and ``arctan2``
    follow the CPU's SIMD, and the raw confidence and heading difference came out a last bit
    apart on 17 of 270 ticks of a drive replayed with numpy's AVX2 loops instead of AVX-512's,
    which replay reported as a different decision (tests/agent/test_runtime.py replays a
    drive with other loops). The checks read the raw values, not these."""
    b = m.best
    return {
        "edge_id": b.edge_id,
        "fraction": _fixed(b.fraction, 6),
        "distance_m": _fixed(b.distance_m, 3),
        "heading_diff_deg": _fixed(b.heading_diff_deg, 6),
        "lon": _fixed(b.lon, 7),
        "lat": _fixed(b.lat, 7),
        "confidence": _fixed(m.confidence, 9),
        "ambiguous": m.ambiguous,
        "candidates": len(m.candidates),
    }


def decide(lb: LoadedBundle, inputs: TickInputs, gate: SafetyGate | None = None) -> TickResult:
    """Plan and judge one tick (see module docstring). Never raises for bad inputs: a fix that
    cannot be matched or planned from ends as a safety fallback."""
    gate = gate or SafetyGate(lb.safety, area=lb.area, locale=inputs.locale)
    fix = inputs.fix
    mow = lb.minute_of_week(inputs.now_s)
    monday = lb.monday(inputs.now_s)  # the real date: public holidays and the like
    graph = road_around(lb, fix)  # fix -> the roads around it
    m: Match | None = None
    demand: TickDemand | None = None
    recent_rec: dict[str, Any] | None = None
    planner_error = ""
    if graph is not None and fix is not None:  # -> match, demand on those roads
        m = match_on_route(
            graph,
            fix,
            inputs.previous_fix,
            inputs.last_moving_fix,
            inputs.now_s,
            inputs.previous_route,
            lb.safety.gps,
            lb.safety.match,
        )
        demand, recent_rec, planner_error = tick_demand(lb, graph, mow, inputs.live)
    fleet: FleetView | None = None
    if graph is not None:  # -> the other cabs on them
        fleet, fleet_error = tick_fleet(lb, graph, mow, inputs.live)
        planner_error = planner_error or fleet_error
    plan: Plan | None = None
    if graph is not None and m is not None and demand is not None:  # -> plan
        plan, plan_error = tick_plan(lb, inputs, mow, monday, graph, m, demand, fleet)
        planner_error = plan_error or planner_error
    verdict = tick_verdict(gate, lb, inputs, mow, monday, graph, m, demand, plan)  # -> safety
    instruction = _instruction(lb, graph, m, fix, plan, verdict, inputs)
    return TickResult(
        inputs, mow, graph, m, demand, plan, planner_error, verdict, instruction, fleet, recent_rec
    )


def road_around(lb: LoadedBundle, fix: Fix | None) -> Graph | None:
    """The bundle's road graph within the planner's radius of the fix; None without a usable
    position or when no link of the bundle's network is near it."""
    if fix is None or not finite(fix.lon, fix.lat):
        return None
    if not (-180 <= fix.lon <= 180 and -90 <= fix.lat <= 90):
        return None
    try:
        graph = lb.store.radius_graph(fix.lon, fix.lat, lb.planner.radius_m)
    except TilesError:  # no tile near the fix: outside the bundle's network
        return None
    return None if graph.n == 0 else graph


def tick_demand(
    lb: LoadedBundle, graph: Graph, minute_of_week: float, live: LiveInput | None
) -> tuple[TickDemand | None, dict[str, Any] | None, str]:
    """The demand over the planning horizon on ``graph``'s links: the bundle's model's (with
    the recent inputs of :func:`tick_recent` for a cell model), else the statistical table's;
    with the tick record's ``recent`` (None unless a cell model was asked) and an error text
    ("" when none). A model that fails leaves this tick to statistics; None when neither
    gives demand."""
    horizon_min = math.ceil(lb.planner.horizon_s / 60.0)
    now_min = math.floor(minute_of_week)
    demand: TickDemand | None = None
    recent_rec: dict[str, Any] | None = None
    error = ""
    if lb.model is not None:
        recent: RecentCounts | None = None
        if getattr(lb.model, "granularity", "link") == "cell":
            recent, recent_rec = tick_recent(lb, lb.model, live)
        try:
            demand = (
                lb.model.tick(graph.edge_id, now_min, horizon_min)
                if recent is None
                else lb.model.tick(graph.edge_id, now_min, horizon_min, recent)
            )
        except ModelsError as e:  # NaN, negative, absurd: this tick runs on statistics
            error = f"demand model: {e}"
            log.warning("demand model failed, using statistics: %s", e)
    if demand is None:
        try:
            demand = tick_demand_from_table(lb.demand, graph.edge_id, now_min, horizon_min)
        except ModelsError as e:
            error = f"demand: {e}"
    return demand, recent_rec, error


def tick_plan(
    lb: LoadedBundle,
    inputs: TickInputs,
    minute_of_week: float,
    monday: dt.date,
    graph: Graph,
    m: Match,
    demand: TickDemand,
    fleet: FleetView | None,
) -> tuple[Plan | None, str]:
    """The cruising plan from the matched link (agent.planner.plan_cruise), inside the
    business area, with the route shown before and the cab's own passes; (None, the error)
    when the planner refuses."""
    params = lb.planner
    area = lb.area.edge_mask(graph) if lb.area is not None else None
    previous, committed = previous_route(graph, m, inputs.fix, inputs.previous_route, params)
    try:
        plan = plan_cruise(
            graph,
            demand,
            m.best.edge_id,
            minute_of_week,
            params,
            fraction=m.best.fraction,
            area=area,
            way_names=lb.store.way_names,
            monday=monday,
            last_pass_age_s=dict(inputs.last_pass_age_s),
            previous_route=previous,
            committed_links=committed,
            fleet=fleet,
            spread_salt=inputs.spread_salt,
        )
    except PlannerError as e:
        log.warning("planner: %s", e)
        return None, str(e)
    return plan, ""


def tick_verdict(
    gate: SafetyGate,
    lb: LoadedBundle,
    inputs: TickInputs,
    minute_of_week: float,
    monday: dt.date,
    graph: Graph | None,
    m: Match | None,
    demand: TickDemand | None,
    plan: Plan | None,
) -> Verdict:
    """The safety gate's verdict on everything this tick used (never raises)."""
    return gate.check(
        TickInput(
            now_s=inputs.now_s,
            minute_of_week=minute_of_week,
            monday=monday,
            fix=inputs.fix,
            graph=graph,
            route=None if plan is None else plan.edges,
            previous_fix=inputs.previous_fix,
            match=m,
            bundle=BundleStatus(present=True, hash_ok=True, bundle_hash=lb.bundle_id),
            demand=demand,
            demand_table=lb.demand,
            last_moving_fix=inputs.last_moving_fix,
        ),
        locale=inputs.locale,
    )


def _instruction(
    lb: LoadedBundle,
    graph: Graph | None,
    m: Match | None,
    fix: Fix | None,
    plan: Plan | None,
    verdict: Verdict,
    inputs: TickInputs,
) -> Instruction:
    position = (m.best.lon, m.best.lat) if m is not None else None
    if position is None and fix is not None and finite(fix.lon, fix.lat):
        position = (fix.lon, fix.lat)
    heading = fix.heading_deg if fix is not None and finite(fix.heading_deg) else None
    if graph is None or m is None:
        return Instruction(
            kind="fallback",
            time_s=inputs.now_s,
            message=verdict.message,
            reason_codes=verdict.codes,
            locale=verdict.locale,
            route_edges=(),
            geometry=(),
            maneuver=None,
            position=position,
            heading_deg=heading,
        )
    on_link = (m.best.edge_id,)
    route = (*on_link, *verdict.route) if verdict.ok else ()
    cont = tuple(verdict.continuation)
    if cont and cont[0] != m.best.edge_id:
        cont = (*on_link, *cont)
    way_ids = {int(graph.way_id[i]) for i in graph.local(list(route or cont)) if i >= 0}
    names = lb.store.way_names(sorted(way_ids)) if way_ids else {}
    return build_instruction(
        graph,
        ok=verdict.ok,
        route=route,
        continuation=cont,
        message=verdict.message,
        reason_codes=verdict.codes,
        locale=verdict.locale,
        time_s=inputs.now_s,
        position=position,
        heading_deg=heading,
        fraction=m.best.fraction,
        names=names,
        # at the plan's canonical 4 decimals: its last bits are the CPU's (match_record)
        expected_revenue=(
            None if plan is None or not verdict.ok else round(plan.expected_revenue_per_h, 4)
        ),
    )
