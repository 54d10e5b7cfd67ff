"""The backward pass of :mod:`agent.planner.core` compiled with numba (optional: the ``jit`` extra).

Same arithmetic, in the same order, as the numpy path (``core._backward_pass``), so the values
are bit-identical (tests/agent/test_kernel_jit.py compares them on real cases):

* element-wise operations are written one by one as numpy evaluates them (``v1 - v0``, then
  ``* wpos``, then ``+ v0``, then ``+ wneg * sv``; no fused multiply-add: numba does not contract
  without ``fastmath``);
* sums over arrays use numpy's pairwise summation (:func:`_pairwise`, the algorithm of
  ``np.add.reduce``: blocks of 8 accumulators below 128 elements, halves above);
* ``np.bincount`` with weights adds in index order from zero, as here;
* the drop-off matrix product ``p_in @ u`` is numpy's BLAS (its summation order is the
  library's): its ``cblas_dgemv`` called from the compiled code with the arguments numpy passes
  (``_kernel_numba._run_gemv``; the warm-up checks it gives ``np.matmul``'s bits on random
  matrices first), else ``np.matmul`` in object mode once a layer (``_run``: about 5 µs a layer
  more, 13 % of a Manhattan pass).

Compiled code is cached on disk (``cache=True``; ``NUMBA_CACHE_DIR`` moves it), and nothing
here is compiled on import: :func:`warm_up` compiles (or loads) it, and ``core`` only uses it
once that has finished, in a background thread started after the first plan, so JIT time never
lands on a tick. Without numba, ``available()`` is False and the numpy path runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from agent.planner.core import _Kernel
    from agent.planner.workspace import Workspace

Result = tuple[Any, Any, Any, Any, Any]
log = logging.getLogger(__name__)


class BackwardPass(Protocol):
    """``core._backward_pass``'s signature: the kernel, and the workspace keeping ``V``/``C``."""

    def __call__(self, kn: _Kernel, ws: Workspace | None = None, /) -> Result: ...


_lock = threading.Lock()
_compiled: BackwardPass | None = None
_state = "idle"  # idle -> scheduled -> compiling -> ready | failed | disabled
_error: str | None = None


def available() -> bool:
    """numba is installed and not disabled (``NAGASHI_JIT=0``)."""
    if os.environ.get("NAGASHI_JIT", "1") == "0":
        return False
    return importlib.util.find_spec("numba") is not None


def status() -> dict[str, Any]:
    """numba's state and error, and which pass :func:`ready` gives (``"pass"``) with the C
    pass's own state (``"c"``)."""
    from agent.planner import kernel_c

    return {
        "state": _state if available() else "unavailable",
        "error": _error,
        "pass": compiled_pass(),
        "c": kernel_c.status(),
    }


_suspended = threading.local()


def ready() -> BackwardPass | None:
    """The compiled backward pass if one is ready, else None (never blocks, never compiles):
    the C pass (:mod:`agent.planner.kernel_c`, loaded and checked on the first call)
    where the install built it, else numba's once its warm-up has finished."""
    if getattr(_suspended, "on", False) or os.environ.get("NAGASHI_JIT") == "0":
        return None
    from agent.planner import kernel_c

    if kernel_c.ready():
        return kernel_c.backward_pass
    return _compiled


def compiled_pass() -> str:
    """Which backward pass :func:`ready` gives now: ``"c"``, ``"numba"`` or ``"numpy"``."""
    got = ready()
    if got is None:
        return "numpy"
    return "numba" if got is _compiled else "c"


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """The numpy path in this thread meanwhile (benchmarks: both paths in one run)."""
    before = getattr(_suspended, "on", False)
    _suspended.on = True
    try:
        yield
    finally:
        _suspended.on = before


def warm_up() -> BackwardPass | None:
    """Compile (or load from the disk cache) the kernel, running it on a tiny case; idempotent
    and thread-safe. Returns the compiled backward pass, or None without numba or on failure
    (the reason in :func:`status`)."""
    global _compiled, _state, _error
    with _lock:
        if _compiled is not None or _state in ("failed", "disabled"):
            return _compiled
        if not available():
            _state = "disabled"
            return None
        _state = "compiling"
        try:
            fn = _build()
            _compiled = fn
            _state = "ready"
        except Exception as e:  # a broken numba install must not stop the planner
            _state, _error = "failed", f"{type(e).__name__}: {e}"
            # said once, where an engineer looks: plans stay exact on the numpy path, slower
            log.warning(
                "the compiled planner kernel failed to load (%s); planning on the numpy path "
                "(same plans, slower). A stale numba cache after an upgrade is one cause: "
                "remove the __pycache__ *.nbi/*.nbc files of agent/planner or set "
                "NUMBA_CACHE_DIR",
                _error,
            )
            return None
        return _compiled


