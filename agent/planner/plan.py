"""The plan: the route read out of a solved table, its figures, its canonical bytes."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.planner.core import ValueTable
from agent.planner.directions import Direction, directions
from agent.planner.errors import PlannerError
from agent.planner.params import PlannerParams
from agent.planner.readout import Spread, follow
from tiles.graph import Graph

if TYPE_CHECKING:  # imported by the first read-out that has a route shown before (issue 20)
    from agent.planner.stability import RouteChoice

SCHEMA_VERSION = 1
WayNames = Callable[[Iterable[int]], Mapping[int, str]]


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
    #: the read-out's spread when it was used (no live snapshot, ``route_spread_eps`` > 0)
    spread: Spread | None = None

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
        if self.spread is not None:
            out["spread"] = {"eps": self.spread.eps, "salt": self.spread.salt}
        return out

    def to_json(self) -> bytes:
        """Canonical serialisation: sorted keys, fixed rounding, no whitespace."""
        return json.dumps(
            self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()


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
    spread: Spread | None = None,
) -> Plan:
    """The plan of a cab on ``start_edge_id`` read from an already solved table.

    With ``previous_route`` (global ids of the links still to enter after ``start_edge_id``
    on the route shown before; links outside the table make it unusable), the read-out's new
    route replaces it only as :func:`agent.planner.stability.choose_route` decides
    (``params.route_switch_margin``, ``committed_links``); a kept route is extended by the
    read-out from its last link to the minimum length. ``Plan.route_choice`` says why.
    ``spread``: the read-out's spread (:class:`agent.planner.readout.Spread`), named in
    ``Plan.spread``."""
    g = table.prep.graph
    prep = table.prep
    e0, rest_s, t0_rel = _start(table, start_edge_id, fraction, minute_of_week)
    route, length, duration, choice = _read_route(
        table, e0, t0_rel, params, previous_route, committed_links, spread
    )
    layer = max(math.floor(t0_rel / prep.step_s + 0.5), 0)
    value = float(table.values[min(layer, table.n_layers - 1), e0])
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
        pickup_probability=_route_pickup_probability(table, route, t0_rel),
        expected_revenue=value,
        expected_revenue_per_h=value / horizon_h if horizon_h > 0 else 0.0,
        directions=directions(g, e0, route, names),
        params=params,
        demand_source=demand_source,
        route_choice=choice,
        spread=spread,
    )


def route_from_table(
    table: ValueTable,
    start_edge_id: int,
    fraction: float,
    minute_of_week: float,
    params: PlannerParams,
    *,
    previous_route: Sequence[int] | None = None,
    committed_links: int = 0,
    spread: Spread | None = None,
) -> tuple[list[int], RouteChoice | None]:
    """The route of :func:`plan_from_table` alone, as local links of ``table``'s graph, and the
    hysteresis' decision (None without ``previous_route``): the same read-out without the
    plan's coordinates, directions and figures (the simulator follows the route only)."""
    e0, _, t0_rel = _start(table, start_edge_id, fraction, minute_of_week)
    route, _, _, choice = _read_route(
        table, e0, t0_rel, params, previous_route, committed_links, spread
    )
    return route, choice


def route_only_from_table(
    table: ValueTable,
    start_edge_id: int,
    fraction: float,
    minute_of_week: float,
    params: PlannerParams,
    *,
    previous_route: Sequence[int] | None = None,
    committed_links: int = 0,
    spread: Spread | None = None,
    previous_links: Sequence[int] | None = None,
) -> list[int]:
    """The route of :func:`route_from_table` (the same links), without the hysteresis'
    decision: the simulator's cabs follow the route and read no figure, so only what the
    decision depends on is read out. Where the cab is committed to the previous route's next
    manoeuvre (``committed_links``), the new read-out is followed only that far, and where it
    leaves that manoeuvre the (extended) previous route is the route, with neither value
    computed (:func:`agent.planner.stability.choose_route`'s ``COMMITTED``: its decision does
    not read them); where the new route is the previous one (``SAME``) neither value either.
    Each step of the read-out depends on the steps before it alone, so the first ``head``
    links of a read-out capped at ``head`` links are the whole read-out's (the committed
    check reads them there) and the route is :func:`route_from_table`'s
    (tests/agent/test_readout_route_only.py compares both). ``previous_links``: the previous
    route as local links of ``table``'s graph instead (the simulator's; it wins over
    ``previous_route``)."""
    e0, _, t0_rel = _start(table, start_edge_id, fraction, minute_of_week)

    def read(prefix: tuple[int, ...] = (), max_edges: int = params.max_route_edges) -> list[int]:
        return _follow(table, e0, t0_rel, params, spread, prefix, max_edges)[0]

    if previous_links is not None:
        n = table.prep.n
        if not previous_links:
            return read()
        prev = tuple(previous_links)
        if min(prev) < 0 or max(prev) >= n:  # unusable: NEW
            return read()
    else:
        if not previous_route:  # (choose_route: no previous route, NEW)
            return read()
        prev_local = table.prep.graph.local(list(previous_route))
        if not bool(np.all(prev_local >= 0)):  # unusable: NEW
            return read()
        prev = tuple(int(f) for f in prev_local)
    from agent.planner.stability import _enterable, route_value, switches

    if not _enterable(table, e0, t0_rel, prev):  # NEW
        return read()
    new = read()
    kept = _extended(new, prev, read)  # extended as choose_route's ``extend``
    head = min(max(committed_links, 0), len(kept))
    if head and tuple(new[:head]) != kept[:head]:
        return list(kept)  # COMMITTED
    if tuple(new) == kept:  # SAME
        return new
    value_new = route_value(table, e0, t0_rel, new)
    if switches(value_new, route_value(table, e0, t0_rel, kept), params.route_switch_margin):
        return new  # SWITCHED
    return list(kept)  # KEPT


