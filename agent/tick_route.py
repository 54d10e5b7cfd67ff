"""The route the driver was shown at the last tick, as this tick uses it (route stability).

:func:`match_on_route` matches the fix with the direction the safety gate will judge by and
prefers a candidate on the route shown (:func:`on_route_match`); :func:`previous_route` gives
the planner what is left of that route and how much of it the cab is committed to. Pure.
"""

from __future__ import annotations

import math

from agent.gps import Fix
from agent.instruction import first_turn
from agent.planner import PlannerParams
from safety import GpsConfig, MatchCheckConfig, check_fix
from tiles import Graph, Match, NoMatchError, match_fix

__all__ = ["ON_ROUTE_LINKS", "finite", "match_on_route", "on_route_match", "previous_route"]

#: how many links of the route shown before count as where the cab may still be (it was on
#: the first one a tick ago)
ON_ROUTE_LINKS = 3


def finite(*values: float | None) -> bool:
    """Whether every value is a finite number (None is not)."""
    return all(v is not None and math.isfinite(v) for v in values)


def match_on_route(
    graph: Graph,
    fix: Fix,
    previous_fix: Fix | None,
    last_moving_fix: Fix | None,
    now_s: float,
    shown: tuple[int, ...],
    gps: GpsConfig,
    match: MatchCheckConfig,
) -> Match | None:
    """The fix matched on ``graph`` with the direction the gate will judge by (the receiver's
    heading when moving, else the bearing from the previous fix, else the last moving heading
    while stopped), preferring the route shown (:func:`on_route_match`); None when no link is
    near enough."""
    mc = match.matching
    fc = check_fix(fix, previous_fix, now_s, None, gps, last_moving_fix)
    heading = fc.heading_deg
    speed = fix.speed_mps if finite(fix.speed_mps) else 0.0
    if heading is not None:
        speed = max(speed or 0.0, mc.min_speed_for_heading_mps)
    try:
        m = match_fix(graph, fix.lon, fix.lat, heading, speed, mc)
    except NoMatchError:
        return None
    return on_route_match(m, shown, mc.ambiguity_ratio)


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
    speed = fix.speed_mps if fix is not None and finite(fix.speed_mps) else None
    committed = 0
    from agent.planner import is_committed  # with a route shown: not on the first tick

    if turn is not None and is_committed(
        turn[1], speed, params.route_commit_s, params.route_commit_m
    ):
        committed = turn[0]
    return rest[1:], committed
