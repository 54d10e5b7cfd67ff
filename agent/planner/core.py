"""Backward value iteration of the cruising MDP (see :mod:`agent.planner` for the equations).

Everything here is vectorised over links: the only Python loop of the hot path runs over the
time layers. Arrays are float64 and every reduction has a fixed order, so the same inputs give
bit-identical values.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from agent.planner import kernel_jit
from agent.planner.bellman import (
    _action_values,
    _allocate,
    _continuation,
    _successor_max,
    _values_ahead,
)
from agent.planner.terms import (
    _depleted_probability,
    _layers,
    _link_demand,
    _LinkDemand,
    _pickup_probability,
    _top_k_dropoffs,
)
from models.demand import TickDemand
from tiles import tags as T
from tiles.conditional import MINUTES_PER_WEEK
from tiles.graph import Graph

if TYPE_CHECKING:
    from agent.planner.workspace import Workspace

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

    @functools.cached_property
    def statics(self) -> _Statics:
        """What the kernel needs of the graph alone, computed once per prepared graph (a city
        kept from tick to tick, the simulator's table graph; never written)."""
        return _statics(self)


@dataclass(frozen=True, eq=False)
class _Statics:
    """The kernel's per-graph arrays (:func:`_kernel`), the same every tick on one graph."""

    cz: I64  # the cruisable links: only they can be entered
    step_shift: F64  # tau / step per link
    v_off: I64  # flat offsets and weights of V at layer k + tau / step, per cruisable link
    v_wpos: F64
    v_wneg: F64
    srcs: I64
    columns: list[I64]


def _statics(prep: Prepared) -> _Statics:
    cz = np.flatnonzero(prep.cruisable).astype(np.int64)
    step_shift = prep.tau_s / prep.step_s
    v_off, v_wpos, v_wneg = _shift_weights(step_shift[cz], prep.n, cz)
    srcs, columns = _successor_columns(prep, cz)
    # shared by every kernel on the graph and never written (left writeable: the compiled
    # pass has one signature, for writeable arrays)
    return _Statics(cz, step_shift, v_off, v_wpos, v_wneg, srcs, columns)


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
    arc_src, arc_dst = _sorted_arcs(graph)
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


def _own_sorted_arcs(graph: Graph) -> tuple[I64, I64]:
    """The graph's legal turns (local from, to) sorted by (from, to)."""
    src, dst = graph.turn_pairs
    order = np.lexsort((dst, src))
    return src[order].astype(np.int64), dst[order].astype(np.int64)


def _sorted_arcs(graph: Graph) -> tuple[I64, I64]:
    """:func:`_own_sorted_arcs`; for a subset of a graph (a tick's radius graph) filtered from
    the parent's, sorted once per parent (:data:`agent.planner.workspace.PER_GRAPH`): a subset
    keeps its parent's order of links, so the kept turns stay sorted and are the same pairs
    (the turns between two kept links) in the same order."""
    if graph.subset_of is None:
        return _own_sorted_arcs(graph)
    from agent.planner.workspace import PER_GRAPH

    parent, idx = graph.subset_of
    if idx.shape[0] != graph.n or (idx.shape[0] > 1 and not bool(np.all(idx[1:] > idx[:-1]))):
        return _own_sorted_arcs(graph)
    p_src, p_dst = PER_GRAPH.get(parent, "sorted_arcs", _own_sorted_arcs)
    pos = np.full(parent.n, -1, dtype=np.int64)
    pos[idx] = np.arange(idx.shape[0], dtype=np.int64)
    src, dst = pos[p_src], pos[p_dst]
    keep = (src >= 0) & (dst >= 0)
    return src[keep], dst[keep]


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
        # consecutive minutes but where the week wraps: the offset first, a search if it misses
        count = self.minutes.shape[0]
        i = m - int(self.minutes[0]) if count else -1
        if not (0 <= i < count and self.minutes[i] == m):
            i = int(np.searchsorted(self.minutes, m))
        if i < count and self.minutes[i] == m:
            return np.asarray(self.allowed[i])
        closed = self.prep.graph.closed_at(m if self.monday is None else raw, self.monday)
        return np.asarray(self.prep.cruisable & ~closed)


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
    """Sources with a cruisable successor, sorted by out-degree (descending; each degree's in
    link order, as a stable argsort of ``-deg``), and per column ``d`` the position in ``cz``
    of each source's ``d``-th successor (a prefix of sources: those of degree above ``d``)."""
    n = prep.n
    pos = np.full(n, -1, dtype=np.int64)
    pos[cz] = np.arange(cz.shape[0], dtype=np.int64)
    at = pos[prep.arc_dst]
    keep = at >= 0
    src = prep.arc_src[keep]
    dst = at[keep]
    deg = np.bincount(src, minlength=n)
    top = int(deg.max(initial=0))
    by_degree = [np.flatnonzero(deg == d) for d in range(top, 0, -1)]
    order = np.concatenate(by_degree) if by_degree else np.zeros(0, dtype=np.int64)
    first = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(deg, out=first[1:])
    start = first[order]
    columns: list[I64] = []
    count = order.shape[0]
    for d in range(top):
        if d:  # the sources of degree d leave the prefix
            count -= by_degree[top - d].shape[0]
        columns.append(dst[start[:count] + d])
    if not columns:
        columns.append(np.zeros(0, dtype=np.int64))
    return order.astype(np.int64), columns


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
    #: (rows, |cz|): 0 where the link may be entered, -inf where not; one row per run of
    #: minutes with the same links allowed (:func:`_penalty`)
    penalty: F64
    layer_slot: I64
    layer_minute: I64  # (n_layers,) the penalty row of each layer
    srcs: I64  # sources with a cruisable successor (out-degree order)
    columns: list[I64]  # per out-degree rank, the successor of each of those sources
    members: I64  # cruisable links with demand, and their cells (the cell means U)
    member_cell: I64
    inv_count: F64
    empty: Bool  # cells without a cruisable member link
    p_in: F64
    p_out: F64
    outside_value_share: float
    #: the drop-off product restricted to the top-k cells (``terms._top_k_dropoffs``, (k,
    #: n_cells)); empty: the exact ``p_in @ U``
    p_top_idx: I64
    p_top_val: F64


def _backward_pass(kn: _Kernel, ws: Workspace | None = None) -> tuple[F64, F64, F64, F64, F64]:
    """Backward value iteration over the layers, ``k = K-1 .. 0`` (docs/planner.md), each layer
    in four steps: the values ahead (:func:`_values_ahead`: ``V~``, ``C~``), the action values
    (:func:`_action_values`: ``Q``), the successor maximum (:func:`_successor_max`: ``V``) and
    the continuation after a drop-off (:func:`_continuation`: ``U``, ``C``); ``V(·, k) = 0``
    for ``k ≥ K``.

    Returns ``(V, C, exit value, slope_v, slope_c)``. Buffers are reused in place
    (:class:`_Buffers`): one layer is a fixed sequence of numpy calls on preallocated arrays,
    in a fixed order (bit-identical). ``V`` and ``C`` are kept in ``ws`` between plans when
    given (:mod:`agent.planner.workspace`: the returned arrays are then the workspace's).

    Where the install built it, the same arithmetic runs in C (:mod:`agent.planner.kernel_c`,
    bit-identical, no warm-up); else with numba (the ``jit`` extra: :mod:`agent.planner.kernel_jit`,
    bit-identical), once its warm-up, started in the background by the first pass, has
    finished; else on numpy (:func:`_numpy_backward_pass`)."""
    jit = kernel_jit.ready()
    if jit is not None:
        return jit(kn, ws)
    kernel_jit.start_warm_up()
    return _numpy_backward_pass(kn, ws)


def _numpy_backward_pass(
    kn: _Kernel, ws: Workspace | None = None
) -> tuple[F64, F64, F64, F64, F64]:
    """:func:`_backward_pass` on numpy (the reference the compiled passes give the bits of)."""
    b = _allocate(kn, ws)
    u_out_next = 0.0
    for k in range(kn.n_layers - 1, -1, -1):
        _values_ahead(kn, b, k)
        _action_values(kn, b, k)
        row = _successor_max(kn, b, k, u_out_next)
        u_out_next = _continuation(kn, b, k, row)
    return b.values, b.cont, b.exit_value, b.slope_v, b.slope_c


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
    dropoff_top_k: int = 0,
    workspace: Workspace | None = None,
) -> ValueTable:
    """Solve the MDP over ``horizon_s`` from ``start_minute_of_week``: the tick's demand on the
    links (``λ``, ``F``, ``D``, ``π``), the pickup probabilities (``W``, ``P``), the driving
    cost, the layers' minutes and slots, the cells, then the backward pass
    (:func:`_backward_pass`) on the kernel of those terms (:func:`_kernel`).

    ``pass_age_s`` (per local link, optional): seconds since a vacant cab last passed each link
    at the start (``inf``: unknown): the curbs it drained hold fewer hails in the first layers
    (:func:`_depleted_probability`). With ``workspace`` the table's ``V`` and ``C`` are its
    buffers: valid until the workspace's next loan (:mod:`agent.planner.workspace`)."""
    dt = prep.step_s
    K = max(round(horizon_s / dt), 1)
    d = _link_demand(prep, demand)
    # W = 1 / (ν/3600 + 1/θ),  P = 1 − exp(−λ (τ + W) / 3600)
    window_s, pickup_prob = _pickup_probability(
        prep, d, patience_s, competing_vacant_per_h, supply_per_h
    )
    # the driving cost of a link: c_m L + c_s τ
    cost = cost_per_m * prep.length_m + cost_per_s * prep.tau_s
    minutes, layer_minute, allowed, layer_slot = _layers(
        prep, demand, start_minute_of_week, K, monday
    )
    cz = prep.statics.cz  # only they can be entered
    prob_cz = np.ascontiguousarray(pickup_prob[:, cz])  # P per slot of the enterable links
    early = _depleted_probability(prep, d.rate_h, window_s, prob_cz, layer_slot, pass_age_s, cz)
    kernel = _kernel(
        prep,
        d,
        cz,
        K,
        cost,
        prob_cz,
        allowed,
        layer_minute,
        layer_slot,
        early,
        outside_value_share,
        dropoff_top_k,
    )
    values, cont, exit_value, slope_v, slope_c = _backward_pass(kernel, workspace)
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
        cell=d.cell,
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


