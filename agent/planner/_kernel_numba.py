"""The compiled backward pass (numba); imported only by :func:`kernel_jit.warm_up`.

See :mod:`agent.planner.kernel_jit` for why the arithmetic is bit-identical to
``agent.planner.core._backward_pass``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numba
import numpy as np
from numba import types

if TYPE_CHECKING:
    from agent.planner.core import _Kernel
    from agent.planner.workspace import Workspace

njit = numba.njit(cache=True, error_model="numpy")

#: numpy's own ``cblas_dgemv`` (64-bit integers), under a name of ours: the compiled pass calls
#: it directly instead of entering object mode for ``np.matmul`` once a layer (the same
#: function with the arguments numpy passes, so the same bits: :func:`gemv_matches_numpy`).
#: The symbol is resolved by name, so the compiled code stays cacheable.
GEMV_SYMBOL = "nagashi_cblas_dgemv64"
ROW_MAJOR, COL_MAJOR, NO_TRANS = 101, 102, 111
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
    """Find numpy's BLAS ``cblas_dgemv`` with 64-bit integers (the library numpy's
    ``matmul`` calls) and register it as :data:`GEMV_SYMBOL`; False when there is none."""
    import ctypes
    import importlib

    import llvmlite.binding as llvm

    try:  # the BLAS library numpy links is among its extension module's dependencies
        lib = ctypes.CDLL(importlib.import_module("numpy._core._multiarray_umath").__file__)
    except (ImportError, OSError):
        return False
    for name in ("scipy_cblas_dgemv64_", "cblas_dgemv64_"):
        fn = getattr(lib, name, None)
        if fn is not None:
            addr = ctypes.cast(fn, ctypes.c_void_p).value
            if addr:
                llvm.add_symbol(GEMV_SYMBOL, addr)
                return True
    return False


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


class Arrays(NamedTuple):
    """The kernel's read-only inputs (``core._Kernel``, contiguous and 64-bit), for the cruisable
    links ``cz`` unless said otherwise; one numba tuple type, so the helpers take few
    arguments."""

    v_off: Any  # flat offsets and weights of V at k + tau / step
    v_wpos: Any
    v_wneg: Any
    c_off: Any  # ... of C at k + (tau + trip) / step
    c_wpos: Any
    c_wneg: Any
    fare: Any
    cost: Any
    prob: Any  # (n_slots, |cz|)
    prob_early: Any  # (k_dep, |cz|)
    penalty: Any  # (minutes, |cz|)
    layer_slot: Any
    layer_minute: Any
    srcs: Any  # sources with a cruisable successor, out-degree order
    col_flat: Any  # the successor columns, concatenated
    col_start: Any
    col_len: Any
    members: Any  # cruisable links with demand and their cells
    member_cell: Any
    inv_count: Any
    empty: Any
    full_idx: Any  # cells with a member link
    p_out: Any
    top_idx: Any  # (k, n_cells) top-k drop-off cells and probabilities; (0, 0): exact
    top_val: Any
    n: int
    nc1: int
    share: float  # outside_value_share
    inv_n: float
    inv_nc1: float
    inv_full: float


class Work(NamedTuple):
    """The outputs and scratch buffers, allocated once per pass and written in place."""

    vflat: Any  # V, flat (rows_v * n)
    cflat: Any  # C, flat (rows_c * nc1)
    row_mean: Any
    cont_mean: Any
    slope_v: Any
    slope_c: Any
    exit_value: Any
    q_ext: Any  # Q per cruisable link, the last slot -inf (no successor)
    best: Any  # the successor maximum per source
    u: Any  # U per cell
    ufull: Any
    dot: Any  # p_in @ u


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


def gemv_layout(p_in: Any) -> tuple[int, int] | None:
    """``(order, lda)`` of the square float64 matrix ``p_in`` for ``cblas_dgemv`` (rows or
    columns contiguous; no cells: any, :func:`_run_gemv` makes no call), or None (then
    :func:`_run`'s object mode, as numpy would not call BLAS either)."""
    m = int(p_in.shape[0])
    if p_in.dtype != np.float64 or p_in.ndim != 2 or p_in.shape[1] != m or m == 0:
        return (ROW_MAJOR, 1) if p_in.shape == (0, 0) and p_in.dtype == np.float64 else None
    s0, s1 = int(p_in.strides[0]), int(p_in.strides[1])
    if s1 == 8 and s0 % 8 == 0 and s0 >= 8 * m:
        return ROW_MAJOR, s0 // 8
    if s0 == 8 and s1 % 8 == 0 and s1 >= 8 * m:
        return COL_MAJOR, s1 // 8
    return None


@njit
def _gemv_once(p_in: Any, u: Any, out: Any, order: int, lda: int) -> None:  # pragma: no cover
    m = u.shape[0]
    _gemv(order, NO_TRANS, m, m, 1.0, p_in.ctypes.data, lda, u.ctypes.data, 1, 0.0,
          out.ctypes.data, 1)  # fmt: skip


def gemv_matches_numpy(seed: int = 20) -> bool:
    """The directly called ``cblas_dgemv`` gives ``np.matmul``'s bits on random drop-off
    matrices of several sizes, rows contiguous, a column slice of a wider matrix (as
    ``TickDemand.dropoff[:, :n_cells]``) and columns contiguous."""
    if not HAVE_GEMV:
        return False
    rng = np.random.default_rng(seed)
    for m in (1, 2, 7, 48, 131, 432):
        wide = rng.random((m, m + 1)) * rng.choice([1e-3, 1.0])
        wide /= wide.sum(axis=1, keepdims=True)
        u = rng.normal(size=m) * 40.0
        for p_in in (
            np.ascontiguousarray(wide[:, :m]),
            wide[:, :m],
            np.asfortranarray(wide[:, :m]),
        ):
            lay = gemv_layout(p_in)
            if lay is None:
                return False
            out = np.zeros(m)
            _gemv_once(p_in, u, out, *lay)
            if out.tobytes() != np.matmul(p_in, u).tobytes():
                return False
    return True


def f64(a: Any) -> Any:
    return np.ascontiguousarray(a, dtype=np.float64)


def i64(a: Any) -> Any:
    return np.ascontiguousarray(a, dtype=np.int64)


def columns_flat(kn: _Kernel) -> tuple[Any, Any, Any]:
    """The successor columns of ``kn`` concatenated, with each column's start and length."""
    lens = np.array([c.shape[0] for c in kn.columns], dtype=np.int64)
    col_start = np.zeros(lens.shape[0], dtype=np.int64)
    np.cumsum(lens[:-1], out=col_start[1:])
    return np.concatenate(kn.columns).astype(np.int64), col_start, lens


def _arrays(kn: _Kernel) -> Arrays:
    col_flat, col_start, lens = columns_flat(kn)
    full = ~kn.empty
    return Arrays(
        v_off=i64(kn.v_off),
        v_wpos=f64(kn.v_wpos),
        v_wneg=f64(kn.v_wneg),
        c_off=i64(kn.c_off),
        c_wpos=f64(kn.c_wpos),
        c_wneg=f64(kn.c_wneg),
        fare=f64(kn.fare),
        cost=f64(kn.cost),
        prob=f64(kn.prob),
        prob_early=f64(kn.prob_early),
        penalty=f64(kn.penalty),
        layer_slot=i64(kn.layer_slot),
        layer_minute=i64(kn.layer_minute),
        srcs=i64(kn.srcs),
        col_flat=col_flat,
        col_start=col_start,
        col_len=lens,
        members=i64(kn.members),
        member_cell=i64(kn.member_cell),
        inv_count=f64(kn.inv_count),
        empty=np.ascontiguousarray(kn.empty, dtype=np.bool_),
        full_idx=np.flatnonzero(full).astype(np.int64),
        p_out=f64(kn.p_out),
        top_idx=np.ascontiguousarray(kn.p_top_idx, dtype=np.int64).reshape(
            kn.p_top_idx.shape[0], kn.n_cells
        ),
        top_val=np.ascontiguousarray(kn.p_top_val, dtype=np.float64).reshape(
            kn.p_top_idx.shape[0], kn.n_cells
        ),
        n=int(kn.n),
        nc1=int(kn.n_cells + 1),
        share=float(kn.outside_value_share),
        inv_n=1.0 / kn.n,
        inv_nc1=1.0 / (kn.n_cells + 1),
        inv_full=1.0 / max(int(full.sum()), 1),
    )


def backward_pass(kn: _Kernel, ws: Workspace | None = None) -> tuple[Any, Any, Any, Any, Any]:
    """``core._backward_pass`` compiled: the same results, bit for bit. Arrays are passed
    contiguous and 64-bit (one compiled signature; ``p_in`` as it is, for numpy's own product:
    two, C-contiguous or not). ``V`` and ``C`` are kept in ``ws`` when given
    (``bellman._tables``)."""
    from agent.planner.bellman import _tables

    K = kn.n_layers
    values, cont = _tables(kn, ws)
    a = _arrays(kn)
    w = Work(
        vflat=values.reshape(-1),
        cflat=cont.reshape(-1),
        row_mean=np.zeros(kn.rows_v, dtype=np.float64),
        cont_mean=np.zeros(kn.rows_c, dtype=np.float64),
        slope_v=np.zeros(K, dtype=np.float64),
        slope_c=np.zeros(K, dtype=np.float64),
        exit_value=np.zeros(K, dtype=np.float64),
        q_ext=np.full(kn.cz.shape[0] + 1, -np.inf, dtype=np.float64),
        best=np.empty(max(int(a.col_len[0]), 1), dtype=np.float64),
        u=np.zeros(kn.n_cells, dtype=np.float64),
        ufull=np.zeros(max(a.full_idx.shape[0], 1), dtype=np.float64),
        dot=np.zeros(kn.n_cells, dtype=np.float64),
    )
    lay = gemv_layout(kn.p_in) if USE_GEMV else None
    if lay is None:
        _run(K, a, w, kn.p_in)
    else:
        _run_gemv(K, a, w, kn.p_in, *lay)
    return values, cont, w.exit_value, w.slope_v, w.slope_c
