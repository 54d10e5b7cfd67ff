"""The compiled backward pass (numba); imported only by :func:`kernel_jit.warm_up`.

See :mod:`agent.planner.kernel_jit` for why the arithmetic is bit-identical to
``agent.planner.core._backward_pass``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numba
import numpy as np
from numba import types

from agent.planner._kernel_arrays import (
    NO_TRANS,
    Arrays,
    Work,
    gemv_layout,
    numpy_gemv_address,
    pass_inputs,
)
from agent.planner._kernel_arrays import gemv_matches_numpy as _gemv_matches

if TYPE_CHECKING:
    from agent.planner.core import _Kernel
    from agent.planner.workspace import Workspace

njit = numba.njit(cache=True, error_model="numpy")

#: numpy's own ``cblas_dgemv`` (64-bit integers), under a name of ours: the compiled pass calls
#: it directly instead of entering object mode for ``np.matmul`` once a layer (the same
#: function with the arguments numpy passes, so the same bits: :func:`gemv_matches_numpy`).
#: The symbol is resolved by name, so the compiled code stays cacheable.
GEMV_SYMBOL = "nagashi_cblas_dgemv64"
_gemv: Any = types.ExternalFunction(
    GEMV_SYMBOL,
    types.void(
        types.int32,  # order
        types.int32,  # transpose
        types.int64,  # M
        types.int64,  # N
        types.float64,  # alpha
        types.uintp,  # A
        types.int64,  # lda
        types.uintp,  # x
        types.int64,  # incx
        types.float64,  # beta
        types.uintp,  # y
        types.int64,  # incy
    ),
)


def _register_gemv() -> bool:
    """Register numpy's BLAS ``cblas_dgemv`` with 64-bit integers (the function numpy's
    ``matmul`` calls) as :data:`GEMV_SYMBOL`; False when there is none."""
    import llvmlite.binding as llvm

    addr = numpy_gemv_address()
    if addr is None:
        return False
    llvm.add_symbol(GEMV_SYMBOL, addr)
    return True


#: the compiled pass calls BLAS itself (else: object mode for ``np.matmul``); set by
#: :mod:`agent.planner.kernel_jit`'s warm-up once :func:`gemv_matches_numpy` holds
USE_GEMV = False
HAVE_GEMV = _register_gemv()


@njit
def _block(a: Any, lo: int, n: int) -> float:  # pragma: no cover - compiled
    """numpy's pairwise sum of ``a[lo:lo + n]`` for ``n <= 128`` (its leaf)."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    end = n - (n % 8)
    while i < end:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return float(res)


@njit
def pairwise(a: Any, lo: int, n: int) -> float:  # pragma: no cover - compiled
    """``np.add.reduce(a[lo:lo + n])`` bit for bit: above 128 elements numpy sums the two
    halves (the first rounded down to a multiple of 8) and adds them; done here with an
    explicit stack (a cached recursive numba function is not safe)."""
    if n <= 128:
        return _block(a, lo, n)
    s_lo = np.empty(64, dtype=np.int64)
    s_n = np.empty(64, dtype=np.int64)
    s_left = np.empty(64, dtype=np.float64)
    s_has = np.zeros(64, dtype=np.bool_)
    sp = 1
    s_lo[0], s_n[0], s_has[0] = lo, n, False
    result = 0.0
    while sp > 0:
        top = sp - 1
        m = s_n[top]
        if m > 128 and not s_has[top]:
            half = m // 2
            half -= half % 8
            s_lo[sp], s_n[sp], s_has[sp] = s_lo[top], half, False
            sp += 1
            continue
        v = _block(a, s_lo[top], m) if m <= 128 else s_left[top]
        sp -= 1
        # hand v to the parent: its left half (then do the right) or its right (then add)
        while True:
            if sp == 0:
                result = v
                break
            p = sp - 1
            if not s_has[p]:
                s_has[p] = True
                s_left[p] = v
                half = s_n[p] // 2
                half -= half % 8
                s_lo[sp], s_n[sp], s_has[sp] = s_lo[p] + half, s_n[p] - half, False
                sp += 1
                break
            v = s_left[p] + v
            sp -= 1
    return result


