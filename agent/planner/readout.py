"""The route read-out of a solved :class:`~agent.planner.core.ValueTable`: the value of entering
a link at a layer (``Q``), the best next link, and the route followed from the cab's link (no
U-turn, a bounded number of visits per link, the route's own passes counted as vacant passes).
"""

from __future__ import annotations

import hashlib
import math
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from agent.planner.core import F64, I64, Prepared, ValueTable, _interp
from agent.planner.deadends import live_links


def action_values(table: ValueTable, layer: int, links: I64, age_s: F64 | None = None) -> F64:
    """Q of entering each of ``links`` at ``layer`` (no legality mask applied).

    ``age_s`` (per link of ``links``, optional): seconds since a vacant cab last passed the
    link, when known (the cab's own history, or the fleet's): the waiting hails then built up
    for ``min(W, age)`` only, not ``W``. Without it, the table's own ``pass_age_s`` (the
    passes it was solved with, aged to ``layer``) applies, as in the values."""
    prep = table.prep
    dt = prep.step_s
    k = min(max(layer, 0), table.n_layers - 1)
    n = prep.n
    nc = table.cont.shape[1]
    step_shift = prep.tau_s[links] / dt
    v_next = _interp(table.values.reshape(-1), n, k, step_shift, links, table.slope_v[k])
    c_next = _interp(
        table.cont.reshape(-1),
        nc,
        k,
        step_shift + table.trip_layers[links],
        table.cell[links],
        table.slope_c[k],
    )
    if age_s is None and table.pass_age_s is not None:
        age_s = table.pass_age_s[links] + max(layer, 0) * dt
    p = table.pickup_prob[table.layer_slot[k], links]
    if age_s is not None:
        age = np.maximum(np.asarray(age_s, dtype=np.float64), 0.0)
        w = table.window_s[links]
        rate = table.rate_h[table.layer_slot[k], links]
        depleted = -np.expm1(-rate * ((prep.tau_s[links] + np.minimum(w, age)) / 3600.0))
        p = np.where(age < w, depleted, p)
    return np.asarray(p * (table.fare[links] + c_next) + (1.0 - p) * v_next - table.cost[links])


#: per solved table (its values and what :func:`action_values` reads besides ``P``), the terms
#: of ``Q`` that do not depend on the pickup probability, per layer: a few recent tables
Terms = tuple[list[float], list[float], list[float]]
#: one link's terms at one layer: ``F + C``, ``V`` after the link, the driving cost
LinkTerms = tuple[float, float, float]
_TERMS: OrderedDict[int, tuple[tuple[object, ...], dict[int, _LayerTerms]]] = OrderedDict()
_TERMS_MAX = 4
#: a layer asked for more than ``n / _FULL_SHARE`` links (the simulator's many cabs on one
#: table) computes every link at once; fewer (one cab's read-out: a few per layer) one at a time
_FULL_SHARE = 32
_FULL_MIN = 16


