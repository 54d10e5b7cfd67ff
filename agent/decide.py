"""One planning tick, as a pure function of the bundle and the tick's inputs.

    inputs (fix, previous fix, now, locale, the live snapshot) + bundle
      -> road graph around the cab -> map match -> demand for the links considered (a cell
         model with recent-demand inputs gets the live snapshot's per-cell pickups:
         :func:`tick_recent`)
      -> the fleet around it (agent.planner.fleet_view: the live snapshot without this cab's
         own heartbeat, else the bundle's supply prior)
      -> cruising plan (agent.planner) -> safety verdict (safety.SafetyGate)
      -> the driver's instruction

The runtime calls :func:`decide` and logs :meth:`TickResult.to_record`; ``nagashi replay``
calls it again on the logged inputs with the same bundle and compares the bytes. Nothing here
reads the clock, files other than the bundle's, or the network.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from agent.bundle import LoadedBundle
from agent.errors import AgentError
from agent.gps import Fix
from agent.instruction import Instruction, build_instruction, first_turn
from agent.planner import (
    FleetView,
    Plan,
    PlannerError,
    PlannerParams,
    fleet_view,
    is_committed,
    plan_cruise,
)
from agent.triplog import pack
from agent.version import code_version
from models import (
    SNAPSHOT_WINDOWS_MIN,
    DemandModel,
    ModelsError,
    RecentCounts,
    TickDemand,
    tick_demand_from_table,
)
from safety import BundleStatus, SafetyGate, TickInput, Verdict, check_fix
from tiles import Graph, Match, NoMatchError, TilesError, match_fix

log = logging.getLogger(__name__)

RECORD_KIND = "tick"

#: the live layer is on but the cab holds no snapshot yet (none fetched, or none accepted)
LIVE_NO_SNAPSHOT = "LIVE_NO_SNAPSHOT"

#: why a cell model with recent inputs was asked without them (the tick record's ``recent``)
RECENT_NO_SNAPSHOT = "RECENT_NO_SNAPSHOT"  # no fresh live snapshot (offline, refused, off)
RECENT_NO_UNITS = "RECENT_NO_UNITS"  # params.yaml names no live.pickups_per_hail
RECENT_OTHER_GRID = "RECENT_OTHER_GRID"  # the snapshot's cells are not the model's grid
RECENT_BAD_COUNTS = "RECENT_BAD_COUNTS"  # negative, non-cumulative, misshapen, outside the grid
RECENT_TOO_FEW = "RECENT_TOO_FEW"  # the fleet sees too few pickups for them to say anything
#: the snapshot's counts are used only when one fleet pickup stands for at most this many of
#: the model's source pickups and the area's last hour should hold at least
#: RECENT_MIN_EXPECTED fleet pickups: with fewer, the scaled counts are noise and the model
#: does worse than statistics (measured on the validation week, docs/demand.md)
RECENT_MAX_SCALE = 4.0
RECENT_MIN_EXPECTED = 10.0
#: the cell model's recent inputs a snapshot gives (its 15/30/60-minute counts) ...
RECENT_FROM_SNAPSHOT = (
    "recent_nb_15m",
    "recent_nb_30m",
    "recent_nb_60m",
    "recent_cell_60m",
    "recent_area_60m",
)
#: ... and those it does not, filled from the last hour (models.recent.fill_unobserved)
RECENT_FILLED = ("recent_nb_120m", "recent_area_day")


class LiveSnapshot(Protocol):
    """What a tick reads of a :class:`sync.live.Snapshot` (duck-typed: importing the agent
    must not import the sync client, tuf or httpx)."""

    @property
    def area(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def built_s(self) -> float: ...
    @property
    def sha256(self) -> str: ...
    @property
    def network(self) -> str: ...

    def link_counts(self, edge_ids: npt.ArrayLike) -> tuple[Any, Any]: ...

    # read by tick_recent when present (getattr): ``grid`` (min_lon, min_lat, dlon, dlat,
    # ncols, nrows) or None, ``cell_ids`` sorted cells, ``pickups`` (len(cell_ids), 3)


@dataclass(frozen=True)
class LiveInput:
    """The fleet's live layer as one tick sees it (the runtime takes it from the snapshot
    thread without waiting; replay takes the snapshot back from the archive)."""

    area: str
    #: the fresh, verified snapshot this tick plans with (None when none is fresh: offline,
    #: expired, refused); the log names it by ``area``, ``version`` and ``sha256``
    snapshot: LiveSnapshot | None = None
    #: its age at the tick, seconds by the cab's clock (the clock its ``built_s`` is on)
    age_s: float = 0.0
    #: the link and route (global edge ids) of this cab's last heartbeat the snapshot counted:
    #: subtracted, the cab does not see itself (-1 / () when none)
    own_link: int = -1
    own_route: tuple[int, ...] = ()
    #: why no snapshot is fresh, or the refusal of the last fetch while an older snapshot is
    #: still used (a ``LIVE_*`` code of sync.live, or :data:`LIVE_NO_SNAPSHOT`; "" when fine)
    reason: str = ""

    def to_record(self) -> dict[str, Any]:
        s = self.snapshot
        return {
            "area": self.area,
            "version": None if s is None else int(s.version),
            "sha256": None if s is None else str(s.sha256),
            "age_s": self.age_s,
            "own_link": self.own_link,
            "own_route": list(self.own_route),
            "reason": self.reason,
        }


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
        return {
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


def demand_sha256(d: TickDemand) -> str:
    """Content hash of a tick's demand record (the log keeps each distinct one once per file)."""
    return hashlib.sha256(pack(d.to_record())).hexdigest()