def start_warm_up(delay_s: float = 1.0) -> None:
    """:func:`warm_up` in a daemon thread after ``delay_s`` (once)."""
    global _state
    with _lock:
        if _state != "idle" or not available():
            return
        _state = "scheduled"
    t = threading.Timer(delay_s, _warm_up_scheduled)
    t.daemon = True
    t.start()


def _warm_up_scheduled() -> None:
    global _state
    with _lock:
        _state = "idle"
    warm_up()


#: the inputs of the backward pass this kernel was written for: a new field of
#: ``core._Kernel`` (a new input of the value iteration) turns the compiled path off until
#: it is taught the new arithmetic (its test compares both paths bit for bit)
KNOWN_FIELDS = frozenset(
    (
        "n",
        "n_cells",
        "n_layers",
        "rows_v",
        "rows_c",
        "cz",
        "v_off",
        "v_wpos",
        "v_wneg",
        "c_off",
        "c_wpos",
        "c_wneg",
        "fare",
        "cost",
        "prob",
        "prob_early",
        "penalty",
        "layer_slot",
        "layer_minute",
        "srcs",
        "columns",
        "members",
        "member_cell",
        "inv_count",
        "empty",
        "p_in",
        "p_out",
        "outside_value_share",
        "p_top_idx",
        "p_top_val",
    )
)


def _build() -> BackwardPass:
    import dataclasses

    from agent.planner.core import _Kernel

    fields = {f.name for f in dataclasses.fields(_Kernel)}
    if fields != KNOWN_FIELDS:
        raise RuntimeError(f"the kernel's inputs changed: {sorted(fields ^ KNOWN_FIELDS)}")
    from agent.planner import _kernel_numba

    # numpy's BLAS called directly (no object mode a layer) where it gives numpy's bits here
    _kernel_numba.USE_GEMV = _kernel_numba.gemv_matches_numpy()
    # compile (or load) now, not on a tick, the signatures the agent's plans run: one per
    # layout of the drop-off matrix, on the BLAS path when it holds, else the object-mode one
    # (only those: each loaded signature is resident memory, 2-6 MB; the other path and the
    # bench's minimal kernel load when first called, by the tests and the bench)
    for layout in ("C", "F", "A"):
        _kernel_numba.backward_pass(_tiny_kernel(_Kernel, layout))
    return _kernel_numba.backward_pass


def _tiny_kernel(cls: type[_Kernel], layout: str) -> _Kernel:
    """Three links, two cells, four layers; the drop-off matrix ``p_in`` C-contiguous,
    Fortran-contiguous or neither (``layout``: its numba type differs, one signature each)."""
    i = np.array([0, 1, 2], dtype=np.int64)
    f = np.array([0.5, 0.25, 0.0])
    drop = np.full((2, 3), 0.25)
    if layout == "F":
        drop = np.asfortranarray(drop[:, :2])
    elif layout == "C":
        drop = np.ascontiguousarray(drop[:, :2])
    return cls(
        n=3,
        n_cells=2,
        n_layers=4,
        rows_v=9,
        rows_c=9,
        cz=i,
        v_off=i + 3,
        v_wpos=f,
        v_wneg=f,
        c_off=np.array([3, 4, 3], dtype=np.int64),
        c_wpos=f,
        c_wneg=f,
        fare=f + 10.0,
        cost=f,
        prob=np.full((1, 3), 0.1),
        prob_early=np.full((1, 3), 0.05),
        penalty=np.zeros((1, 3)),
        layer_slot=np.zeros(4, dtype=np.int64),
        layer_minute=np.zeros(4, dtype=np.int64),
        srcs=i,
        columns=[np.array([1, 2, 0], dtype=np.int64), np.array([2], dtype=np.int64)],
        members=i,
        member_cell=np.array([0, 1, 1], dtype=np.int64),
        inv_count=np.array([1.0, 0.5]),
        empty=np.zeros(2, dtype=bool),
        p_in=drop[:, :2],
        p_out=np.full(2, 0.5),
        outside_value_share=0.5,
        p_top_idx=np.zeros((0, 0), dtype=np.int64),
        p_top_val=np.zeros((0, 0)),
    )
