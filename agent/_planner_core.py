"""Backward value iteration of the cruising MDP (see :mod:`agent.planner` for the equations).

Everything here is vectorised over links: the only Python loop of the hot path runs over the
time layers. Arrays are float64 and every reduction has a fixed order, so the same inputs give
bit-identical values.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt

from models.demand import SLOT_MINUTES, TickDemand
from tiles import tags as T
from tiles.conditional import MINUTES_PER_WEEK
from tiles.graph import Graph

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class Prepared:
    """Static per-graph arrays (arcs in source order, traversal times in layers)."""

    graph: Graph
    step_s: float
    arc_src: I64  # legal turns sorted by (from, to)
    arc_dst: I64
    arc_offsets: I64  # (n+1,) CSR offsets of arcs per source
    src_with_arcs: I64  # sources that have at least one arc
    starts: I64  # first arc of each source in src_with_arcs
    tau_s: F64  # cruising traversal time per link, seconds
    length_m: F64
    cruisable: Bool  # cruise flags and business area (time windows are per layer)

    @property
    def n(self) -> int:
        return int(self.tau_s.shape[0])


#: a few recently prepared graphs (strong references, so bounded: a weak-keyed cache would be
#: kept alive by ``Prepared.graph`` itself)
_PREPARED: OrderedDict[tuple[object, ...], Prepared] = OrderedDict()
_PREPARED_MAX = 4


def prepare(graph: Graph, step_s: float, speed_factor: float, area: Bool | None) -> Prepared:
    """Static arrays for ``graph`` (cached per graph, step, speed factor and area)."""
    area_key = None if area is None else np.packbits(area).tobytes()
    key = (id(graph), step_s, speed_factor, area_key)
    hit = _PREPARED.get(key)
    if hit is not None and hit.graph is graph:
        _PREPARED.move_to_end(key)
        return hit
    n = graph.n
    src, dst = graph.turn_pairs
    order = np.lexsort((dst, src))
    arc_src = src[order].astype(np.int64)
    arc_dst = dst[order].astype(np.int64)
    counts = np.bincount(arc_src, minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    src_with = np.flatnonzero(counts > 0).astype(np.int64)
    tau = np.asarray(graph.travel_time_s, dtype=np.float64) / speed_factor
    cruisable = (graph.flags & T.CRUISE_FORBIDDEN) == 0
    if area is not None:
        cruisable = cruisable & np.asarray(area, dtype=bool)
    prep = Prepared(
        graph=graph,
        step_s=step_s,
        arc_src=arc_src,
        arc_dst=arc_dst,
        arc_offsets=offsets,
        src_with_arcs=src_with,
        starts=offsets[src_with],
        tau_s=tau,
        length_m=np.asarray(graph.length_m, dtype=np.float64),
        cruisable=np.asarray(cruisable, dtype=bool),
    )
    _PREPARED[key] = prep
    while len(_PREPARED) > _PREPARED_MAX:
        _PREPARED.popitem(last=False)
    return prep


@dataclass(frozen=True, eq=False)
class ValueTable:
    """The solved MDP: values ``V[k, e]`` at the end of link ``e`` at layer ``k`` and what is
    needed to evaluate any action again (route extraction, the simulator's policy)."""

    prep: Prepared
    start_minute_of_week: float
    n_layers: int
    values: F64  # (rows, n); rows >= n_layers are the terminal 0
    cont: F64  # (rows_c, n_cells + 1): expected value after a drop-off from each pickup cell
    pickup_prob: F64  # (n_slots, n)
    rate_h: F64  # (n_slots, n) hails per hour
    window_s: F64  # (n,) W: how long a waiting hail stays available
    fare: F64  # (n,)
    cost: F64  # (n,) driving cost of traversing each link
    cell: I64  # (n,) pickup cell column into ``cont`` (n_cells for links without demand)
    trip_layers: F64  # (n,) trip duration in layers
    layer_slot: I64  # (n_layers,) slot row of pickup_prob
    layer_minute: I64  # (n_layers,) index into ``allowed``
    minutes: I64  # (M,) distinct minutes of week covered
    allowed: Bool  # (M, n) may a cruising cab enter the link during that minute
    exit_value: F64  # (n_layers,) value of leaving the planned area / a dead end
    slope_v: F64  # (n_layers,) network-mean value of one layer, for sub-layer links
    slope_c: F64
    #: local date of the Monday of the start's week: the real dates (public holidays) decide
    #: the no-entry windows that depend on them; None: an ordinary week
    monday: date | None = None

    def allowed_at(self, minute_of_week: float) -> Bool:
        raw = math.floor(minute_of_week)
        m = raw % MINUTES_PER_WEEK
        i = int(np.searchsorted(self.minutes, m))
        if i < self.minutes.shape[0] and self.minutes[i] == m:
            return np.asarray(self.allowed[i])
        closed = self.prep.graph.closed_at(m if self.monday is None else raw, self.monday)
        ok = self.prep.cruisable & ~closed
        return np.asarray(ok)


def _interp(
    flat: F64, width: int, layer: float | F64, shift: F64, cols: I64, slope: F64 | float
) -> F64:
    """Values at fractional layers ``layer + shift`` for columns ``cols`` of a (rows, width)
    array: linear between layers; less than one layer ahead, the next layer's value plus the
    unused part of the layer times ``slope`` (the network-mean value of one layer)."""
    x = np.asarray(shift, dtype=np.float64)
    a = np.maximum(np.floor(x), 1.0)
    w = x - a
    base = (np.asarray(layer, dtype=np.float64) + a).astype(np.int64)
    rows = flat.shape[0] // width
    lo = np.minimum(base, rows - 2)
    i = lo * width + cols
    v0 = flat[i]
    return np.asarray(v0 + np.where(w >= 0.0, w * (flat[i + width] - v0), -w * slope))


def _shift_weights(shift: F64, width: int, cols: I64) -> tuple[I64, F64, F64]:
    """Flat offsets and weights of :func:`_interp` for constant per-column shifts."""
    a = np.maximum(np.floor(shift), 1.0)
    w = shift - a
    off = a.astype(np.int64) * width + cols
    return off, np.maximum(w, 0.0), np.maximum(-w, 0.0)


def _successor_columns(prep: Prepared, cz: I64) -> tuple[I64, list[I64]]:
    """Sources with a cruisable successor, sorted by out-degree (descending), and per column
    ``d`` the position in ``cz`` of each source's ``d``-th successor (a prefix of sources)."""
    pos = np.full(prep.n, -1, dtype=np.int64)
    pos[cz] = np.arange(cz.shape[0], dtype=np.int64)
    keep = pos[prep.arc_dst] >= 0
    src = prep.arc_src[keep]
    dst = pos[prep.arc_dst[keep]]
    deg = np.bincount(src, minlength=prep.n)
    has = np.flatnonzero(deg > 0)
    order = has[np.argsort(-deg[has], kind="stable")]
    first = np.zeros(prep.n + 1, dtype=np.int64)
    np.cumsum(deg, out=first[1:])
    columns: list[I64] = []
    for d in range(int(deg.max(initial=0))):
        rows = order[deg[order] > d]
        columns.append(dst[first[rows] + d])
    if not columns:
        columns.append(np.zeros(0, dtype=np.int64))
    return order.astype(np.int64), columns


def solve_table(
    prep: Prepared,
    demand: TickDemand,
    start_minute_of_week: float,
    horizon_s: float,
    cost_per_m: float,
    cost_per_s: float,
    patience_s: float,
    competing_vacant_per_h: float,
    outside_value_share: float,
    supply_per_h: npt.NDArray[np.floating[Any]] | None = None,
    monday: date | None = None,
) -> ValueTable:
    g = prep.graph
    n = prep.n
    dt = prep.step_s
    K = max(round(horizon_s / dt), 1)
    # demand on local links
    loc = g.local(demand.edge_id)
    has = loc >= 0
    li = loc[has].astype(np.int64)
    n_slots = int(demand.pickups_per_h.shape[0])
    rate = np.zeros((n_slots, n), dtype=np.float64)
    rate[:, li] = np.asarray(demand.pickups_per_h, dtype=np.float64)[:, has]
    fare = np.zeros(n, dtype=np.float64)
    fare[li] = np.asarray(demand.fare_mean, dtype=np.float64)[has]
    trip_s = np.full(n, dt, dtype=np.float64)
    trip_s[li] = np.maximum(np.asarray(demand.trip_duration_s, dtype=np.float64)[has], dt)
    n_cells = int(demand.dropoff.shape[0])
    cell = np.full(n, n_cells, dtype=np.int64)
    cell[li] = np.asarray(demand.cell, dtype=np.int64)[has]
    drop = np.asarray(demand.dropoff, dtype=np.float64)
    p_in = drop[:, :n_cells]
    p_out = drop[:, n_cells] if drop.shape[1] > n_cells else np.zeros(n_cells)

    # pickup probability per slot: 1 - exp(-lambda (tau + W) / 3600), W = 1 / (nu + 1/theta)
    nu_h = np.full(n, competing_vacant_per_h, dtype=np.float64)
    if supply_per_h is not None:
        nu_h[li] += np.asarray(supply_per_h, dtype=np.float64)[has]
    window_s = 1.0 / (nu_h / 3600.0 + 1.0 / patience_s)
    expected = rate * ((prep.tau_s + window_s) / 3600.0)[None, :]
    pickup_prob = -np.expm1(-expected)
    cost = cost_per_m * prep.length_m + cost_per_s * prep.tau_s

    # layers: time, slot row, minute-of-week mask row
    t_min = start_minute_of_week + np.arange(K, dtype=np.float64) * (dt / 60.0)
    raw_minute = np.floor(t_min).astype(np.int64)
    minute = raw_minute % MINUTES_PER_WEEK
    minutes, first, layer_minute = np.unique(minute, return_index=True, return_inverse=True)
    # with the date: minutes counted from the start week's Monday (a horizon past Sunday night
    # is in the next week, whose dates and holidays differ)
    when = minutes if monday is None else raw_minute[first]
    allowed = prep.cruisable[None, :] & ~np.atleast_2d(g.closed_at(when, monday))
    slot0 = int(demand.slot_minute_of_week[0]) if n_slots else 0
    since = (minute - slot0) % MINUTES_PER_WEEK
    layer_slot = np.minimum(since // SLOT_MINUTES, max(n_slots - 1, 0)).astype(np.int64)

    # cell averaging: U[c] = mean V over cruisable links of cell c
    member = prep.cruisable & (cell < n_cells)
    mi = np.flatnonzero(member)
    counts = np.bincount(cell[mi], minlength=n_cells).astype(np.float64)
    empty = counts == 0
    inv_count = np.where(empty, 0.0, 1.0 / np.maximum(counts, 1.0))
    members = mi.astype(np.int64)
    member_cell = cell[mi]

    step_shift = prep.tau_s / dt
    trip_shift = step_shift + trip_s / dt
    rows_v = K + int(np.ceil(step_shift.max(initial=1.0))) + 3
    rows_c = K + int(np.ceil(trip_shift.max(initial=1.0))) + 3
    values = np.zeros((rows_v, n), dtype=np.float64)
    cont = np.zeros((rows_c, n_cells + 1), dtype=np.float64)
    vflat = values.reshape(-1)
    cflat = cont.reshape(-1)
    nc1 = n_cells + 1

    # only cruisable links can be entered: Q is computed for them alone
    cz = np.flatnonzero(prep.cruisable).astype(np.int64)
    v_off, v_wpos, v_wneg = _shift_weights(step_shift[cz], n, cz)
    c_off, c_wpos, c_wneg = _shift_weights(trip_shift[cz], nc1, cell[cz])
    fare_c = fare[cz]
    cost_c = cost[cz]
    prob_c = np.ascontiguousarray(pickup_prob[:, cz])
    penalty = np.where(allowed[:, cz], 0.0, -np.inf)
    srcs, columns = _successor_columns(prep, cz)

    exit_value = np.zeros(K, dtype=np.float64)
    slope_v = np.zeros(K, dtype=np.float64)
    slope_c = np.zeros(K, dtype=np.float64)
    row_mean = np.zeros(rows_v, dtype=np.float64)
    cont_mean = np.zeros(rows_c, dtype=np.float64)
    q_ext = np.full(cz.shape[0] + 1, -np.inf, dtype=np.float64)  # last slot: no successor
    q = q_ext[:-1]
    v0 = np.empty(cz.shape[0])
    v1 = np.empty(cz.shape[0])
    c0 = np.empty(cz.shape[0])
    c1 = np.empty(cz.shape[0])
    u_out_next = 0.0
    add_reduce = np.add.reduce
    bincount = np.bincount
    inv_n = 1.0 / n
    inv_nc1 = 1.0 / nc1
    full = ~empty
    any_full = bool(full.any())
    inv_full = 1.0 / max(int(full.sum()), 1)
    for k in range(K - 1, -1, -1):
        sv = row_mean[k + 1] - row_mean[k + 2]
        sc = cont_mean[k + 1] - cont_mean[k + 2]
        slope_v[k] = sv
        slope_c[k] = sc
        vflat[k * n :].take(v_off, out=v0)
        vflat[(k + 1) * n :].take(v_off, out=v1)
        cflat[k * nc1 :].take(c_off, out=c0)
        cflat[(k + 1) * nc1 :].take(c_off, out=c1)
        # v_next = v0 + wpos (v1 - v0) + wneg sv ; likewise c_next
        v1 -= v0
        v1 *= v_wpos
        v1 += v0
        v1 += v_wneg * sv
        c1 -= c0
        c1 *= c_wpos
        c1 += c0
        c1 += c_wneg * sc
        # q = v_next + p (F + c_next - v_next) - cost + penalty
        c1 += fare_c
        c1 -= v1
        c1 *= prob_c[layer_slot[k]]
        np.add(v1, c1, out=q)
        q -= cost_c
        q += penalty[layer_minute[k]]
        best = q_ext[columns[0]]
        for col in columns[1:]:
            head = best[: col.shape[0]]
            np.maximum(head, q_ext[col], out=head)
        best[best == -np.inf] = u_out_next
        row = values[k]
        row.fill(u_out_next)
        row[srcs] = best
        row_mean[k] = add_reduce(row) * inv_n
        exit_value[k] = u_out_next
        u = bincount(member_cell, row[members], n_cells) * inv_count
        u_out = outside_value_share * add_reduce(u[full]) * inv_full if any_full else 0.0
        u[empty] = u_out
        crow = cont[k]
        crow[:n_cells] = p_in @ u
        if u_out:
            crow[:n_cells] += p_out * u_out
        crow[n_cells] = u_out
        cont_mean[k] = add_reduce(crow) * inv_nc1
        u_out_next = u_out
    return ValueTable(
        prep=prep,
        start_minute_of_week=float(start_minute_of_week),
        n_layers=K,
        values=values,
        cont=cont,
        pickup_prob=pickup_prob,
        rate_h=rate,
        window_s=window_s,
        fare=fare,
        cost=cost,
        cell=cell,
        trip_layers=trip_s / dt,
        layer_slot=layer_slot,
        layer_minute=layer_minute.astype(np.int64),
        minutes=minutes.astype(np.int64),
        allowed=allowed,
        exit_value=exit_value,
        slope_v=slope_v,
        slope_c=slope_c,
        monday=monday,
    )


def action_values(table: ValueTable, layer: int, links: I64, age_s: F64 | None = None) -> F64:
    """Q of entering each of ``links`` at ``layer`` (no legality mask applied).

    ``age_s`` (per link of ``links``, optional): seconds since a vacant cab last passed the
    link, when known (the cab's own history, or the fleet's): the waiting hails then built up
    for ``min(W, age)`` only, not ``W``."""
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
    if age_s is None:
        p = table.pickup_prob[table.layer_slot[k], links]
    else:
        window = np.minimum(table.window_s[links], np.maximum(age_s, 0.0))
        rate = table.rate_h[table.layer_slot[k], links]
        p = -np.expm1(-rate * (prep.tau_s[links] + window) / 3600.0)
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
    ``own_passes`` (the same, overriding) give the time of the last vacant pass of each link.
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
    age = None
    if last_pass_s is not None or own_passes:
        last = (
            np.asarray(last_pass_s[succ], dtype=np.float64)
            if last_pass_s is not None
            else np.full(succ.shape[0], -np.inf)
        )
        if own_passes:
            for j, f in enumerate(succ.tolist()):
                if f in own_passes:
                    last[j] = max(last[j], own_passes[f])
        age = t_rel_s - last
    q = action_values(table, layer, succ, age)
    q = np.where(ok, q, -np.inf)
    return int(succ[int(np.argmax(q))])


def follow(
    table: ValueTable,
    start: int,
    t0_rel_s: float,
    min_length_m: float,
    min_duration_s: float,
    max_edges: int,
    last_pass_s: F64 | None = None,
    max_visits: int = 0,
) -> tuple[list[int], float, float]:
    """Route read out of the table's policy: (local links, length_m, duration_s). The route's
    own earlier passes count as vacant passes (a block driven twice finds fewer hails).

    ``max_visits`` > 0: the route enters no link that it (counting the start link) already
    holds that often, and makes no U-turn (back along the link it came by); where only such a
    move is left, the route ends. This is the shape safety/ shows (``RouteConfig``): the MDP's
    values assume a fresh curb on every pass, so its policy alone may circle one block."""
    prep = table.prep
    g = prep.graph
    horizon_s = table.n_layers * prep.step_s
    route: list[int] = []
    length = 0.0
    t = t0_rel_s
    e = start
    own: dict[int, float] = {start: t0_rel_s}
    visits: dict[int, int] = {start: 1}
    while len(route) < max_edges and t < horizon_s:
        if length >= min_length_m and t - t0_rel_s >= min_duration_s:
            break
        skip: set[int] | None = None
        if max_visits > 0:
            lo, hi = int(prep.arc_offsets[e]), int(prep.arc_offsets[e + 1])
            succ = prep.arc_dst[lo:hi].tolist()
            back = int(g.u_node[e])
            skip = {f for f in succ if visits.get(f, 0) >= max_visits or int(g.v_node[f]) == back}
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