def _cell_members(prep: Prepared, d: _LinkDemand) -> tuple[I64, F64, Bool]:
    """The links whose values make up ``U_c = mean_{e ∈ c} V(e, ·)``: the cruisable links with a
    pickup cell, ``1 / |c|`` per cell (0 for a cell without one) and those empty cells."""
    mi = np.flatnonzero(prep.cruisable & (d.cell < d.n_cells))
    counts = np.bincount(d.cell[mi], minlength=d.n_cells).astype(np.float64)
    empty = counts == 0
    inv_count = np.where(empty, 0.0, 1.0 / np.maximum(counts, 1.0))
    return mi.astype(np.int64), inv_count, empty


def _penalty(allowed: Bool, cz: I64, layer_minute: I64) -> tuple[F64, I64]:
    """The penalty rows ``0`` / ``−∞`` of the links ``cz`` (row-major like every other kernel
    array: ``allowed[:, cz]`` alone is column-major, the compiled pass copied it and numpy
    added strided rows) and each layer's row. No-entry windows open and close at a few
    minutes of a horizon, so consecutive minutes with the same links allowed share one row:
    the same values per layer, built from a few rows instead of one per minute."""
    m = allowed.shape[0]
    if m > 1:
        change = np.any(allowed[1:] != allowed[:-1], axis=1)
        first = np.flatnonzero(np.concatenate(([True], change)))
        run = np.cumsum(np.concatenate(([0], change.astype(np.int64))))
    else:
        first = np.zeros(m, dtype=np.int64)
        run = np.zeros(m, dtype=np.int64)
    rows = np.ascontiguousarray(allowed[first][:, cz])
    return np.where(rows, 0.0, -np.inf), np.asarray(run[layer_minute], dtype=np.int64)


