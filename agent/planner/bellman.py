"""One layer of the backward pass (:func:`agent.planner.core._backward_pass`) in named steps,
each with the equation it implements (see :mod:`agent.planner` for the model). The steps work
in place on buffers allocated once per pass (:class:`_Buffers`), in a fixed order, so the
values are bit-identical from run to run and to the compiled kernel
(:mod:`agent.planner._kernel_numba`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from agent.planner.core import _Kernel
    from agent.planner.workspace import Workspace

F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class _Buffers:
    """The backward pass's arrays, allocated once and reused in place by every layer (so one
    layer is a fixed sequence of numpy calls in a fixed order: bit-identical results)."""

    values: F64  # (rows_v, n) V, and vflat: its flat view
    vflat: F64
    cont: F64  # (rows_c, n_cells + 1) C, and cflat
    cflat: F64
    exit_value: F64  # (K,)
    slope_v: F64  # (K,)
    slope_c: F64
    row_mean: F64  # (rows_v,) network mean of V per layer
    cont_mean: F64  # (rows_c,)
    q_ext: F64  # (|cz| + 1,) Q per cruisable link; the last slot (-inf): no successor
    q: F64  # q_ext[:-1]
    v0: F64  # (|cz|,) scratch: V at the layers around k + tau, then V~
    v1: F64
    c0: F64  # ... and C around k + tau + T, then C~ and the pickup term
    c1: F64
    inv_n: float
    inv_nc1: float
    full: Bool  # cells with a cruisable member link
    any_full: bool
    inv_full: float


def _tables(kn: _Kernel, ws: Workspace | None) -> tuple[F64, F64]:
    """``V`` (rows_v, n) and ``C`` (rows_c, n_cells + 1), zero past the horizon (the rows
    before are written by the pass): fresh, or kept in ``ws`` between plans (no page faults;
    :mod:`agent.planner.workspace`)."""
    nc1 = kn.n_cells + 1
    if ws is None:
        return np.zeros((kn.rows_v, kn.n)), np.zeros((kn.rows_c, nc1))
    K = kn.n_layers
    return ws.table("values", kn.rows_v, kn.n, K), ws.table("cont", kn.rows_c, nc1, K)


def _allocate(kn: _Kernel, ws: Workspace | None = None) -> _Buffers:
    n, nc1 = kn.n, kn.n_cells + 1
    values, cont = _tables(kn, ws)
    m = kn.cz.shape[0]
    q_ext = np.full(m + 1, -np.inf, dtype=np.float64)
    full = ~kn.empty
    return _Buffers(
        values=values,
        vflat=values.reshape(-1),
        cont=cont,
        cflat=cont.reshape(-1),
        exit_value=np.zeros(kn.n_layers, dtype=np.float64),
        slope_v=np.zeros(kn.n_layers, dtype=np.float64),
        slope_c=np.zeros(kn.n_layers, dtype=np.float64),
        row_mean=np.zeros(kn.rows_v, dtype=np.float64),
        cont_mean=np.zeros(kn.rows_c, dtype=np.float64),
        q_ext=q_ext,
        q=q_ext[:-1],
        v0=np.empty(m),
        v1=np.empty(m),
        c0=np.empty(m),
        c1=np.empty(m),
        inv_n=1.0 / n,
        inv_nc1=1.0 / nc1,
        full=full,
        any_full=bool(full.any()),
        inv_full=1.0 / max(int(full.sum()), 1),
    )


def _values_ahead(kn: _Kernel, b: _Buffers, k: int) -> None:
    """``V~ = V~(e, k + τ_e/Δ)`` into ``b.v1`` and ``C~ = C~(c_e, k + (τ_e + D_e)/Δ)`` into
    ``b.c1``, for every cruisable link ``e``: linear between the two layers around the shift,

        V~ = v0 + w⁺ (v1 − v0) + w⁻ s_V(k),   s_V(k) = mean V(·, k+1) − mean V(·, k+2)

    (``w⁻ > 0`` only for links shorter than one layer: extrapolated by the network-mean slope
    of one layer); likewise ``C~`` with ``s_C``."""
    n, nc1 = kn.n, kn.n_cells + 1
    sv = b.row_mean[k + 1] - b.row_mean[k + 2]
    sc = b.cont_mean[k + 1] - b.cont_mean[k + 2]
    b.slope_v[k] = sv
    b.slope_c[k] = sc
    v0, v1, c0, c1 = b.v0, b.v1, b.c0, b.c1
    b.vflat[k * n :].take(kn.v_off, out=v0)
    b.vflat[(k + 1) * n :].take(kn.v_off, out=v1)
    b.cflat[k * nc1 :].take(kn.c_off, out=c0)
    b.cflat[(k + 1) * nc1 :].take(kn.c_off, out=c1)
    v1 -= v0
    v1 *= kn.v_wpos
    v1 += v0
    v1 += kn.v_wneg * sv
    c1 -= c0
    c1 *= kn.c_wpos
    c1 += c0
    c1 += kn.c_wneg * sc


def _action_values(kn: _Kernel, b: _Buffers, k: int) -> None:
    """``Q(→e, k) = V~ + P_e(k) (F_e + C~ − V~) − (c_m L_e + c_s τ_e)`` into ``b.q``, plus
    ``−∞`` where ``e`` may not be entered at ``k`` (``e ∉ A(·, k)``). ``P_e(k)`` is the
    depleted probability in the first layers (recent passes), else the slot's."""
    v1, c1, q = b.v1, b.c1, b.q
    c1 += kn.fare
    c1 -= v1
    c1 *= kn.prob_early[k] if k < kn.prob_early.shape[0] else kn.prob[kn.layer_slot[k]]
    np.add(v1, c1, out=q)
    q -= kn.cost
    q += kn.penalty[kn.layer_minute[k]]