def _extended(
    new: Sequence[int], prev: tuple[int, ...], read: Callable[[tuple[int, ...]], Sequence[int]]
) -> tuple[int, ...]:
    """The read-out continued after ``prev`` (``read(prev)``, choose_route's ``extend``), taken
    from the read-out ``new`` where that begins with ``prev``: each step of a read-out depends
    on the steps before it alone (the links entered, their passes, visits, length and time), so
    after the same links the walk continues alike, and ``new`` is the extended route itself.
    Otherwise it is read (a walk that stopped inside ``prev`` may not stop after it)."""
    n = len(prev)
    if len(new) >= n and tuple(new[:n]) == prev:
        return tuple(new)
    return tuple(read(prev))


def _start(
    table: ValueTable, start_edge_id: int, fraction: float, minute_of_week: float
) -> tuple[int, float, float]:
    """The start link (local), the seconds left on it, and the decision time after the
    table's start."""
    prep = table.prep
    e0 = prep.graph.local_index(int(start_edge_id))
    if e0 < 0:
        raise PlannerError(f"start link {start_edge_id} is not among the planned links")
    rest_s = (1.0 - fraction) * float(prep.tau_s[e0])
    return e0, rest_s, (minute_of_week - table.start_minute_of_week) * 60.0 + rest_s


def _follow(
    table: ValueTable,
    e0: int,
    t0_rel: float,
    params: PlannerParams,
    spread: Spread | None,
    prefix: tuple[int, ...],
    max_edges: int,
) -> tuple[list[int], float, float]:
    """:func:`follow` with the plan's route rules (``params``' minimum length and duration,
    visits per link), after ``prefix``, at most ``max_edges`` links."""
    return follow(
        table,
        e0,
        t0_rel,
        params.route_min_m,
        params.route_min_s,
        max_edges,
        max_visits=params.route_max_visits,
        prefix=prefix,
        spread=spread,
    )


def _read_route(
    table: ValueTable,
    e0: int,
    t0_rel: float,
    params: PlannerParams,
    previous_route: Sequence[int] | None,
    committed_links: int,
    spread: Spread | None = None,
) -> tuple[list[int], float, float, RouteChoice | None]:
    """The route (local links), its length and duration from the decision at ``t0_rel``: the
    read-out of ``argmax Q``, or the route shown before where the hysteresis keeps it."""

    def read(prefix: tuple[int, ...] = ()) -> tuple[list[int], float, float]:
        return _follow(table, e0, t0_rel, params, spread, prefix, params.max_route_edges)

    route, length, duration = read()
    if previous_route is None:
        return route, length, duration, None
    from agent.planner.stability import choose_route

    g = table.prep.graph
    prev_local = g.local(list(previous_route)) if len(previous_route) else np.zeros(0, int)
    usable = bool(np.all(prev_local >= 0))

    def extend(prefix: tuple[int, ...]) -> tuple[int, ...]:
        return _extended(route, prefix, lambda p: read(p)[0])

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
    return route, length, duration, choice


def _route_pickup_probability(
    table: ValueTable, route: list[int], t0_rel: float
) -> tuple[float, ...]:
    """``P_f(t)`` of each link of the route at the layer the cab enters it, as planned."""
    prep = table.prep
    probs: list[float] = []
    t = t0_rel
    for f in route:
        k = min(math.floor(t / prep.step_s + 0.5), table.n_layers - 1)
        probs.append(float(table.pickup_prob[table.layer_slot[k], f]))
        t += float(prep.tau_s[f])
    return tuple(probs)


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
    pts.extend((x, y) for x, y in geom[i:].tolist())
    if route:  # each link's shape points but its first (the previous link's last), at once
        links = np.asarray(route, dtype=np.int64)
        first = g.geom_offsets[links] + 1
        counts = g.geom_offsets[links + 1] - first
        ends = np.cumsum(counts)
        at = np.arange(int(ends[-1]), dtype=np.int64) + np.repeat(first - (ends - counts), counts)
        pts.extend((x, y) for x, y in g.geom_lonlat[at].tolist())
    return tuple(pts)