@njit
def action_values(  # pragma: no cover - compiled
    k: int, sv: float, sc: float, prob: Any, penalty: Any, a: Arrays, w: Work
) -> None:
    """``Q = V~ + P (F + C~ - V~) - cost + penalty`` into ``w.q_ext`` (``core``'s
    ``_values_ahead`` and ``_action_values``), operation by operation as numpy does them."""
    vflat, cflat, q_ext = w.vflat, w.cflat, w.q_ext
    v_off, v_wpos, v_wneg = a.v_off, a.v_wpos, a.v_wneg
    c_off, c_wpos, c_wneg = a.c_off, a.c_wpos, a.c_wneg
    fare, cost = a.fare, a.cost
    vb0, vb1 = k * a.n, (k + 1) * a.n
    cb0, cb1 = k * a.nc1, (k + 1) * a.nc1
    for i in range(v_off.shape[0]):
        v0 = vflat[vb0 + v_off[i]]
        v1 = vflat[vb1 + v_off[i]]
        c0 = cflat[cb0 + c_off[i]]
        c1 = cflat[cb1 + c_off[i]]
        v1 = v1 - v0
        v1 = v1 * v_wpos[i]
        v1 = v1 + v0
        v1 = v1 + v_wneg[i] * sv
        c1 = c1 - c0
        c1 = c1 * c_wpos[i]
        c1 = c1 + c0
        c1 = c1 + c_wneg[i] * sc
        c1 = c1 + fare[i]
        c1 = c1 - v1
        c1 = c1 * prob[i]
        q = v1 + c1
        q = q - cost[i]
        q_ext[i] = q + penalty[i]


@njit
def successor_max(a: Arrays, w: Work) -> int:  # pragma: no cover - compiled
    """``V(s) = max over successors of Q`` into ``w.best`` (``core._successor_max``): the
    maximum per out-degree rank, as ``np.maximum`` (NaN propagates). Returns the sources'
    count."""
    return rank_max(w.best, w.q_ext, a.col_flat, a.col_start, a.col_len)


@njit
def rank_max(  # pragma: no cover - compiled
    best: Any, q_ext: Any, col_flat: Any, col_start: Any, col_len: Any
) -> int:
    """The maximum of ``q_ext`` over each source's successors, per out-degree rank (the
    columns concatenated in ``col_flat``), into ``best``; the sources' count."""
    n0 = col_len[0]
    for i in range(n0):
        best[i] = q_ext[col_flat[i]]
    for d in range(1, col_len.shape[0]):
        s0 = col_start[d]
        for i in range(col_len[d]):
            x = best[i]
            y = q_ext[col_flat[s0 + i]]
            if not (x >= y or x != x):
                best[i] = y
    return int(n0)


@njit
def cell_values(row: Any, a: Arrays, w: Work) -> float:  # pragma: no cover - compiled
    """``U`` per cell (the mean of its member links' ``V``; empty cells ``u_out``) into
    ``w.u``; returns ``u_out = share * mean of U over the cells with members``
    (``core._continuation``, before the drop-off product)."""
    u, members, member_cell, inv_count = w.u, a.members, a.member_cell, a.inv_count
    n_cells = u.shape[0]
    for c in range(n_cells):
        u[c] = 0.0
    for j in range(members.shape[0]):
        u[member_cell[j]] += row[members[j]]
    for c in range(n_cells):
        u[c] = u[c] * inv_count[c]
    u_out = 0.0
    full_idx, ufull = a.full_idx, w.ufull
    if full_idx.shape[0] > 0:
        for j in range(full_idx.shape[0]):
            ufull[j] = u[full_idx[j]]
        u_out = a.share * pairwise(ufull, 0, full_idx.shape[0]) * a.inv_full
    for c in range(n_cells):
        if a.empty[c]:
            u[c] = u_out
    return u_out


@njit
def layer(  # pragma: no cover - compiled
    k: int, u_out_next: float, prob: Any, penalty: Any, a: Arrays, w: Work
) -> float:
    """One layer ``k`` up to the cells' values: the slopes, ``Q``, ``V(., k)``, ``U``; returns
    ``u_out``."""
    sv = w.row_mean[k + 1] - w.row_mean[k + 2]
    sc = w.cont_mean[k + 1] - w.cont_mean[k + 2]
    w.slope_v[k] = sv
    w.slope_c[k] = sc
    action_values(k, sv, sc, prob, penalty, a, w)
    n0 = successor_max(a, w)
    n, best, srcs = a.n, w.best, a.srcs
    row = w.vflat[k * n : (k + 1) * n]
    for j in range(n):
        row[j] = u_out_next
    for i in range(n0):
        b = best[i]
        row[srcs[i]] = u_out_next if b == -np.inf else b
    w.row_mean[k] = pairwise(row, 0, n) * a.inv_n
    w.exit_value[k] = u_out_next
    return cell_values(row, a, w)


@njit
def top_k_dot(a: Arrays, w: Work) -> None:  # pragma: no cover - compiled
    """``dot = Σ_j top_val[j] U[top_idx[j]]`` per cell, ``j`` in order, as ``bellman``."""
    idx, val, u, dot = a.top_idx, a.top_val, w.u, w.dot
    for c in range(dot.shape[0]):
        res = val[0, c] * u[idx[0, c]]
        for j in range(1, idx.shape[0]):
            res = res + val[j, c] * u[idx[j, c]]
        dot[c] = res


