"""The backward pass's inputs and buffers as the compiled passes take them (numba:
:mod:`agent.planner._kernel_numba`; C: :mod:`agent.planner.kernel_c`): the arrays of
``core._Kernel`` contiguous and 64-bit, and the outputs and scratch buffers, allocated once per
pass. No numba here: the C pass runs without it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from agent.planner.core import _Kernel
    from agent.planner.workspace import Workspace

#: ``cblas_dgemv``'s layouts and its no-transpose flag
ROW_MAJOR, COL_MAJOR, NO_TRANS = 101, 102, 111


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


def arrays_of(kn: _Kernel) -> Arrays:
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


def pass_inputs(kn: _Kernel, ws: Workspace | None) -> tuple[Any, Any, Arrays, Work]:
    """``V`` and ``C`` (kept in ``ws`` when given: ``bellman._tables``), the inputs and the
    buffers of one pass."""
    from agent.planner.bellman import _tables

    K = kn.n_layers
    values, cont = _tables(kn, ws)
    a = arrays_of(kn)
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
    return values, cont, a, w


def numpy_gemv_address(kind: str = "d") -> int | None:
    """The address of numpy's BLAS ``cblas_dgemv`` with 64-bit integers (the function numpy's
    ``matmul`` calls for a matrix times a vector; the library is among the dependencies of
    numpy's extension module), or None; ``kind="s"``: ``cblas_sgemv``, its float32 twin."""
    import ctypes
    import importlib

    try:
        lib = ctypes.CDLL(importlib.import_module("numpy._core._multiarray_umath").__file__)
    except (ImportError, OSError):
        return None
    for name in (f"scipy_cblas_{kind}gemv64_", f"cblas_{kind}gemv64_"):
        fn = getattr(lib, name, None)
        if fn is not None:
            addr = ctypes.cast(fn, ctypes.c_void_p).value
            if addr:
                return int(addr)
    return None


#: the sizes :func:`gemv_matches_numpy` checks (the C pass checks on the first plan, so not
#: the city's 432 cells: 13 ms of the check's 15; numba's warm-up runs in the background)
GEMV_CHECK_SIZES = (1, 2, 7, 48, 131, 432)


def gemv_matches_numpy(
    call: Callable[[Any, Any, Any, int, int], None],
    seed: int = 20,
    sizes: tuple[int, ...] = GEMV_CHECK_SIZES,
) -> bool:
    """A compiled pass's direct call of ``cblas_dgemv`` (``call(p_in, u, out, order, lda)``
    writes ``p_in @ u`` into ``out``) gives ``np.matmul``'s bits on random drop-off matrices of
    ``sizes``, rows contiguous, a column slice of a wider matrix (as
    ``TickDemand.dropoff[:, :n_cells]``) and columns contiguous."""
    rng = np.random.default_rng(seed)
    for m in sizes:
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
            call(p_in, u, out, *lay)
            if out.tobytes() != np.matmul(p_in, u).tobytes():
                return False
    return True
