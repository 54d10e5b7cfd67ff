"""The compiled backward pass (numba); imported only by :func:`kernel_jit.warm_up`.

See :mod:`agent.planner.kernel_jit` for why the arithmetic is bit-identical to
``agent.planner.core._backward_pass``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numba
import numpy as np

if TYPE_CHECKING:
    from agent.planner.core import _Kernel

njit = numba.njit(cache=True, error_model="numpy")


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
def layer(  # pragma: no cover - compiled
    k: int,
    u_out_next: float,
    vflat: Any,
    cflat: Any,
    n: int,
    nc1: int,
    row_mean: Any,
    cont_mean: Any,
    slope_v: Any,
    slope_c: Any,
    exit_value: Any,
    v_off: Any,
    v_wpos: Any,
    v_wneg: Any,
    c_off: Any,
    c_wpos: Any,
    c_wneg: Any,
    fare: Any,
    cost: Any,
    prob: Any,
    penalty: Any,
    q_ext: Any,
    srcs: Any,
    col_flat: Any,
    col_start: Any,
    col_len: Any,
    best: Any,
    members: Any,
    member_cell: Any,
    inv_count: Any,
    empty: Any,
    full_idx: Any,
    share: float,
    inv_n: float,
    inv_full: float,
    u: Any,
    ufull: Any,
) -> float:
    sv = row_mean[k + 1] - row_mean[k + 2]
    sc = cont_mean[k + 1] - cont_mean[k + 2]
    slope_v[k] = sv
    slope_c[k] = sc
    vb0, vb1 = k * n, (k + 1) * n
    cb0, cb1 = k * nc1, (k + 1) * nc1
    m = v_off.shape[0]
    for i in range(m):
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
    n0 = col_len[0]
    for i in range(n0):
        best[i] = q_ext[col_flat[i]]
    for d in range(1, col_len.shape[0]):
        s0 = col_start[d]
        for i in range(col_len[d]):
            a = best[i]
            b = q_ext[col_flat[s0 + i]]
            # np.maximum: NaN propagates, else the larger
            if not (a >= b or a != a):
                best[i] = b
    row = vflat[vb0 : vb0 + n]
    for j in range(n):
        row[j] = u_out_next
    for i in range(n0):
        b = best[i]
        row[srcs[i]] = u_out_next if b == -np.inf else b
    row_mean[k] = pairwise(row, 0, n) * inv_n
    exit_value[k] = u_out_next
    n_cells = u.shape[0]
    for c in range(n_cells):
        u[c] = 0.0
    for j in range(members.shape[0]):
        u[member_cell[j]] += row[members[j]]
    for c in range(n_cells):
        u[c] = u[c] * inv_count[c]
    u_out = 0.0
    if full_idx.shape[0] > 0:
        for j in range(full_idx.shape[0]):
            ufull[j] = u[full_idx[j]]
        u_out = share * pairwise(ufull, 0, full_idx.shape[0]) * inv_full
    for c in range(n_cells):
        if empty[c]:
            u[c] = u_out
    return u_out


@njit
def finish(  # pragma: no cover - compiled
    k: int, dot: Any, u_out: float, cflat: Any, nc1: int, p_out: Any, cont_mean: Any, inv: float
) -> None:
    n_cells = nc1 - 1
    crow = cflat[k * nc1 : (k + 1) * nc1]
    for c in range(n_cells):
        crow[c] = dot[c]
    if u_out != 0.0 or u_out != u_out:
        for c in range(n_cells):
            crow[c] = crow[c] + p_out[c] * u_out
    crow[n_cells] = u_out
    cont_mean[k] = pairwise(crow, 0, nc1) * inv


@njit
def _run(  # pragma: no cover - compiled
    K: int,
    vflat: Any,
    cflat: Any,
    n: int,
    nc1: int,
    row_mean: Any,
    cont_mean: Any,
    slope_v: Any,
    slope_c: Any,
    exit_value: Any,
    v_off: Any,
    v_wpos: Any,
    v_wneg: Any,
    c_off: Any,
    c_wpos: Any,
    c_wneg: Any,
    fare: Any,
    cost: Any,
    prob: Any,
    prob_early: Any,
    penalty: Any,
    layer_slot: Any,
    layer_minute: Any,
    q_ext: Any,
    srcs: Any,
    col_flat: Any,
    col_start: Any,
    col_len: Any,
    best: Any,
    members: Any,
    member_cell: Any,
    inv_count: Any,
    empty: Any,
    full_idx: Any,
    share: float,
    inv_n: float,
    inv_full: float,
    u: Any,
    ufull: Any,
    p_in: Any,
    dot: Any,
    p_out: Any,
    inv_nc1: float,
) -> None:
    """All layers, ``k = K-1 .. 0``; the drop-off product ``p_in @ u`` is numpy's own
    (``objmode``: the same BLAS call as the numpy path, so the same bits)."""
    u_out_next = 0.0
    n_early = prob_early.shape[0]
    for k in range(K - 1, -1, -1):
        # the first layers' P: recent passes deplete curbs (terms._depleted_probability)
        prob_k = prob_early[k] if k < n_early else prob[layer_slot[k]]
        u_out = layer(
            k,
            u_out_next,
            vflat,
            cflat,
            n,
            nc1,
            row_mean,
            cont_mean,
            slope_v,
            slope_c,
            exit_value,
            v_off,
            v_wpos,
            v_wneg,
            c_off,
            c_wpos,
            c_wneg,
            fare,
            cost,
            prob_k,
            penalty[layer_minute[k]],
            q_ext,
            srcs,
            col_flat,
            col_start,
            col_len,
            best,
            members,
            member_cell,
            inv_count,
            empty,
            full_idx,
            share,
            inv_n,
            inv_full,
            u,
            ufull,
        )
        with numba.objmode():
            np.matmul(p_in, u, out=dot)
        finish(k, dot, u_out, cflat, nc1, p_out, cont_mean, inv_nc1)
        u_out_next = u_out


def f64(a: Any) -> Any:
    return np.ascontiguousarray(a, dtype=np.float64)


def i64(a: Any) -> Any:
    return np.ascontiguousarray(a, dtype=np.int64)


def backward_pass(kn: _Kernel) -> tuple[Any, Any, Any, Any, Any]:
    """``core._backward_pass`` compiled: the same results, bit for bit. Arrays are passed
    contiguous and 64-bit (one compiled signature; ``p_in`` as it is, for numpy's own product:
    two, C-contiguous or not)."""
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
    lens = np.array([c.shape[0] for c in kn.columns], dtype=np.int64)
    col_start = np.zeros(lens.shape[0], dtype=np.int64)
    np.cumsum(lens[:-1], out=col_start[1:])
    col_flat = np.concatenate(kn.columns).astype(np.int64)
    best = np.empty(max(int(lens[0]), 1), dtype=np.float64)
    full = ~kn.empty
    full_idx = np.flatnonzero(full).astype(np.int64)
    inv_full = 1.0 / max(int(full.sum()), 1)
    n_cells = kn.n_cells
    u = np.zeros(n_cells, dtype=np.float64)
    ufull = np.zeros(max(full_idx.shape[0], 1), dtype=np.float64)
    dot = np.zeros(n_cells, dtype=np.float64)
    p_in = kn.p_in
    share = float(kn.outside_value_share)
    inv_n = 1.0 / n
    inv_nc1 = 1.0 / nc1
    members = i64(kn.members)
    member_cell = i64(kn.member_cell)
    empty = np.ascontiguousarray(kn.empty, dtype=np.bool_)
    layer_slot, layer_minute, prob, penalty = (
        kn.layer_slot,
        kn.layer_minute,
        kn.prob,
        kn.penalty,
    )
    _run(
        K,
        vflat,
        cflat,
        n,
        nc1,
        row_mean,
        cont_mean,
        slope_v,
        slope_c,
        exit_value,
        i64(kn.v_off),
        f64(kn.v_wpos),
        f64(kn.v_wneg),
        i64(kn.c_off),
        f64(kn.c_wpos),
        f64(kn.c_wneg),
        f64(kn.fare),
        f64(kn.cost),
        f64(prob),
        f64(kn.prob_early),
        f64(penalty),
        i64(layer_slot),
        i64(layer_minute),
        q_ext,
        i64(kn.srcs),
        col_flat,
        col_start,
        lens,
        best,
        members,
        member_cell,
        f64(kn.inv_count),
        empty,
        full_idx,
        share,
        inv_n,
        inv_full,
        u,
        ufull,
        p_in,
        dot,
        f64(kn.p_out),
        inv_nc1,
    )
    return values, cont, exit_value, slope_v, slope_c