@njit
def finish(k: int, u_out: float, a: Arrays, w: Work) -> None:  # pragma: no cover - compiled
    """``C(c, k) = (p_in @ U)(c) + p_out(c) u_out``, ``C(out, k) = u_out``, and its mean."""
    nc1, dot, p_out = a.nc1, w.dot, a.p_out
    n_cells = nc1 - 1
    crow = w.cflat[k * nc1 : (k + 1) * nc1]
    for c in range(n_cells):
        crow[c] = dot[c]
    if u_out != 0.0 or u_out != u_out:
        for c in range(n_cells):
            crow[c] = crow[c] + p_out[c] * u_out
    crow[n_cells] = u_out
    w.cont_mean[k] = pairwise(crow, 0, nc1) * a.inv_nc1


@njit
def _run(K: int, a: Arrays, w: Work, p_in: Any) -> None:  # pragma: no cover - compiled
    """All layers, ``k = K-1 .. 0``; the drop-off product ``p_in @ u`` is numpy's own
    (``objmode``: the same BLAS call as the numpy path, so the same bits)."""
    u_out_next = 0.0
    prob_early, prob, layer_slot = a.prob_early, a.prob, a.layer_slot
    penalty, layer_minute = a.penalty, a.layer_minute
    n_early = prob_early.shape[0]
    u, dot = w.u, w.dot
    for k in range(K - 1, -1, -1):
        # the first layers' P: recent passes deplete curbs (terms._depleted_probability)
        prob_k = prob_early[k] if k < n_early else prob[layer_slot[k]]
        u_out = layer(k, u_out_next, prob_k, penalty[layer_minute[k]], a, w)
        if a.top_idx.shape[0] > 0:
            top_k_dot(a, w)
        else:
            with numba.objmode():
                np.matmul(p_in, u, out=dot)
        finish(k, u_out, a, w)
        u_out_next = u_out


@njit
def _run_gemv(  # pragma: no cover - compiled
    K: int, a: Arrays, w: Work, p_in: Any, order: int, lda: int
) -> None:
    """:func:`_run` with the drop-off product ``p_in @ u`` by numpy's ``cblas_dgemv`` called
    directly (``order``/``lda``: :func:`gemv_layout`), no object mode."""
    u_out_next = 0.0
    prob_early, prob, layer_slot = a.prob_early, a.prob, a.layer_slot
    penalty, layer_minute = a.penalty, a.layer_minute
    n_early = prob_early.shape[0]
    u, dot = w.u, w.dot
    m = u.shape[0]
    for k in range(K - 1, -1, -1):
        prob_k = prob_early[k] if k < n_early else prob[layer_slot[k]]
        u_out = layer(k, u_out_next, prob_k, penalty[layer_minute[k]], a, w)
        if a.top_idx.shape[0] > 0:
            top_k_dot(a, w)
        elif m > 0:
            _gemv(
                order, NO_TRANS, m, m, 1.0, p_in.ctypes.data, lda, u.ctypes.data, 1, 0.0,
                dot.ctypes.data, 1,
            )  # fmt: skip
        finish(k, u_out, a, w)
        u_out_next = u_out


@njit
def _gemv_once(p_in: Any, u: Any, out: Any, order: int, lda: int) -> None:  # pragma: no cover
    m = u.shape[0]
    _gemv(order, NO_TRANS, m, m, 1.0, p_in.ctypes.data, lda, u.ctypes.data, 1, 0.0,
          out.ctypes.data, 1)  # fmt: skip


def gemv_matches_numpy(seed: int = 20) -> bool:
    """The directly called ``cblas_dgemv`` gives ``np.matmul``'s bits
    (:func:`agent.planner._kernel_arrays.gemv_matches_numpy`)."""
    return HAVE_GEMV and _gemv_matches(_gemv_once, seed)


def backward_pass(kn: _Kernel, ws: Workspace | None = None) -> tuple[Any, Any, Any, Any, Any]:
    """``core._backward_pass`` compiled: the same results, bit for bit. Arrays are passed
    contiguous and 64-bit (one compiled signature; ``p_in`` as it is, for numpy's own product:
    two, C-contiguous or not). ``V`` and ``C`` are kept in ``ws`` when given
    (``bellman._tables``)."""
    values, cont, a, w = pass_inputs(kn, ws)
    lay = gemv_layout(kn.p_in) if USE_GEMV else None
    if lay is None:
        _run(kn.n_layers, a, w, kn.p_in)
    else:
        _run_gemv(kn.n_layers, a, w, kn.p_in, *lay)
    return values, cont, w.exit_value, w.slope_v, w.slope_c