def match_record(m: Match) -> dict[str, Any]:
    b = m.best
    return {
        "edge_id": b.edge_id,
        "fraction": b.fraction,
        "distance_m": b.distance_m,
        "heading_diff_deg": b.heading_diff_deg,
        "lon": b.lon,
        "lat": b.lat,
        "confidence": m.confidence,
        "ambiguous": m.ambiguous,
        "candidates": len(m.candidates),
    }


def _finite(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def decide(lb: LoadedBundle, inputs: TickInputs, gate: SafetyGate | None = None) -> TickResult:
    """Plan and judge one tick (see module docstring). Never raises for bad inputs: a fix that
    cannot be matched or planned from ends as a safety fallback."""
    gate = gate or SafetyGate(lb.safety, area=lb.area, locale=inputs.locale)
    fix = inputs.fix
    mow = lb.minute_of_week(inputs.now_s)
    monday = lb.monday(inputs.now_s)  # the real date: public holidays and the like
    graph: Graph | None = None
    m: Match | None = None
    demand: TickDemand | None = None
    recent_rec: dict[str, Any] | None = None
    plan: Plan | None = None
    planner_error = ""
    params = lb.planner
    if (
        fix is not None
        and _finite(fix.lon, fix.lat)
        and -180 <= fix.lon <= 180
        and (-90 <= fix.lat <= 90)
    ):
        try:
            graph = lb.store.radius_graph(fix.lon, fix.lat, params.radius_m)
        except TilesError:  # no tile near the fix: outside the bundle's network
            graph = None
        if graph is not None and graph.n == 0:
            graph = None
    if graph is not None and fix is not None:
        # match with the direction the gate will judge by (receiver heading when moving, else
        # the bearing from the previous fix, else the last moving heading while stopped)
        mc = lb.safety.match.matching
        fc = check_fix(
            fix,
            inputs.previous_fix,
            inputs.now_s,
            None,
            lb.safety.gps,
            inputs.last_moving_fix,
        )
        heading = fc.heading_deg
        speed = fix.speed_mps if _finite(fix.speed_mps) else 0.0
        if heading is not None:
            speed = max(speed or 0.0, mc.min_speed_for_heading_mps)
        try:
            m = match_fix(graph, fix.lon, fix.lat, heading, speed, mc)
        except NoMatchError:
            m = None
        if m is not None:
            m = on_route_match(m, inputs.previous_route, mc.ambiguity_ratio)
        horizon_min = math.ceil(params.horizon_s / 60.0)
        if lb.model is not None:
            recent: RecentCounts | None = None
            if getattr(lb.model, "granularity", "link") == "cell":
                recent, recent_rec = tick_recent(lb, lb.model, inputs.live)
            try:
                now_min = math.floor(mow)
                demand = (
                    lb.model.tick(graph.edge_id, now_min, horizon_min)
                    if recent is None
                    else lb.model.tick(graph.edge_id, now_min, horizon_min, recent)
                )
            except ModelsError as e:  # NaN, negative, absurd: this tick runs on statistics
                planner_error = f"demand model: {e}"
                log.warning("demand model failed, using statistics: %s", e)
        if demand is None:
            try:
                demand = tick_demand_from_table(
                    lb.demand, graph.edge_id, math.floor(mow), horizon_min
                )
            except ModelsError as e:
                planner_error = f"demand: {e}"
    fleet: FleetView | None = None
    if graph is not None:
        fleet, fleet_error = tick_fleet(lb, graph, mow, inputs.live)
        planner_error = planner_error or fleet_error
    if graph is not None and m is not None and demand is not None:
        area = lb.area.edge_mask(graph) if lb.area is not None else None
        previous, committed = previous_route(graph, m, fix, inputs.previous_route, params)
        try:
            plan = plan_cruise(
                graph,
                demand,
                m.best.edge_id,
                mow,
                params,
                fraction=m.best.fraction,
                area=area,
                way_names=lb.store.way_names,
                monday=monday,
                last_pass_age_s=dict(inputs.last_pass_age_s),
                previous_route=previous,
                committed_links=committed,
                fleet=fleet,
            )
        except PlannerError as e:
            planner_error = str(e)
            log.warning("planner: %s", e)
    verdict = gate.check(
        TickInput(
            now_s=inputs.now_s,
            minute_of_week=mow,
            monday=monday,
            fix=fix,
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
    instruction = _instruction(lb, graph, m, fix, plan, verdict, inputs)
    return TickResult(
        inputs, mow, graph, m, demand, plan, planner_error, verdict, instruction, fleet, recent_rec
    )


def tick_recent(
    lb: LoadedBundle, model: DemandModel, live: LiveInput | None
) -> tuple[RecentCounts | None, dict[str, Any]]:
    """The recent-demand inputs of a cell model from the tick's live snapshot, and the tick
    record's ``recent`` (which inputs were used, or why none).

    The snapshot counts the fleet's meter pickups per cell of the demand grid in the last 15,
    30 and 60 minutes before it was built; they are scaled into the model's units (its
    ``recent.pickups_per_hail`` over the bundle's ``params.yaml`` ``live.pickups_per_hail``,
    the fleet's meter pickups per hail of the demand table) and end at the snapshot's own
    minute. The 120-minute window and the day so far are not in a snapshot: the model fills
    them from the last hour at their usual level (:func:`models.recent.fill_unobserved`).
    Without a fresh snapshot, units, or with counts that cannot be right, the model is asked
    without recent inputs (as a cab offline) and ``reason`` says why."""
    rec: dict[str, Any] = {
        "used": [],
        "windows_min": [],
        "filled": [],
        "scale": None,
        "pickups": None,
        "reason": "",
    }
    snap = None if live is None else live.snapshot
    if snap is None:
        rec["reason"] = RECENT_NO_SNAPSHOT
        return None, rec
    units = _live_pickups_per_hail(lb)
    if units is None:
        rec["reason"] = RECENT_NO_UNITS
        return None, rec
    grid = model.table.grid
    want = (grid.min_lon, grid.min_lat, grid.cell_deg_lon, grid.cell_deg_lat)
    g = getattr(snap, "grid", None)
    try:
        same = (
            g is not None
            and len(g) == 6
            and (int(g[4]), int(g[5])) == (grid.ncols, grid.nrows)
            and all(
                math.isclose(float(a), b, rel_tol=0, abs_tol=1e-12)
                for a, b in zip(g[:4], want, strict=True)
            )
        )
    except (TypeError, ValueError):
        same = False
    if not same:
        rec["reason"] = RECENT_OTHER_GRID
        return None, rec
    try:
        ids = np.asarray(getattr(snap, "cell_ids", None), dtype=np.int64)
        counts = np.asarray(getattr(snap, "pickups", None), dtype=np.float64)
        k = len(SNAPSHOT_WINDOWS_MIN)
        if (
            ids.ndim != 1
            or counts.shape != (ids.size, k)
            or (ids.size and (int(ids.min()) < 0 or int(ids.max()) >= grid.n_cells))
            or np.unique(ids).size != ids.size
        ):
            raise ValueError("cells outside the model's grid or counts of another shape")
        per_cell = np.zeros((grid.n_cells, k), dtype=np.float64)
        per_cell[ids] = counts
        scale = model.pickups_per_hail / units
        end = math.floor(lb.minute_of_week(float(snap.built_s)))
        recent = RecentCounts(per_cell * scale, end)
    except (TypeError, ValueError, ModelsError, AgentError) as e:
        rec["reason"] = RECENT_BAD_COUNTS
        rec["error"] = str(e)[:200]
        return None, rec
    expected = model.expected_area_pickups(end, SNAPSHOT_WINDOWS_MIN[-1]) / scale
    rec["expected_fleet_pickups_60m"] = round(expected, 3)
    if scale > RECENT_MAX_SCALE or expected < RECENT_MIN_EXPECTED:
        rec["reason"] = RECENT_TOO_FEW
        return None, rec
    rec.update(
        used=list(RECENT_FROM_SNAPSHOT),
        windows_min=list(SNAPSHOT_WINDOWS_MIN),
        filled=list(RECENT_FILLED),
        scale=scale,
        pickups=int(counts[:, -1].sum()) if counts.size else 0,
        end_minute_of_week=end,
    )
    return recent, rec


def _live_pickups_per_hail(lb: LoadedBundle) -> float | None:
    """``params.yaml`` ``live.pickups_per_hail``: the fleet's meter pickups per hail of the
    demand table (its share of street hails), None when absent or not a positive number."""
    live = lb.params_doc.get("live")
    v = live.get("pickups_per_hail") if isinstance(live, dict) else None
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) and f > 0 else None


def tick_fleet(
    lb: LoadedBundle, graph: Graph, minute_of_week: float, live: LiveInput | None
) -> tuple[FleetView, str]:
    """The tick's :class:`FleetView` on ``graph`` and an error text ("" when none): the live
    snapshot (without this cab's own heartbeat) when one is fresh, with the bundle's supply
    prior (``LoadedBundle.supply``, when the bundle ships one) as the background; the prior
    alone without a snapshot; nothing without either. A prior that cannot be read for this
    tick is left out (the error says why), never a reason to stop planning."""
    prior: npt.NDArray[np.float64] | None = None
    error = ""
    supply = getattr(lb, "supply", None)
    if supply is not None:
        try:
            prior = np.asarray(supply.rates(graph.edge_id, minute_of_week), dtype=np.float64)
            if prior.shape != (graph.n,):
                raise ValueError(f"{prior.shape} rates for {graph.n} links")
        except (ValueError, TypeError, IndexError) as e:
            prior, error = None, f"supply prior: {e}"
    snap = None if live is None else live.snapshot
    if snap is None or live is None:
        return fleet_view(graph, now_s=0.0, prior_per_h=prior), error
    view = fleet_view(
        graph,
        now_s=float(snap.built_s) + max(float(live.age_s), 0.0),
        snapshot=snap,
        own_link=live.own_link,
        own_route=live.own_route,
        prior_per_h=prior,
    )
    return view, error


#: how many links of the route shown before count as where the cab may still be (it was on
#: the first one a tick ago)
ON_ROUTE_LINKS = 3


def on_route_match(m: Match, shown: tuple[int, ...], ratio: float) -> Match:
    """The match, preferring the route the cab was shown: when the best candidate is not on
    its first :data:`ON_ROUTE_LINKS` links but a candidate that is lies within ``ratio`` of
    the best likelihood (a cab stopped at the junction, GPS jitter across it), that candidate
    is the match. Otherwise ``m``, unchanged. Without this, a cab waiting at a light flips
    between the link before the junction and one after it, and its route with it."""
    near = shown[:ON_ROUTE_LINKS]
    if not near or m.best.edge_id in near:
        return m
    pick = next(
        (
            c
            for c in m.candidates
            if c.edge_id in near and math.exp(-0.5 * (c.score - m.best.score)) >= ratio
        ),
        None,
    )
    if pick is None:
        return m
    cands = (pick, *(c for c in m.candidates if c is not pick))
    like = [math.exp(-0.5 * (c.score - pick.score)) for c in cands]
    ambiguous = any(
        c.way_id != pick.way_id and w >= ratio for c, w in zip(cands[1:], like[1:], strict=True)
    )
    return Match(best=pick, candidates=cands, confidence=1.0 / sum(like), ambiguous=ambiguous)


def previous_route(
    graph: Graph,
    m: Match,
    fix: Fix | None,
    shown: tuple[int, ...],
    params: PlannerParams,
) -> tuple[tuple[int, ...] | None, int]:
    """What is left of the route shown before, from the cab's matched link (the links still to
    enter after it), and how many of them the cab is committed to (those through the next
    manoeuvre when it is within ``params.route_commit_s`` / ``route_commit_m``). (None, 0)
    when nothing was shown or the cab is not on it (it left the route: plan afresh)."""
    here = m.best.edge_id
    if here not in shown:
        return None, 0
    rest = shown[shown.index(here) :]
    turn = first_turn(graph, rest, m.best.fraction)
    speed = fix.speed_mps if fix is not None and _finite(fix.speed_mps) else None
    committed = 0
    if turn is not None and is_committed(
        turn[1], speed, params.route_commit_s, params.route_commit_m
    ):
        committed = turn[0]
    return rest[1:], committed


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
    if position is None and fix is not None and _finite(fix.lon, fix.lat):
        position = (fix.lon, fix.lat)
    heading = fix.heading_deg if fix is not None and _finite(fix.heading_deg) else None
    if graph is None or m is None:
        from agent.instruction import Instruction as I

        return I(
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
        expected_revenue=None if plan is None or not verdict.ok else plan.expected_revenue_per_h,
    )