def _successor_max(kn: _Kernel, b: _Buffers, k: int, u_out_next: float) -> F64:
    """``V(s, k) = max_{e ∈ A(s, k)} Q(→e, k)``, ``U_out(k+1)`` where ``A(s, k)`` is empty:
    one ``np.maximum`` per out-degree rank over the sources sorted by out-degree. Returns the
    row ``V(·, k)`` and records its network mean and the exit value."""
    q_ext = b.q_ext
    best = q_ext[kn.columns[0]]
    for col in kn.columns[1:]:
        head = best[: col.shape[0]]
        np.maximum(head, q_ext[col], out=head)
    best[best == -np.inf] = u_out_next
    row: F64 = b.values[k]
    row.fill(u_out_next)
    row[kn.srcs] = best
    b.row_mean[k] = np.add.reduce(row) * b.inv_n
    b.exit_value[k] = u_out_next
    return row


def _continuation(kn: _Kernel, b: _Buffers, k: int, row: F64) -> float:
    """The value after a drop-off, from ``V(·, k)``:

        U_c(k)   = mean_{e ∈ c} V(e, k)          (cells without a cruisable link: U_out)
        U_out(k) = outside_value_share · mean_c U_c(k)
        C(c, k)  = Σ_{c'} π(c' | c) U_{c'}(k) + π(out | c) U_out(k),   C(out, k) = U_out(k)

    into ``b.cont[k]``; returns ``U_out(k)``."""
    n_cells = kn.n_cells
    u = np.bincount(kn.member_cell, row[kn.members], n_cells) * kn.inv_count
    u_out = kn.outside_value_share * np.add.reduce(u[b.full]) * b.inv_full if b.any_full else 0.0
    u[kn.empty] = u_out
    crow = b.cont[k]
    if kn.p_top_idx.shape[0]:  # top-k drop-offs, in cell order (as the compiled kernel)
        idx, val = kn.p_top_idx, kn.p_top_val
        acc = val[0] * u[idx[0]]
        for j in range(1, idx.shape[0]):
            acc += val[j] * u[idx[j]]
        crow[:n_cells] = acc
    else:
        crow[:n_cells] = kn.p_in @ u
    if u_out:
        crow[:n_cells] += kn.p_out * u_out
    crow[n_cells] = u_out
    b.cont_mean[k] = np.add.reduce(crow) * b.inv_nc1
    return float(u_out)
