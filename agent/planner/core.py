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

from agent.planner import kernel_jit
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
    #: per local link, seconds since a vacant cab last passed it at layer 0 (``inf``: unknown,
    #: long ago); None when no pass is known (see :func:`_depleted_probability`)
    pass_age_s: F64 | None = None
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
    flat: F64, width: int, layer: float | F64 | I64, shift: F64, cols: I64, slope: F64 | float
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


@dataclass(frozen=True, eq=False)
class _LinkDemand:
    """One tick's demand on the graph's local links (zeros where the table has none)."""

    rate_h: F64  # (n_slots, n) lambda: hails per hour
    fare: F64  # (n,) F: mean fare
    trip_s: F64  # (n,) trip duration, at least one layer
    cell: I64  # (n,) pickup cell (n_cells for links without demand)
    n_cells: int
    p_in: F64  # (n_cells, n_cells) drop-off cell given pickup cell
    p_out: F64  # (n_cells,) drop-off outside the cells
    local: I64  # local index of each demand link present in the graph
    present: Bool  # which of the demand's links are in the graph


def _link_demand(prep: Prepared, demand: TickDemand) -> _LinkDemand:
    g, n, dt = prep.graph, prep.n, prep.step_s
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
    p_out = drop[:, n_cells] if drop.shape[1] > n_cells else np.zeros(n_cells)
    return _LinkDemand(rate, fare, trip_s, cell, n_cells, drop[:, :n_cells], p_out, li, has)


def _pickup_probability(
    prep: Prepared,
    d: _LinkDemand,
    patience_s: float,
    competing_vacant_per_h: float,
    supply_per_h: npt.NDArray[np.floating[Any]] | None,
) -> tuple[F64, F64]:
    """``W`` per link and ``P`` per slot and link (docs/planner.md):

    ``W = 1 / (nu + 1/theta)``: how long a waiting hail stays available to this cab, with
    ``nu`` the vacant passes of other cabs per hour (``competing_vacant_per_h``, plus the live
    ``supply_per_h`` where given) and ``theta`` the passenger's patience;
    ``P = 1 - exp(-lambda (tau + W) / 3600)``: the chance of a hail on the link while the cab
    passes (``tau``) or arrived within ``W`` before it."""
    nu_h = np.full(prep.n, competing_vacant_per_h, dtype=np.float64)
    if supply_per_h is not None:
        nu_h[d.local] += np.asarray(supply_per_h, dtype=np.float64)[d.present]
    window_s = 1.0 / (nu_h / 3600.0 + 1.0 / patience_s)
    expected = d.rate_h * ((prep.tau_s + window_s) / 3600.0)[None, :]
    return window_s, -np.expm1(-expected)


def _depleted_probability(
    prep: Prepared,
    rate_h: F64,
    window_s: F64,
    pickup_prob: F64,
    layer_slot: I64,
    pass_age_s: F64 | None,
    cols: I64,
) -> F64:
    """``P`` per early layer for the links ``cols``, where recent vacant passes deplete the curb
    (docs/planner.md, "Recent passes"): entering ``e`` at ``t_k = t_0 + k Δ`` when a vacant cab
    last passed it ``a_e`` seconds before ``t_0``, only the hails of the last ``a_e + k Δ``
    seconds can be waiting, so

        P_e(k) = 1 − exp( −λ_e(t_k) (τ_e + min(W_e, a_e + k Δ)) / 3600 )

    which is the fresh ``P`` once ``a_e + k Δ ≥ W_e``: the rows cover the layers before the
    last such link recovers, ``k < max_e (W_e − a_e) / Δ`` (none without a recent pass)."""
    empty = np.zeros((0, cols.shape[0]), dtype=np.float64)
    if pass_age_s is None:
        return empty
    age = np.asarray(pass_age_s, dtype=np.float64)[cols]
    short = np.flatnonzero(np.isfinite(age) & (age < window_s[cols]))
    if short.shape[0] == 0:
        return empty
    dt = prep.step_s
    links = cols[short]
    ages = np.maximum(age[short], 0.0)
    k_dep = int(np.ceil(float(np.max((window_s[links] - ages) / dt))))
    k_dep = min(max(k_dep, 1), int(layer_slot.shape[0]))
    early = np.ascontiguousarray(pickup_prob[layer_slot[:k_dep]][:, cols])
    t = np.arange(k_dep, dtype=np.float64)[:, None] * dt
    window = np.minimum(window_s[links][None, :], ages[None, :] + t)
    rate = rate_h[layer_slot[:k_dep]][:, links]
    early[:, short] = -np.expm1(-rate * ((prep.tau_s[links][None, :] + window) / 3600.0))
    return early