class _LayerTerms:
    """The terms of one layer ``k`` of a table: per link on demand (:func:`_link_terms`, on
    Python floats), or for every link at once (:func:`_terms_at`) once many links were asked
    for. Both give the same bits per link (the same IEEE operations in the same order)."""

    __slots__ = ("full", "k", "limit", "some", "table")

    def __init__(self, table: ValueTable, k: int) -> None:
        self.table = table
        self.k = k
        self.full: Terms | None = None
        self.some: dict[int, LinkTerms] = {}
        self.limit = max(_FULL_MIN, table.prep.n // _FULL_SHARE)

    def at(self, f: int) -> LinkTerms:
        full = self.full
        if full is not None:
            return full[0][f], full[1][f], full[2][f]
        got = self.some.get(f)
        if got is None:
            got = _link_terms(self.table, self.k, f)
            self.some[f] = got
            if len(self.some) > self.limit:
                self.full = _terms_at(self.table, self.k)
                self.some = {}
        return got


class _Last(threading.local):
    """Per thread, the table of the last call and its terms (no identity checks between the
    steps of one read-out, which all see the same table)."""

    def __init__(self) -> None:
        self.table: ValueTable | None = None
        self.layers: dict[int, _LayerTerms] = {}


_LAST = _Last()


class _Links(threading.local):
    """Per thread, the prepared graph of the last read-out and what its walk reads of each link
    on Python values (:func:`link_facts`), filled on demand: a step of the walk asked numpy for a
    slice of successors and a few scalars, each a new object (one cab's read-out visits a few
    dozen links; the simulator's thousands of cabs on one graph revisit the same ones)."""

    def __init__(self) -> None:
        self.prep: object = None
        self.links: dict[int, tuple[list[int], int, int, float, float]] = {}


_LINKS = _Links()


def link_facts(prep: Prepared, e: int) -> tuple[list[int], int, int, float, float]:
    """Link ``e`` of ``prep``: its successors (``arc_dst`` in order), its start and end nodes,
    its length and traversal time (the same values as the arrays')."""
    memo = _LINKS
    if memo.prep is not prep:
        memo.prep, memo.links = prep, {}
    got = memo.links.get(e)
    if got is None:
        g = prep.graph
        lo, hi = int(prep.arc_offsets[e]), int(prep.arc_offsets[e + 1])
        got = (
            prep.arc_dst[lo:hi].tolist(),
            int(g.u_node[e]),
            int(g.v_node[e]),
            float(prep.length_m[e]),
            float(prep.tau_s[e]),
        )
        memo.links[e] = got
    return got


def _layer_terms(table: ValueTable, k: int) -> _LayerTerms:
    """At layer ``k``, per link ``f``: ``F_f + C_f`` (the fare and the value after the
    drop-off), ``V`` after driving ``f``, and ``f``'s driving cost, computed as
    :func:`action_values` computes them (the same bits per element) and kept for the table:
    the tables a read-out sees with the fleet (:func:`agent.planner.fleet.with_fleet`) change
    ``P`` only, so the cabs of one tick share them."""
    last = _LAST
    if last.table is not table:
        last.table, last.layers = table, _table_terms(table)
    got = last.layers.get(k)
    if got is None:
        got = _LayerTerms(table, k)
        last.layers[k] = got
    return got


def _table_terms(table: ValueTable) -> dict[int, _LayerTerms]:
    """The per-layer terms kept for ``table``'s values and inputs (a new entry: none yet)."""
    inputs = (
        table.values,
        table.cont,
        table.fare,
        table.cost,
        table.cell,
        table.trip_layers,
        table.slope_v,
        table.slope_c,
        table.prep.tau_s,
    )
    key = id(table.values)
    hit = _TERMS.get(key)
    if hit is None or any(a is not b for a, b in zip(hit[0], inputs, strict=True)):
        hit = (inputs, {})
        _TERMS[key] = hit
        while len(_TERMS) > _TERMS_MAX:
            _TERMS.popitem(last=False)
    return hit[1]


def _terms_at(table: ValueTable, k: int) -> Terms:
    prep = table.prep
    n = prep.n
    links = np.arange(n, dtype=np.int64)
    shift = prep.tau_s / prep.step_s
    v_next = _interp(table.values.reshape(-1), n, k, shift, links, table.slope_v[k])
    c_next = _interp(
        table.cont.reshape(-1),
        table.cont.shape[1],
        k,
        shift + table.trip_layers,
        table.cell,
        table.slope_c[k],
    )
    return (table.fare + c_next).tolist(), v_next.tolist(), table.cost.tolist()


def _interp_at(table2d: F64, k: int, x: float, col: int, slope: float) -> float:
    """:func:`agent.planner.core._interp` of one column of a ``(rows, width)`` array on Python
    floats: the same operations in the same order (``floor``, ``max``, the truncation to a row,
    the clamp of the lower row, the same elements as the flat offsets there)."""
    a = max(float(math.floor(x)), 1.0)
    w = x - a
    lo = min(int(float(k) + a), table2d.shape[0] - 2)
    v0 = float(table2d[lo, col])
    if w >= 0.0:
        return v0 + w * (float(table2d[lo + 1, col]) - v0)
    return v0 + -w * slope


def _link_terms(table: ValueTable, k: int, f: int) -> LinkTerms:
    """The terms of :func:`_terms_at` for the link ``f`` alone (the same bits)."""
    prep = table.prep
    shift = float(prep.tau_s[f]) / prep.step_s
    c_shift = shift + float(table.trip_layers[f])
    if not (math.isfinite(shift) and math.isfinite(c_shift)):  # as numpy does it, however odd
        full = _terms_at(table, k)
        return full[0][f], full[1][f], full[2][f]
    v_next = _interp_at(table.values, k, shift, f, float(table.slope_v[k]))
    c_next = _interp_at(table.cont, k, c_shift, int(table.cell[f]), float(table.slope_c[k]))
    return float(table.fare[f]) + c_next, v_next, float(table.cost[f])


def best_next(
    table: ValueTable,
    link: int,
    t_rel_s: float,
    last_pass_s: F64 | None = None,
    own_passes: dict[int, float] | None = None,
    skip: set[int] | None = None,
) -> int:
    """Best legal successor of ``link`` when leaving it ``t_rel_s`` after the table's start,
    or -1 when none may be entered (never returns a link that is not allowed then).

    ``last_pass_s`` (per local link, seconds after the table's start, ``-inf`` if unknown) and
    ``own_passes`` (the same, overriding) give the time of the last vacant pass of each link;
    the passes the table was solved with (``table.pass_age_s``) count too.
    ``skip``: local links not to enter (the route read-out's U-turns and revisits).

    The maximum of :func:`action_values` over the allowed successors (the first of equal
    ones), evaluated one successor at a time on Python floats (:func:`successor_values`)."""
    best_f = -1
    best_q = -math.inf
    for f, q in successor_values(table, link, t_rel_s, last_pass_s, own_passes, skip):
        if best_f < 0 or q > best_q:
            best_f, best_q = f, q
    return best_f


def successor_values(
    table: ValueTable,
    link: int,
    t_rel_s: float,
    last_pass_s: F64 | None = None,
    own_passes: dict[int, float] | None = None,
    skip: set[int] | None = None,
) -> list[tuple[int, float]]:
    """``(f, Q_f)`` of each successor ``f`` of ``link`` that may be entered when leaving it
    ``t_rel_s`` after the table's start (not in ``skip``), in the graph's successor order; the
    arguments are :func:`best_next`'s.

    :func:`action_values` one successor at a time on Python floats: a junction has two or
    three successors, where numpy's per-call overhead was most of the route read-out's time.
    Same operations in the same order, and the depleted probability through ``np.expm1`` as
    there, so the same bits (tests/agent/test_readout_scalar.py compares both)."""
    prep = table.prep
    out = link_facts(prep, link)[0]
    if not out:
        return []
    allowed = table.allowed_at(table.start_minute_of_week + t_rel_s / 60.0)
    succ = [f for f in out if allowed[f] and not (skip and f in skip)]
    if not succ:
        return []
    dt = prep.step_s
    layer = math.floor(t_rel_s / dt + 0.5)
    k = min(max(layer, 0), table.n_layers - 1)
    terms = _layer_terms(table, k)
    slot = int(table.layer_slot[k])
    pass_age = table.pass_age_s
    with_age = last_pass_s is not None or bool(own_passes) or pass_age is not None
    scored: list[tuple[int, float]] = []
    for f in succ:
        p = float(table.pickup_prob[slot, f])
        if with_age:
            last = float(last_pass_s[f]) if last_pass_s is not None else -math.inf
            if pass_age is not None:
                last = max(last, -float(pass_age[f]))
            if own_passes and f in own_passes:
                last = max(last, own_passes[f])
            age = max(t_rel_s - last, 0.0)
            window = float(table.window_s[f])
            if age < window:
                rate = float(table.rate_h[slot, f])
                tau = link_facts(prep, f)[4]
                p = float(-np.expm1(-rate * ((tau + min(window, age)) / 3600.0)))
        gain, v_next, cost = terms.at(f)
        scored.append((f, p * gain + (1.0 - p) * v_next - cost))
    return scored


@dataclass(frozen=True)
class Spread:
    """The read-out's spread (``PlannerParams.route_spread_eps``, docs/planner.md, "Offline
    cabs that spread"): at each junction, among the successors whose ``Q`` is within
    ``eps * |Q_best|`` of the best, the one :func:`spread_hash` of (``salt``, the link)
    names, instead of the best alone. ``salt`` is the cab's own (the agent's
    ``TickInputs.spread_salt``), so that cabs planning with the same values no longer drive the
    same corridors; where one successor is clearly better every cab still takes it."""

    eps: float
    salt: int

    def __post_init__(self) -> None:
        if not (0.0 <= self.eps <= 1.0):
            raise ValueError(f"the spread margin must be within [0, 1], not {self.eps!r}")
        if not (-(2**63) <= self.salt < 2**63):
            raise ValueError("the spread salt must be a signed 64-bit integer")


#: the spread's choices change every this many minutes (:func:`spread_hash`)
SPREAD_PERIOD_MIN = 10


def spread_hash(salt: int, edge_id: int, period: int) -> int:
    """A deterministic 64-bit hash of (the cab's salt, a link's global edge id, the period of
    :data:`SPREAD_PERIOD_MIN` minutes of the week): which of the near-best successors the cab
    takes there and then (reproducible from the tick's logged inputs, independent of the radius
    graph's local numbering). Within a period the next tick reads the same choices out again,
    so the route shown stays put; from one period to the next a cab that comes back to a
    junction may take another branch, so it does not drive one fixed circuit."""
    data = struct.pack("<3q", salt, edge_id, period)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def spread_salt_of(name: str) -> int:
    """A cab's spread salt from its name (the runtime's ``vehicle_id``): a signed 64-bit
    integer, the same on every run."""
    h = hashlib.blake2b(name.encode("utf-8"), digest_size=8, person=b"nagashi-spread").digest()
    return int.from_bytes(h, "little", signed=True)


def spread_next(
    table: ValueTable,
    link: int,
    t_rel_s: float,
    last_pass_s: F64 | None,
    own_passes: dict[int, float] | None,
    skip: set[int] | None,
    spread: Spread,
) -> int:
    """:func:`best_next`, spread (:class:`Spread`): among the successors within the margin of
    the best, the one whose :func:`spread_hash` (the cab's salt, the successor, the period) is
    lowest. ``eps = 0`` is :func:`best_next` exactly."""
    scored = successor_values(table, link, t_rel_s, last_pass_s, own_passes, skip)
    best_f, best_q = -1, -math.inf
    for f, q in scored:
        if best_f < 0 or q > best_q:
            best_f, best_q = f, q
    if len(scored) < 2 or spread.eps <= 0.0:
        return best_f
    floor = best_q - spread.eps * abs(best_q)
    near = [best_f] + [f for f, q in scored if f != best_f and q > floor]
    if len(near) < 2:
        return best_f
    # the near-best successor this cab ranks first (rendezvous hashing: when a successor enters
    # or leaves the near set, the choice changes only if it is the one ranked first)
    ids = table.prep.graph.edge_id
    period = math.floor((table.start_minute_of_week + t_rel_s / 60.0) / SPREAD_PERIOD_MIN)
    return min(near, key=lambda f: spread_hash(spread.salt, int(ids[f]), period))


def follow(
    table: ValueTable,
    start: int,
    t0_rel_s: float,
    min_length_m: float,
    min_duration_s: float,
    max_edges: int,
    last_pass_s: F64 | None = None,
    max_visits: int = 0,
    prefix: tuple[int, ...] = (),
    spread: Spread | None = None,
) -> tuple[list[int], float, float]:
    """Route read out of the table's policy: (local links, length_m, duration_s). The route's
    own earlier passes count as vacant passes (a block driven twice finds fewer hails).

    ``max_visits`` > 0: the route enters no link that it (counting the start link) already
    holds that often, and makes no U-turn (back along the link it came by); where only such a
    move is left, the route ends. With ``max_visits`` > 1 it enters a link it already holds
    only where every other move is barred. This is the shape safety/ shows (``RouteConfig``):
    the MDP's state cannot know that the route itself drained a curb a few minutes before
    (only the cab's past passes, ``table.pass_age_s``), so its policy alone may circle one
    block. From a link that is not a dead end itself it enters none
    (:mod:`agent.planner.deadends`: a link the route could only leave by a U-turn, or not at
    all): where only dead ends are left, the route ends before them (the cab would end there
    with no route to show).

    ``prefix``: local links the route enters first, as given (a route kept from the previous
    tick); the read-out continues from its last link. ``spread``: each step takes
    :func:`spread_next`'s successor, not :func:`best_next`'s (``route_spread_eps``)."""
    prep = table.prep

    def pick(e: int, t: float, skip: set[int] | None) -> int:
        if spread is None:
            return best_next(table, e, t, last_pass_s, own, skip)
        return spread_next(table, e, t, last_pass_s, own, skip, spread)

    horizon_s = table.n_layers * prep.step_s
    route: list[int] = []
    length = 0.0
    t = t0_rel_s
    e = start
    live = live_links(table, table.start_minute_of_week + t0_rel_s / 60.0) if max_visits else None
    own: dict[int, float] = {start: t0_rel_s}
    visits: dict[int, int] = {start: 1}
    for f in prefix:
        route.append(f)
        _, _, _, f_m, f_s = link_facts(prep, f)
        length += f_m
        t += f_s
        own[f] = t
        visits[f] = visits.get(f, 0) + 1
        e = f
    while len(route) < max_edges and t < horizon_s:
        if length >= min_length_m and t - t0_rel_s >= min_duration_s:
            break
        skip: set[int] | None = None
        if max_visits > 0:
            succ, back = link_facts(prep, e)[:2]
            skip = {
                f for f in succ if visits.get(f, 0) >= max_visits or link_facts(prep, f)[2] == back
            }
        f = -1
        if (
            skip is not None and live is not None and live[e]
        ):  # no dead end; a link not on the route yet first
            ends = {f for f in succ if not live[f]}
            f = pick(e, t, skip | ends | {f for f in succ if f in visits})
            if f < 0:
                f = pick(e, t, skip | ends)
            if f < 0:
                break  # only a dead end is left: the route ends before it
        elif skip is not None:  # a link not on the route yet, while there is one
            f = pick(e, t, skip | {f for f in succ if f in visits})
        if f < 0:
            f = pick(e, t, skip)
        if f < 0:
            break
        route.append(f)
        _, _, _, f_m, f_s = link_facts(prep, f)
        length += f_m
        t += f_s
        own[f] = t
        visits[f] = visits.get(f, 0) + 1
        e = f
    return route, length, t - t0_rel_s
