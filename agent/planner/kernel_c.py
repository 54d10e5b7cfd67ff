"""The backward pass of :mod:`agent.planner.core` in C (``agent/planner/_vi.c``), for the cab.

The same arithmetic, in the same order, as the numpy path and the numba one
(:mod:`agent.planner.kernel_jit` says why those give the same bits; the C file is
``_kernel_numba._run_gemv`` statement for statement, built with ``-ffp-contract=off``), so the
values are bit-identical (tests/agent/test_kernel_c.py compares the three on real cases). It
needs neither numba nor LLVM: the shared library is built by ``pip install`` (``setup.py``,
optional: without a C compiler the install goes on and the numpy path runs) and loaded here
with ctypes at the first plan (the library itself in 0.2 ms; with the check below about 8 ms
in a fresh process, most of it numpy's first BLAS call, 0.5 ms warm), so there is no warm-up
and no JIT memory (numba and LLVM hold about 130 MB).

The drop-off product ``p_in @ u`` is numpy's own ``cblas_dgemv`` (its address is passed to the
C code); :func:`load` checks first that it gives ``np.matmul``'s bits on random matrices, as
the numba path's warm-up does, and the C pass is used only then. ``NAGASHI_KERNEL_C=0`` turns
it off (the numba pass, or numpy, runs instead).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import threading
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from agent.planner._kernel_arrays import (
    GEMV_CHECK_SIZES,
    Arrays,
    Work,
    gemv_layout,
    gemv_matches_numpy,
    i64,
    numpy_gemv_address,
    pass_inputs,
)
from agent.planner._order import stable_argsort

if TYPE_CHECKING:
    from agent.planner.core import _Kernel
    from agent.planner.workspace import Workspace

_P = ctypes.c_void_p
_I = ctypes.c_int64
_D = ctypes.c_double

#: ``Pass`` of ``_vi.c``, field for field: the sizes, the inputs' pointers (these fields of
#: :class:`Arrays`), its scalars, the drop-off product's matrix, layout and BLAS function, and
#: the outputs' pointers (every field of :class:`Work`)
_SIZES = (
    "n_layers", "n", "nc1", "n_cz", "n_early", "n_deg", "n_members", "n_full", "top_k", "n_cells",
)  # fmt: skip
_SCALARS = ("share", "inv_n", "inv_nc1", "inv_full")
_INPUTS = tuple(f for f in Arrays._fields if f not in ("n", "nc1", *_SCALARS))
_FIELDS: list[tuple[str, Any]] = [
    *((name, _I) for name in _SIZES),
    *((name, _P) for name in _INPUTS),
    *((name, _D) for name in _SCALARS),
    ("p_in", _P),
    ("order", _I),
    ("lda", _I),
    ("gemv", _P),
    *((name, _P) for name in Work._fields),
    ("n_fill", _I),
    ("n_runs", _I),
    *((name, _P) for name in ("fill_idx", "run_members", "run_cell", "run_start")),
    ("simd", _I),
]


class _Pass(ctypes.Structure):
    _fields_ = _FIELDS


_lock = threading.Lock()
_lib: Any = None
_gemv_addr: int | None = None
_state = "idle"  # idle -> ready | unavailable | failed
_error: str | None = None


def enabled() -> bool:
    """Not turned off (``NAGASHI_KERNEL_C=0``; ``NAGASHI_JIT=0`` turns off every compiled
    pass: the numpy path alone)."""
    return os.environ.get("NAGASHI_KERNEL_C", "1") != "0" and os.environ.get("NAGASHI_JIT") != "0"


def simd() -> bool:
    """The action values four links at a time (AVX2, where the CPU has it; the same operations
    on each link, so the same bits); ``NAGASHI_VI_SIMD=0`` runs the scalar loop."""
    return os.environ.get("NAGASHI_VI_SIMD", "1") != "0"


def library_path() -> str | None:
    """The built shared library, or None when the install could not build it."""
    spec = importlib.util.find_spec("agent.planner._vi")
    return None if spec is None or not spec.origin else spec.origin


def load() -> bool:
    """Load the library and check its drop-off product against ``np.matmul`` (once; thread-
    safe). True when the C pass is ready."""
    global _lib, _gemv_addr, _state, _error
    with _lock:
        if _state != "idle":
            return _state == "ready"
        changed = _changed_inputs()
        if changed:  # a new input of the value iteration: this C code does not know it
            _state, _error = "failed", f"the kernel's inputs changed: {changed}"
            return False
        path = library_path()
        gemv = numpy_gemv_address()
        if path is None or gemv is None:
            _state = "unavailable"
            _error = "not built" if path is None else "numpy's cblas_dgemv not found"
            return False
        try:
            lib = ctypes.CDLL(path)
            lib.nagashi_backward.argtypes = [ctypes.POINTER(_Pass)]
            lib.nagashi_backward.restype = ctypes.c_int
            lib.nagashi_gemv.argtypes = [_P, _I, _I, _P, _I, _P, _P]
            lib.nagashi_gemv.restype = None
            if not _gemv_matches_numpy(lib, gemv):
                _state, _error = "failed", "cblas_dgemv does not give np.matmul's bits"
                return False
        except (OSError, AttributeError) as e:
            _state, _error = "failed", f"{type(e).__name__}: {e}"
            return False
        _lib, _gemv_addr, _state = lib, gemv, "ready"
        return True


def _changed_inputs() -> list[str]:
    """The fields of ``core._Kernel`` that are not the ones this pass was written for
    (:data:`agent.planner.kernel_jit.KNOWN_FIELDS`, the numba pass's list too)."""
    import dataclasses

    from agent.planner.core import _Kernel
    from agent.planner.kernel_jit import KNOWN_FIELDS

    return sorted({f.name for f in dataclasses.fields(_Kernel)} ^ KNOWN_FIELDS)


def status() -> dict[str, Any]:
    return {"state": _state if enabled() else "disabled", "error": _error}


def ready() -> bool:
    """The C pass may run now (loaded, checked and not turned off); loads it the first time."""
    return enabled() and (_state == "ready" or (_state == "idle" and load()))


def _gemv_matches_numpy(lib: Any, gemv: int) -> bool:
    """The C code's call of ``cblas_dgemv`` gives ``np.matmul``'s bits
    (:func:`agent.planner._kernel_arrays.gemv_matches_numpy`)."""

    def call(p_in: Any, u: Any, out: Any, order: int, lda: int) -> None:
        lib.nagashi_gemv(gemv, order, u.shape[0], p_in.ctypes.data, lda, u.ctypes.data,
                         out.ctypes.data)  # fmt: skip

    return gemv_matches_numpy(call, sizes=GEMV_CHECK_SIZES[:-1])  # on the first plan: small


_addressof = ctypes.addressof
_from_buffer = ctypes.c_char.from_buffer


def address(a: np.ndarray[Any, Any]) -> int:
    """The address of ``a``'s data: through the buffer protocol where ``a`` is writable,
    C-contiguous and not empty (0.28 µs; ``ndarray.ctypes`` builds an object: 0.8 µs, and a
    plan passes some 70 arrays to C), else ``a.ctypes.data``."""
    f = a.flags
    if f.writeable and f.c_contiguous and a.nbytes:
        return _addressof(_from_buffer(a))  # type: ignore[arg-type]  # (ndarray is a buffer)
    return int(a.ctypes.data)


class Order(NamedTuple):
    """What the C pass derives from :class:`Arrays` to read them in a faster order, the same
    sums in the same order: the links no source leaves by a cruisable successor (``V`` there is
    the exit value; every other link's value is its successor maximum), and the cells' members
    stably sorted by cell, each cell's members one run."""

    fill_idx: Any
    run_members: Any
    run_cell: Any
    run_start: Any


def order_of(a: Arrays) -> Order:
    fill = np.ones(a.n, dtype=np.bool_)
    fill[a.srcs] = False
    by_cell = stable_argsort(a.member_cell)
    cells = a.member_cell[by_cell]
    m = cells.shape[0]
    head = np.ones(m + 1, dtype=np.bool_)  # each run's first member, and the end
    np.not_equal(cells[1:], cells[:-1], out=head[1:m])
    starts = i64(np.flatnonzero(head)) if m else np.zeros(1, dtype=np.int64)
    return Order(
        fill_idx=i64(np.flatnonzero(fill)),
        run_members=i64(a.members[by_cell]),
        run_cell=cells[starts[:-1]],
        run_start=starts,
    )


def _struct(kn: _Kernel, a: Arrays, w: Work, lay: tuple[int, int], o: Order) -> _Pass:
    s = _Pass()
    s.n_layers, s.n, s.nc1 = int(kn.n_layers), a.n, a.nc1
    s.n_cz, s.n_early = int(a.v_off.shape[0]), int(a.prob_early.shape[0])
    s.n_deg, s.n_members = int(a.col_len.shape[0]), int(a.members.shape[0])
    s.n_full, s.top_k, s.n_cells = int(a.full_idx.shape[0]), int(a.top_idx.shape[0]), a.nc1 - 1
    for name in _INPUTS:
        setattr(s, name, address(getattr(a, name)))
    s.share, s.inv_n, s.inv_nc1, s.inv_full = a.share, a.inv_n, a.inv_nc1, a.inv_full
    s.p_in = address(kn.p_in) if kn.p_in.size else None
    s.order, s.lda = lay
    s.gemv = _gemv_addr
    for name in Work._fields:
        setattr(s, name, address(getattr(w, name)))
    s.n_fill, s.n_runs = int(o.fill_idx.shape[0]), int(o.run_cell.shape[0])
    for name in Order._fields:
        setattr(s, name, address(getattr(o, name)))
    s.simd = int(simd())
    return s


def backward_pass(kn: _Kernel, ws: Workspace | None = None) -> tuple[Any, Any, Any, Any, Any]:
    """``core._backward_pass`` in C: the same results, bit for bit (``V`` and ``C`` kept in
    ``ws`` when given). Falls back to the numpy path where numpy itself would not call BLAS for
    the drop-off product (a matrix neither row- nor column-contiguous)."""
    from agent.planner import core

    lay = gemv_layout(kn.p_in)
    if lay is None or not ready():
        return core._numpy_backward_pass(kn, ws)
    values, cont, a, w = pass_inputs(kn, ws)
    o = order_of(a)  # held until the pass returns, as a and w are
    s = _struct(kn, a, w, lay, o)
    if _lib.nagashi_backward(ctypes.byref(s)) != 0:  # pragma: no cover - checked by load()
        return core._numpy_backward_pass(kn, ws)
    return values, cont, w.exit_value, w.slope_v, w.slope_c
