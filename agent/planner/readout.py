"""The route read-out of a solved :class:`~agent.planner.core.ValueTable`: the value of entering
a link at a layer (``Q``), the best next link, and the route followed from the cab's link (no
U-turn, a bounded number of visits per link, the route's own passes counted as vacant passes).
"""

from __future__ import annotations

import math

import numpy as np

from agent.planner.core import F64, I64, ValueTable, _interp


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
    """
    prep = table.prep
    lo, hi = int(prep.arc_offsets[link]), int(prep.arc_offsets[link + 1])
    if hi == lo:
        return -1
    succ = prep.arc_dst[lo:hi]
    ok = table.allowed_at(table.start_minute_of_week + t_rel_s / 60.0)[succ]
    if skip:
        ok = ok & ~np.isin(succ, np.fromiter(skip, dtype=succ.dtype, count=len(skip)))
    if not ok.any():
        return -1
    layer = math.floor(t_rel_s / prep.step_s + 0.5)
    links = succ.tolist()
    age: list[float] | None = None
    if last_pass_s is not None or own_passes or table.pass_age_s is not None:
        last = (
            np.asarray(last_pass_s[succ], dtype=np.float64)
            if last_pass_s is not None
            else np.full(succ.shape[0], -np.inf)
        )
        if table.pass_age_s is not None:
            last = np.maximum(last, -table.pass_age_s[succ])
        if own_passes:
            for j, f in enumerate(links):
                if f in own_passes:
                    last[j] = max(last[j], own_passes[f])
        age = (t_rel_s - last).tolist()
    q = _scalar_action_values(table, layer, links, age)
    best, best_q = -1, -math.inf
    for j, allowed in enumerate(ok.tolist()):
        # np.argmax over np.where(ok, q, -inf): the first maximum, a NaN counting as one
        if allowed and (best < 0 or q[j] > best_q or (q[j] != q[j] and best_q == best_q)):
            best, best_q = j, q[j]
    return int(links[best if best >= 0 else 0])


def _scalar_interp(
    flat: F64, width: int, layer: int, shift: float, col: int, slope: float
) -> float:
    """:func:`agent.planner.core._interp` for one column, in Python floats (the same IEEE
    operations in the same order, so the same bits)."""
    a = max(math.floor(shift), 1.0)
    w = shift - a
    lo = min(int(layer + a), flat.shape[0] // width - 2)
    i = lo * width + col
    v0 = float(flat[i])
    return v0 + (w * (float(flat[i + width]) - v0) if w >= 0.0 else -w * slope)


def _scalar_action_values(
    table: ValueTable, layer: int, links: list[int], age_s: list[float] | None
) -> list[float]:
    """:func:`action_values` of a few links (a link's successors) in Python floats: the same
    operations in the same order, the depleted ``P`` through numpy's ``expm1`` (its own
    implementation), so bit for bit the values of :func:`action_values` (tested) at a fraction
    of the numpy calls."""
    prep = table.prep
    dt = prep.step_s
    k = min(max(layer, 0), table.n_layers - 1)
    n = prep.n
    vflat = table.values.reshape(-1)
    cflat = table.cont.reshape(-1)
    nc = table.cont.shape[1]
    slope_v, slope_c = float(table.slope_v[k]), float(table.slope_c[k])
    slot = int(table.layer_slot[k])
    if age_s is None and table.pass_age_s is not None:
        age_s = (table.pass_age_s[links] + max(layer, 0) * dt).tolist()
    tau = prep.tau_s[links].tolist()
    p = table.pickup_prob[slot, links].tolist()
    if age_s is not None:
        window = table.window_s[links].tolist()
        short = [j for j, a in enumerate(age_s) if max(a, 0.0) < window[j]]
        if short:
            rate = table.rate_h[slot, links].tolist()
            x = [-rate[j] * ((tau[j] + min(window[j], max(age_s[j], 0.0))) / 3600.0) for j in short]
            for j, e in zip(short, np.expm1(np.asarray(x, dtype=np.float64)).tolist(), strict=True):
                p[j] = -e
    fare = table.fare[links].tolist()
    cost = table.cost[links].tolist()
    trip = table.trip_layers[links].tolist()
    cell = table.cell[links].tolist()
    out = []
    for j, f in enumerate(links):
        shift = tau[j] / dt
        v_next = _scalar_interp(vflat, n, k, shift, f, slope_v)
        c_next = _scalar_interp(cflat, nc, k, shift + trip[j], cell[j], slope_c)
        out.append(p[j] * (fare[j] + c_next) + (1.0 - p[j]) * v_next - cost[j])
    return out


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
) -> tuple[list[int], float, float]:
    """Route read out of the table's policy: (local links, length_m, duration_s). The route's
    own earlier passes count as vacant passes (a block driven twice finds fewer hails).

    ``max_visits`` > 0: the route enters no link that it (counting the start link) already
    holds that often, and makes no U-turn (back along the link it came by); where only such a
    move is left, the route ends. With ``max_visits`` > 1 it enters a link it already holds
    only where every other move is barred. This is the shape safety/ shows (``RouteConfig``):
    the MDP's state cannot know that the route itself drained a curb a few minutes before
    (only the cab's past passes, ``table.pass_age_s``), so its policy alone may circle one
    block.

    ``prefix``: local links the route enters first, as given (a route kept from the previous
    tick); the read-out continues from its last link."""
    prep = table.prep
    g = prep.graph
    horizon_s = table.n_layers * prep.step_s
    route: list[int] = []
    length = 0.0
    t = t0_rel_s
    e = start
    own: dict[int, float] = {start: t0_rel_s}
    visits: dict[int, int] = {start: 1}
    for f in prefix:
        route.append(f)
        length += float(prep.length_m[f])
        t += float(prep.tau_s[f])
        own[f] = t
        visits[f] = visits.get(f, 0) + 1
        e = f
    while len(route) < max_edges and t < horizon_s:
        if length >= min_length_m and t - t0_rel_s >= min_duration_s:
            break
        skip: set[int] | None = None
        if max_visits > 0:
            lo, hi = int(prep.arc_offsets[e]), int(prep.arc_offsets[e + 1])
            succ = prep.arc_dst[lo:hi].tolist()
            back = int(g.u_node[e])
            skip = {f for f in succ if visits.get(f, 0) >= max_visits or int(g.v_node[f]) == back}
        f = -1
        if skip is not None:  # a link not on the route yet, while there is one
            f = best_next(table, e, t, last_pass_s, own, skip | {f for f in succ if f in visits})
        if f < 0:
            f = best_next(table, e, t, last_pass_s, own, skip)
        if f < 0:
            break
        route.append(f)
        length += float(prep.length_m[f])
        t += float(prep.tau_s[f])
        own[f] = t
        visits[f] = visits.get(f, 0) + 1
        e = f
    return route, length, t - t0_rel_s