def _kernel(
    prep: Prepared,
    d: _LinkDemand,
    cz: I64,
    K: int,
    cost: F64,
    prob_cz: F64,
    allowed: Bool,
    layer_minute: I64,
    layer_slot: I64,
    prob_early: F64,
    outside_value_share: float,
    dropoff_top_k: int,
) -> _Kernel:
    """The backward pass's arrays, restricted to the cruisable links ``cz``: where ``V`` is read
    ``τ/Δ`` layers ahead and ``C`` ``(τ + D)/Δ`` layers ahead (flat offsets and weights), the
    successor columns, the penalty ``−∞`` outside ``A(·, k)``, the cell members."""
    n_cells, cell = d.n_cells, d.cell
    members, inv_count, empty = _cell_members(prep, d)
    st = prep.statics
    if st.cz is cz:  # per graph: computed once (Prepared.statics)
        step_shift, v_off, v_wpos, v_wneg = st.step_shift, st.v_off, st.v_wpos, st.v_wneg
        srcs, columns = st.srcs, st.columns
    else:
        step_shift = prep.tau_s / prep.step_s
        v_off, v_wpos, v_wneg = _shift_weights(step_shift[cz], prep.n, cz)
        srcs, columns = _successor_columns(prep, cz)
    trip_shift = step_shift + d.trip_s / prep.step_s
    c_off, c_wpos, c_wneg = _shift_weights(trip_shift[cz], n_cells + 1, cell[cz])
    top_idx, top_val = _top_k_dropoffs(d.p_in, dropoff_top_k)
    penalty, penalty_row = _penalty(allowed, cz, layer_minute)
    return _Kernel(
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
        prob=prob_cz,
        prob_early=prob_early,
        penalty=penalty,
        layer_slot=layer_slot,
        layer_minute=penalty_row,
        srcs=srcs,
        columns=columns,
        members=members,
        member_cell=cell[members],
        inv_count=inv_count,
        empty=empty,
        p_in=d.p_in,
        p_out=d.p_out,
        outside_value_share=outside_value_share,
        p_top_idx=top_idx,
        p_top_val=top_val,
    )
