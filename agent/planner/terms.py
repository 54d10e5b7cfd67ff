"""The per-tick terms of the Bellman equation (see :mod:`agent.planner`): the tick's demand on
the graph's links (``λ``, ``F``, ``D``, ``π``), the pickup probabilities ``P`` (fresh, and
depleted by recent passes) and, per time layer, its minute, the links that may be entered then
and its demand slot. :mod:`agent.planner.core` assembles them into the backward pass's kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from models.demand import SLOT_MINUTES, TickDemand
from tiles.conditional import MINUTES_PER_WEEK

if TYPE_CHECKING:
    from agent.planner.core import Prepared

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]


def _top_k_dropoffs(p_in: F64, k: int) -> tuple[I64, F64]:
    """The ``k`` most likely drop-off cells of each pickup cell (ties: the lower cell), as
    ``(k, n_cells)`` arrays of cells and probabilities, the kept ones scaled to the row's mass:

        π_k(c' | c) = π(c' | c) · Σ_{c''} π(c'' | c) / Σ_{c'' ∈ top_k(c)} π(c'' | c)

    so ``C(c, k) ≈ Σ_{j<k} π_k(c_j | c) U_{c_j}`` costs ``k`` products a cell, not ``n_cells``.
    ``k = 0``: the exact product (empty arrays)."""
    n = int(p_in.shape[0])
    if k <= 0 or n == 0:
        return np.zeros((0, 0), dtype=np.int64), np.zeros((0, 0), dtype=np.float64)
    k = min(k, n)
    idx = np.sort(np.argsort(-p_in, axis=1, kind="stable")[:, :k], axis=1)
    val = np.take_along_axis(p_in, idx, axis=1)
    kept = val.sum(axis=1)
    scale = np.where(kept > 0, p_in.sum(axis=1) / np.where(kept > 0, kept, 1.0), 0.0)
    return (
        np.ascontiguousarray(idx.T, dtype=np.int64),
        np.ascontiguousarray((val * scale[:, None]).T, dtype=np.float64),
    )


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
    #: False under dispatch (agent.planner.dispatch.AssignedDemand): no request waits at the
    #: curb for a passing cab, ``rate_h`` is already the rate of being assigned one
    curb_wait: bool = True


def _link_demand(prep: Prepared, demand: TickDemand) -> _LinkDemand:
    g, n, dt = prep.graph, prep.n, prep.step_s
    # a demand cut for this graph's own links in its order (what plan_from_fix cuts) is copied;
    # any other is scattered onto the graph's links through Graph.local
    aligned = demand.edge_id.shape == g.edge_id.shape and bool(
        np.array_equal(demand.edge_id, g.edge_id)
    )
    if aligned:
        li, has = np.arange(n, dtype=np.int64), np.ones(n, dtype=bool)
    else:
        loc = g.local(demand.edge_id)
        has = loc >= 0
        li = loc[has].astype(np.int64)

    def per_link(values: npt.ArrayLike, fill: float, dtype: type[np.generic]) -> npt.NDArray[Any]:
        v = np.asarray(values, dtype=dtype)
        if aligned:
            return np.array(v, dtype=dtype, order="C")
        out = np.full((*v.shape[:-1], n), fill, dtype=dtype)
        out[..., li] = v[..., has]
        return out

    rate = per_link(demand.pickups_per_h, 0.0, np.float64)
    fare = per_link(demand.fare_mean, 0.0, np.float64)
    trip_s = np.maximum(per_link(demand.trip_duration_s, dt, np.float64), dt)
    n_cells = int(demand.dropoff.shape[0])
    cell = per_link(demand.cell, n_cells, np.int64)
    drop = np.asarray(demand.dropoff, dtype=np.float64)
    p_out = drop[:, n_cells] if drop.shape[1] > n_cells else np.zeros(n_cells)
    curb = bool(getattr(demand, "curb_wait", True))
    return _LinkDemand(rate, fare, trip_s, cell, n_cells, drop[:, :n_cells], p_out, li, has, curb)


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
    passes (``tau``) or arrived within ``W`` before it.

    Without a curb wait (dispatch, :mod:`agent.planner.dispatch`, whose rates already count
    the competing cabs): ``W = 0``, ``P = 1 - exp(-lambda tau / 3600)``."""
    if not d.curb_wait:
        window_s = np.zeros(prep.n, dtype=np.float64)
        return window_s, -np.expm1(-d.rate_h * (prep.tau_s / 3600.0)[None, :])
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
    prob_cols: F64,
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
    last such link recovers, ``k < max_e (W_e − a_e) / Δ`` (none without a recent pass).
    ``prob_cols``: the fresh ``P`` per slot of the links ``cols`` (``(n_slots, |cols|)``)."""
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
    early = prob_cols[layer_slot[:k_dep]]  # a new (k_dep, |cols|) array, row-major
    t = np.arange(k_dep, dtype=np.float64)[:, None] * dt
    window = np.minimum(window_s[links][None, :], ages[None, :] + t)
    rate = rate_h[layer_slot[:k_dep, None], links[None, :]]  # the rows of `links` only
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