def _layers(
    prep: Prepared,
    demand: TickDemand,
    start_minute_of_week: float,
    n_layers: int,
    monday: date | None,
) -> tuple[I64, I64, Bool, I64]:
    """Per layer ``k`` (time ``start + k * step_s``): its minute of week (as an index into the
    distinct ``minutes``), the links a cruising cab may enter in each of those minutes (cruise
    flags, area, no-entry windows: on the real dates of the week of ``monday`` if given), and
    its demand slot row."""
    K = n_layers
    t_min = start_minute_of_week + np.arange(K, dtype=np.float64) * (prep.step_s / 60.0)
    raw_minute = np.floor(t_min).astype(np.int64)
    minute = raw_minute % MINUTES_PER_WEEK
    minutes, first, layer_minute = np.unique(minute, return_index=True, return_inverse=True)
    # with the date: minutes counted from the start week's Monday (a horizon past Sunday night
    # is in the next week, whose dates and holidays differ)
    when = minutes if monday is None else raw_minute[first]
    allowed = prep.cruisable[None, :] & ~np.atleast_2d(prep.graph.closed_at(when, monday))
    n_slots = int(demand.pickups_per_h.shape[0])
    slot0 = int(demand.slot_minute_of_week[0]) if n_slots else 0
    since = (minute - slot0) % MINUTES_PER_WEEK
    layer_slot = np.minimum(since // SLOT_MINUTES, max(n_slots - 1, 0)).astype(np.int64)
    return minutes, layer_minute, allowed, layer_slot


@dataclass(frozen=True, eq=False)
class _Kernel:
    """Everything the backward pass reads, restricted to the cruisable links ``cz`` (only they
    can be entered, so ``Q`` is computed for them alone)."""

    n: int
    n_cells: int
    n_layers: int
    rows_v: int  # rows of V (layers past the horizon are the terminal 0)
    rows_c: int  # rows of C
    cz: I64
    v_off: I64  # flat offsets and weights of V at layer k + tau / step, per entered link
    v_wpos: F64
    v_wneg: F64
    c_off: I64  # ... and of C at layer k + (tau + trip) / step, per pickup cell
    c_wpos: F64
    c_wneg: F64
    fare: F64
    cost: F64
    prob: F64  # (n_slots, |cz|)
    prob_early: F64  # (k_dep, |cz|): P of the first layers, where recent passes deplete curbs
    penalty: F64  # (minutes, |cz|): 0 where the link may be entered, -inf where not
    layer_slot: I64
    layer_minute: I64
    srcs: I64  # sources with a cruisable successor (out-degree order)
    columns: list[I64]  # per out-degree rank, the successor of each of those sources
    members: I64  # cruisable links with demand, and their cells (the cell means U)
    member_cell: I64
    inv_count: F64
    empty: Bool  # cells without a cruisable member link
    p_in: F64
    p_out: F64
    outside_value_share: float


def _backward_pass(kn: _Kernel) -> tuple[F64, F64, F64, F64, F64]:
    """Backward value iteration over the layers, ``k = K-1 .. 0`` (docs/planner.md):

    ``Q(e, k) = V~ + P(e) (F_e + C~ - V~) - cost_e``, with ``V~ = V~(e, k + tau_e)`` and
    ``C~ = C~(c_e, k + tau_e + T_e)``,
    for each link ``e`` that may be entered at ``k`` (``V~``, ``C~``: linear between layers,
    extrapolated by the network-mean slope for links shorter than one layer);
    ``V(s, k) = max over successors e of s of Q(e, k)``, else the exit value;
    ``U(c, k)`` = mean of ``V(., k)`` over the cell's cruisable links (``u_out``, a share of
    the mean, outside the cells); ``C(c, k) = sum_c' p(c'|c) U(c', k) + p_out(c) u_out``.

    Returns ``(V, C, exit value, slope_v, slope_c)``. Buffers are reused in place: one layer is
    a fixed sequence of numpy calls on preallocated arrays, in a fixed order (bit-identical).

    With numba (the ``jit`` extra) the same arithmetic runs compiled
    (:mod:`agent.planner.kernel_jit`, bit-identical), once its warm-up, started in the
    background by the first pass, has finished."""
    jit = kernel_jit.ready()
    if jit is not None:
        return jit(kn)
    kernel_jit.start_warm_up()
    n, nc1, K = kn.n, kn.n_cells + 1, kn.n_layers
    values = np.zeros((kn.rows_v, n), dtype=np.float64)
    cont = np.zeros((kn.rows_c, nc1), dtype=np.float64)
    vflat = values.reshape(-1)
    cflat = cont.reshape(-1)
    exit_value = np.zeros(K, dtype=np.float64)
    slope_v = np.zeros(K, dtype=np.float64)
    slope_c = np.zeros(K, dtype=np.float64)
    row_mean = np.zeros(kn.rows_v, dtype=np.float64)
    cont_mean = np.zeros(kn.rows_c, dtype=np.float64)
    m = kn.cz.shape[0]
    q_ext = np.full(m + 1, -np.inf, dtype=np.float64)  # last slot: no successor
    q = q_ext[:-1]
    v0, v1, c0, c1 = np.empty(m), np.empty(m), np.empty(m), np.empty(m)
    v_off, v_wpos, v_wneg = kn.v_off, kn.v_wpos, kn.v_wneg
    c_off, c_wpos, c_wneg = kn.c_off, kn.c_wpos, kn.c_wneg
    fare_c, cost_c, prob_c, penalty = kn.fare, kn.cost, kn.prob, kn.penalty
    prob_early = kn.prob_early
    n_early = int(prob_early.shape[0])
    layer_slot, layer_minute, srcs, columns = kn.layer_slot, kn.layer_minute, kn.srcs, kn.columns
    members, member_cell, inv_count = kn.members, kn.member_cell, kn.inv_count
    empty, p_in, p_out, n_cells = kn.empty, kn.p_in, kn.p_out, kn.n_cells
    u_out_next = 0.0
    add_reduce = np.add.reduce
    bincount = np.bincount
    inv_n = 1.0 / n
    inv_nc1 = 1.0 / nc1
    full = ~empty
    any_full = bool(full.any())
    inv_full = 1.0 / max(int(full.sum()), 1)
    for k in range(K - 1, -1, -1):
        # the network-mean value of one layer ahead (for links shorter than a layer)
        sv = row_mean[k + 1] - row_mean[k + 2]
        sc = cont_mean[k + 1] - cont_mean[k + 2]
        slope_v[k] = sv
        slope_c[k] = sc
        vflat[k * n :].take(v_off, out=v0)
        vflat[(k + 1) * n :].take(v_off, out=v1)
        cflat[k * nc1 :].take(c_off, out=c0)
        cflat[(k + 1) * nc1 :].take(c_off, out=c1)
        # V~ = v0 + wpos (v1 - v0) + wneg sv ; likewise C~
        v1 -= v0
        v1 *= v_wpos
        v1 += v0
        v1 += v_wneg * sv
        c1 -= c0
        c1 *= c_wpos
        c1 += c0
        c1 += c_wneg * sc
        # Q = V~ + P (F + C~ - V~) - cost + penalty
        c1 += fare_c
        c1 -= v1
        c1 *= prob_early[k] if k < n_early else prob_c[layer_slot[k]]
        np.add(v1, c1, out=q)
        q -= cost_c
        q += penalty[layer_minute[k]]
        # V(s) = max over successors of Q, one np.maximum per out-degree rank
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
        # U per cell, u_out outside, then C = p_in U + p_out u_out
        u = bincount(member_cell, row[members], n_cells) * inv_count
        u_out = kn.outside_value_share * add_reduce(u[full]) * inv_full if any_full else 0.0
        u[empty] = u_out
        crow = cont[k]
        crow[:n_cells] = p_in @ u
        if u_out:
            crow[:n_cells] += p_out * u_out
        crow[n_cells] = u_out
        cont_mean[k] = add_reduce(crow) * inv_nc1
        u_out_next = u_out
    return values, cont, exit_value, slope_v, slope_c


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
    pass_age_s: F64 | None = None,
) -> ValueTable:
    """Solve the MDP over ``horizon_s`` from ``start_minute_of_week``: the tick's demand on the
    links, the pickup probabilities, the layers' minutes and slots, the cells, then the
    backward pass (:func:`_backward_pass`).

    ``pass_age_s`` (per local link, optional): seconds since a vacant cab last passed each link
    at the start (``inf``: unknown): the curbs it drained hold fewer hails in the first layers
    (:func:`_depleted_probability`)."""
    dt = prep.step_s
    K = max(round(horizon_s / dt), 1)
    d = _link_demand(prep, demand)
    window_s, pickup_prob = _pickup_probability(
        prep, d, patience_s, competing_vacant_per_h, supply_per_h
    )
    cost = cost_per_m * prep.length_m + cost_per_s * prep.tau_s
    minutes, layer_minute, allowed, layer_slot = _layers(
        prep, demand, start_minute_of_week, K, monday
    )

    # the cells' means U[c] are over the cruisable links of cell c
    n_cells, cell = d.n_cells, d.cell
    mi = np.flatnonzero(prep.cruisable & (cell < n_cells))
    counts = np.bincount(cell[mi], minlength=n_cells).astype(np.float64)
    empty = counts == 0
    inv_count = np.where(empty, 0.0, 1.0 / np.maximum(counts, 1.0))

    # V is read tau / step layers ahead, C (tau + trip) / step layers ahead
    step_shift = prep.tau_s / dt
    trip_shift = step_shift + d.trip_s / dt
    cz = np.flatnonzero(prep.cruisable).astype(np.int64)
    v_off, v_wpos, v_wneg = _shift_weights(step_shift[cz], prep.n, cz)
    c_off, c_wpos, c_wneg = _shift_weights(trip_shift[cz], n_cells + 1, cell[cz])
    srcs, columns = _successor_columns(prep, cz)
    kernel = _Kernel(
        n=prep.n,
        n_cells=n_cells,
        n_layers=K,
        rows_v=K + int(np.ceil(step_shift.max(initial=1.0))) + 3,
        rows_c=K + int(np.ceil(trip_shift.max(initial=1.0))) + 3,
        cz=cz,
        v_off=v_off,
        v_wpos=v_wpos,
        v_wneg=v_wneg,
        c_off=c_off,
        c_wpos=c_wpos,
        c_wneg=c_wneg,
        fare=d.fare[cz],
        cost=cost[cz],
        prob=np.ascontiguousarray(pickup_prob[:, cz]),
        prob_early=_depleted_probability(
            prep, d.rate_h, window_s, pickup_prob, layer_slot, pass_age_s, cz
        ),
        penalty=np.where(allowed[:, cz], 0.0, -np.inf),
        layer_slot=layer_slot,
        layer_minute=layer_minute,
        srcs=srcs,
        columns=columns,
        members=mi.astype(np.int64),
        member_cell=cell[mi],
        inv_count=inv_count,
        empty=empty,
        p_in=d.p_in,
        p_out=d.p_out,
        outside_value_share=outside_value_share,
    )
    values, cont, exit_value, slope_v, slope_c = _backward_pass(kernel)
    return ValueTable(
        prep=prep,
        start_minute_of_week=float(start_minute_of_week),
        n_layers=K,
        values=values,
        cont=cont,
        pickup_prob=pickup_prob,
        rate_h=d.rate_h,
        window_s=window_s,
        fare=d.fare,
        cost=cost,
        cell=cell,
        trip_layers=d.trip_s / dt,
        layer_slot=layer_slot,
        layer_minute=layer_minute.astype(np.int64),
        minutes=minutes.astype(np.int64),
        allowed=allowed,
        exit_value=exit_value,
        slope_v=slope_v,
        slope_c=slope_c,
        pass_age_s=None if pass_age_s is None else np.asarray(pass_age_s, dtype=np.float64),
        monday=monday,
    )
