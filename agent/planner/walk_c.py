"""The route read-out's walk in C (``agent/planner/_walk.c``): :func:`agent.planner.readout.follow`
on its main path, the route safety/ shows (no spread, ``max_visits`` > 0), with the same links,
length and duration bit for bit (tests/agent/test_walk_c.py compares both on real tables, with
the fleet's claims and passes, prefixes and minutes with no-entry windows).

The walk is Python's statement for statement (the C file's comment says what it follows); the
depleted pickup probability goes through numpy's own ``expm1`` loop, called by its address in
the ufunc (numpy's ``expm1`` is not the C library's: they differ in the last bit on about 3 %
of the read-out's arguments on this machine). :func:`load` checks that loop against
``np.expm1`` first and the C walk is used only then. Built by ``pip install`` with the planner's
other C code (``setup.py``, optional: without it :func:`follow` returns None and Python walks);
``NAGASHI_WALK_C=0`` turns it off (so do ``NAGASHI_KERNEL_C=0`` and ``NAGASHI_JIT=0``).

The table's arrays a walk reads besides ``P``, ``W`` and the passes (its values, drop-off
values, fares, costs, the graph's forward turns) are set once per table in a template, shared by
the many cabs of the simulator that read their routes from one table; each walk copies it and
sets its own ``P``, ``W``, passes, start and rules.
"""

from __future__ import annotations

import ctypes
import importlib.util
import math
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.planner import kernel_c
from agent.planner.cab_view import CabTable
from agent.planner.core import F64, Prepared, ValueTable
from agent.planner.kernel_c import address as _address
from agent.planner.np_expm1 import numpy_expm1_loop as numpy_expm1_loop

_P = ctypes.c_void_p
_I = ctypes.c_int64
_D = ctypes.c_double

_SIZES = (
    "n", "values_rows", "cont_rows", "cont_width", "n_layers", "max_edges", "max_visits",
    "mask_lo", "mask_count",
)  # fmt: skip
_POINTERS = (
    "fwd_off", "fwd_dst", "arc_off", "arc_dst", "cell", "layer_slot", "length_m", "tau_s",
    "values", "cont", "fare", "cost", "trip_layers", "slope_v", "slope_c", "prob", "window_s",
    "rate_h", "pass_age", "last_pass", "live", "masks",
)  # fmt: skip
_SCALARS = ("minute0", "step_s", "t0", "min_length_m", "min_duration_s", "horizon_s")
_STATE_I = ("start", "n_prefix", "n_route", "e", "started", "need_minute")
#: a cab's view of the fleet over the table's P, W and pass ages (agent.planner.cab_view.CabOverlay)
_OVERLAY = ("claim_links", "pass_links", "claim_w", "claim_p", "pass_seen", "seen")


class _Walk(ctypes.Structure):
    _fields_ = [
        *((name, _I) for name in _SIZES),
        *((name, _P) for name in _POINTERS),
        *((name, _D) for name in _SCALARS),
        ("expm1", _P),
        ("expm1_data", _P),
        ("route", _P),
        *((name, _I) for name in _STATE_I),
        ("length", _D),
        ("t", _D),
        ("own_t", _P),
        ("visits", _P),
        ("trace", _P),
        *((name, _P) for name in _OVERLAY),
        ("n_claims", _I),
        ("n_passes", _I),
        ("seen_age", _D),
        ("seen_off", _D),
    ]


_DONE, _NEED_MINUTE, _ENTERABLE = 0, 1, 2

_lock = threading.Lock()
_lib: Any = None
_expm1: tuple[int, int] | None = None
_state = "idle"  # idle -> ready | disabled | unavailable | failed
_error: str | None = None


def library_path() -> str | None:
    spec = importlib.util.find_spec("agent.planner._walk")
    return None if spec is None or not spec.origin else spec.origin


def load() -> bool:
    """Load the library and check numpy's ``expm1`` loop as the walk calls it against
    ``np.expm1`` (once; thread-safe). True when the C walk is ready."""
    global _lib, _expm1, _state, _error
    with _lock:
        if _state != "idle":
            return _state == "ready"
        if not enabled():
            _state = "disabled"
            return False
        path = library_path()
        loop = numpy_expm1_loop()
        if path is None or loop is None:
            _state = "unavailable"
            _error = "not built" if path is None else "numpy's expm1 loop not found"
            return False
        try:
            lib = ctypes.CDLL(path)
            lib.nagashi_walk.argtypes = [ctypes.POINTER(_Walk)]
            lib.nagashi_walk.restype = ctypes.c_int
            lib.nagashi_expm1_each.argtypes = [_P, _P, _P, _P, _I]
            lib.nagashi_expm1_each.restype = None
            lib.nagashi_route_value.argtypes = [ctypes.POINTER(_Walk), _P, _I, _P, _P, _P]
            lib.nagashi_route_value.restype = ctypes.c_int
            lib.nagashi_enterable.argtypes = [ctypes.POINTER(_Walk), _P, _I]
            lib.nagashi_enterable.restype = ctypes.c_int
            lib.nagashi_live.argtypes = [_I, _P, _P, _P, _P, _P, _P, _P, _P]
            lib.nagashi_live.restype = None
            if not _expm1_matches_numpy(lib, loop):
                _state, _error = "failed", "numpy's expm1 loop does not give np.expm1's bits"
                return False
        except (OSError, AttributeError) as e:
            _state, _error = "failed", f"{type(e).__name__}: {e}"
            return False
        _lib, _expm1, _state = lib, loop, "ready"
        return True


def _expm1_matches_numpy(lib: Any, loop: tuple[int, int]) -> bool:
    """The loop called one element at a time gives ``np.expm1``'s bits on the read-out's
    arguments (``-rate * (tau + age) / 3600``: small negative numbers) and beyond."""
    # (geometric steps: every mantissa pattern, no numpy.random to import on the first plan)
    x = -np.geomspace(1e-9, 50.0, 6144)
    x = np.concatenate([x, -x, [0.0, -0.0, -np.inf, np.inf, np.nan]])
    out = np.empty_like(x)
    lib.nagashi_expm1_each(loop[0], loop[1] or None, x.ctypes.data, out.ctypes.data, x.size)
    want = np.expm1(x)
    return bool(np.array_equal(out.view(np.int64), want.view(np.int64)))


def enabled() -> bool:
    """Not turned off: ``NAGASHI_WALK_C=0`` turns off this walk alone, ``NAGASHI_KERNEL_C=0`` and
    ``NAGASHI_JIT=0`` every compiled part of the planner."""
    return kernel_c.enabled() and os.environ.get("NAGASHI_WALK_C", "1") != "0"


def status() -> dict[str, Any]:
    state = "disabled" if _state == "idle" and not enabled() else _state
    return {"state": state, "error": _error}


def ready() -> bool:
    """The C walk may run now (loaded, checked and not turned off); loads it the first time.
    Whether it is turned off is read then, once."""
    return _state == "ready" or (_state == "idle" and load())


def which() -> str:
    """The walk the read-out runs: ``c`` (loaded and checked) or ``python``; for the benches'
    reports (loads it the first time)."""
    return "c" if ready() else "python"


def library() -> Any:
    """The loaded library (after :func:`ready`), for the other C parts of the read-out."""
    return _lib


def expm1_loop() -> tuple[int, int] | None:
    """Numpy's ``expm1`` loop as the load checked it (after :func:`ready`)."""
    return _expm1


def _ptr(a: npt.NDArray[Any] | None) -> int | None:
    return None if a is None else _address(a)


def _c(a: npt.NDArray[Any], dtype: Any) -> npt.NDArray[Any]:
    return np.ascontiguousarray(a, dtype=dtype)


class _Template:
    """What every walk on one table reads besides ``P``, ``W`` and the passes, and the allowed
    mask of each minute walked so far (the same for every cab's view of the table: they share
    its ``allowed``, ``minutes``, ``prep`` and ``monday``)."""

    __slots__ = ("inputs", "keep", "live", "mask_lo", "masks", "rows", "struct")

    def __init__(self, table: ValueTable, inputs: tuple[object, ...]) -> None:
        prep = table.prep
        fwd_off, fwd_dst = _forward_arcs(prep)
        values, cont = _c(table.values, np.float64), _c(table.cont, np.float64)
        arrays = {
            "fwd_off": fwd_off,
            "fwd_dst": fwd_dst,
            "arc_off": _c(prep.arc_offsets, np.int64),
            "arc_dst": _c(prep.arc_dst, np.int64),
            "cell": _c(table.cell, np.int64),
            "layer_slot": _c(table.layer_slot, np.int64),
            "length_m": _c(prep.length_m, np.float64),
            "tau_s": _c(prep.tau_s, np.float64),
            "values": values,
            "cont": cont,
            "fare": _c(table.fare, np.float64),
            "cost": _c(table.cost, np.float64),
            "trip_layers": _c(table.trip_layers, np.float64),
            "slope_v": _c(table.slope_v, np.float64),
            "slope_c": _c(table.slope_c, np.float64),
        }
        self.inputs = inputs
        horizon_s = table.n_layers * prep.step_s
        lo = math.floor(table.start_minute_of_week)
        hi = math.floor(table.start_minute_of_week + horizon_s / 60.0) + 1
        self.mask_lo = lo
        self.masks = (_P * (hi - lo + 1))()
        self.rows: dict[int, npt.NDArray[np.bool_]] = {}
        self.live: dict[int, tuple[npt.NDArray[np.bool_], int]] = {}
        s = _Walk()
        s.n, s.n_layers = prep.n, table.n_layers
        s.values_rows, s.cont_rows, s.cont_width = values.shape[0], cont.shape[0], cont.shape[1]
        s.mask_lo, s.mask_count = lo, hi - lo + 1
        for name, a in arrays.items():
            setattr(s, name, _ptr(a))
        s.masks = ctypes.cast(self.masks, _P).value
        s.minute0, s.step_s, s.horizon_s = table.start_minute_of_week, prep.step_s, horizon_s
        assert _expm1 is not None
        s.expm1, s.expm1_data = _expm1[0], _expm1[1] or None
        self.struct = s
        self.keep = arrays  # the arrays the pointers point into

    def add_minute(self, table: ValueTable, raw: int) -> bool:
        """Fill in the mask of minute ``raw`` (False: outside the template's span)."""
        i = raw - self.mask_lo
        if not 0 <= i < len(self.masks):
            return False
        row = np.ascontiguousarray(table.allowed_at(float(raw)), dtype=np.bool_)
        with _lock:
            self.rows[raw] = row
            self.masks[i] = _address(row)
        return True

    def live_at(self, table: ValueTable, minute_of_week: float) -> int:
        """The address of :func:`agent.planner.deadends.live_links` of the minute, kept per
        whole minute (it reads the minute's allowed mask alone)."""
        raw = math.floor(minute_of_week)
        got = self.live.get(raw)
        if got is None:
            from agent.planner.deadends import live_links

            row = np.ascontiguousarray(live_links(table, minute_of_week), dtype=np.bool_)
            got = (row, _address(row))
            with _lock:
                self.live[raw] = got
        return got[1]


#: per table's values and inputs, the walk's template (a few recent tables)
_TEMPLATES: OrderedDict[int, _Template] = OrderedDict()
_TEMPLATES_MAX = 4
_FWD: weakref.WeakKeyDictionary[Prepared, tuple[npt.NDArray[np.int64], ...]] = (
    weakref.WeakKeyDictionary()
)


def _forward_arcs(prep: Prepared) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per link its successors that are no U-turn (whose end is not its start), in the order of
    ``arc_dst``, as offsets and targets (``link_facts``' last entry, for every link)."""
    got = _FWD.get(prep)
    if got is None:
        g = prep.graph
        dst = np.asarray(prep.arc_dst, dtype=np.int64)
        src = np.asarray(prep.arc_src, dtype=np.int64)  # (the sources of arc_dst, in order)
        keep = np.asarray(g.v_node)[dst] != np.asarray(g.u_node)[src]
        counts = np.bincount(src[keep], minlength=prep.n)
        fwd_off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        got = (fwd_off, np.ascontiguousarray(dst[keep]))
        with _lock:
            _FWD[prep] = got
    return got[0], got[1]


def _template(table: ValueTable) -> _Template:
    inputs = (
        table.values, table.cont, table.fare, table.cost, table.cell, table.trip_layers,
        table.slope_v, table.slope_c, table.layer_slot, table.prep, table.allowed, table.minutes,
        table.monday, table.start_minute_of_week, table.n_layers,
    )  # fmt: skip
    key = id(table.values)
    hit = _TEMPLATES.get(key)
    if hit is None or any(a is not b for a, b in zip(hit.inputs, inputs, strict=True)):
        hit = _Template(table, inputs)
        with _lock:
            _TEMPLATES[key] = hit
            while len(_TEMPLATES) > _TEMPLATES_MAX:
                _TEMPLATES.popitem(last=False)
    return hit


#: the last table the cabs' overlays were made from and its template (a frozen table's
#: fields do not change: the same table, the same template)
_LAST_BASE: tuple[ValueTable, _Template] | None = None


def _base_template(base: ValueTable) -> _Template:
    global _LAST_BASE
    last = _LAST_BASE
    if last is not None and last[0] is base:
        return last[1]
    tmpl = _template(base)
    _LAST_BASE = (base, tmpl)
    return tmpl


_work = threading.local()


class _Scratch:
    """This thread's buffers of a walk on graphs of ``n`` links: the per-link state (the C
    walk leaves it as it found it), the route, the route value's per-link terms, and their
    addresses (``ndarray.ctypes`` costs a microsecond a call)."""

    __slots__ = ("ks", "ks_at", "out", "out_ref", "own_at", "own_t", "route", "route_at",
                 "since", "since_at", "visits", "visits_at")  # fmt: skip

    def __init__(self, n: int, size: int) -> None:
        self.own_t = np.full(n, -np.inf)
        self.visits = np.zeros(n, dtype=np.int32)
        self.route = np.empty(size, dtype=np.int64)
        self.since = np.empty(size, dtype=np.float64)
        self.ks = np.empty(size, dtype=np.int64)
        self.own_at, self.visits_at = self.own_t.ctypes.data, self.visits.ctypes.data
        self.route_at, self.since_at = self.route.ctypes.data, self.since.ctypes.data
        self.ks_at = self.ks.ctypes.data
        self.out = ctypes.c_double()
        self.out_ref = ctypes.byref(self.out)


def _scratch(n: int, size: int) -> _Scratch:
    got: dict[int, _Scratch] | None = getattr(_work, "scratch", None)
    if got is None:
        got = _work.scratch = {}
    sc = got.get(n)
    if sc is None or sc.route.shape[0] < size:
        if sc is not None:  # (the per-link state is clean between walks: kept as it is)
            size = max(size, 2 * sc.route.shape[0])
        sc = got[n] = _Scratch(n, max(size, 512))
    return sc


def _work_arrays(n: int) -> tuple[F64, npt.NDArray[np.int32]]:
    """This thread's per-link state of a walk (the tests look at it)."""
    sc = _scratch(n, 0)
    return sc.own_t, sc.visits


#: the last table view a walk read and its struct (its ``P``, ``W``, rates and pass ages set on
#: the template's): the read-out of one cab walks and values several routes on one view
_LAST_VIEW: tuple[ValueTable, _Template, _Walk, tuple[object, ...]] | None = None


def _view(table: ValueTable) -> tuple[_Template, _Walk, tuple[object, ...]]:
    """The template of ``table``, a struct with this view of it set (a copy: the caller sets
    the walk's own fields) and the arrays it points into (to be held while it is used)."""
    global _LAST_VIEW
    last = _LAST_VIEW
    if last is not None and last[0] is table:
        return last[1], _Walk.from_buffer_copy(last[2]), last[3]
    ov = table.overlay if isinstance(table, CabTable) else None
    if ov is not None and ov.addresses is not None:
        tmpl = _base_template(ov.base)
        s = _Walk.from_buffer_copy(tmpl.struct)
        assert ov.shared is not None  # (set with the addresses)
        prob_at, window_at, rate_at, ages_at, seen_at = ov.shared
        s.prob, s.window_s, s.rate_h, s.pass_age = prob_at, window_at, rate_at, ages_at
        s.seen = seen_at if ov.seen is not None else None
        links_at, vals_at, k, m = ov.addresses
        s.claim_links, s.pass_links = links_at, links_at + 8 * k
        s.claim_w, s.claim_p = vals_at, vals_at + 8 * k
        s.pass_seen = vals_at + 8 * k * (ov.slots + 1)
        s.n_claims, s.n_passes = k, m
        s.seen_age, s.seen_off = ov.seen_age, ov.seen_off
        keep: tuple[object, ...] = (ov,)
        _LAST_VIEW = (table, tmpl, s, keep)
        return tmpl, _Walk.from_buffer_copy(s), keep
    tmpl = _template(table)
    s = _Walk.from_buffer_copy(tmpl.struct)
    # (a plain table, or an overlay numpy made: its arrays made whole, as any reader's)
    rate = _c(table.rate_h, np.float64)
    prob = _c(table.pickup_prob, np.float64)
    window = _c(table.window_s, np.float64)
    ages = None if table.pass_age_s is None else _c(table.pass_age_s, np.float64)
    keep = (prob, rate, window, ages)
    s.prob, s.window_s, s.rate_h = _address(prob), _address(window), _address(rate)
    s.pass_age = _ptr(ages)
    _LAST_VIEW = (table, tmpl, s, keep)
    return tmpl, _Walk.from_buffer_copy(s), keep


def follow(
    table: ValueTable,
    start: int,
    t0_rel_s: float,
    min_length_m: float,
    min_duration_s: float,
    max_edges: int,
    last_pass_s: F64 | None,
    max_visits: int,
    prefix: tuple[int, ...],
    trace: F64 | None = None,
) -> tuple[list[int], float, float] | None:
    """:func:`agent.planner.readout.follow` without a spread and with ``max_visits`` > 0; None
    where the C walk does not run (not built or turned off, or a non-finite time or shift,
    a link not the graph's: Python's arithmetic decides those). ``trace`` (float64, at least
    ``max_edges`` long; the tests'): the ``Q`` of each link walked past the prefix when it was
    chosen."""
    n = table.prep.n
    if not ready() or not math.isfinite(t0_rel_s) or not 0 <= start < n:
        return None
    if prefix and (min(prefix) < 0 or max(prefix) >= n):
        return None
    tmpl, s, _keep = _view(table)  # (_keep: the arrays it points into, held until done)
    last = None if last_pass_s is None else _c(last_pass_s, np.float64)
    npre = len(prefix)
    sc = _scratch(n, npre + max(max_edges, 0) + 1)
    route = sc.route
    if prefix:
        route[:npre] = prefix
    s.max_edges, s.max_visits = max_edges, max_visits
    s.last_pass = _ptr(last)
    s.live = tmpl.live_at(table, table.start_minute_of_week + t0_rel_s / 60.0)
    s.min_length_m, s.min_duration_s = min_length_m, min_duration_s
    s.t0, s.start, s.own_t, s.visits = t0_rel_s, start, sc.own_at, sc.visits_at
    s.route, s.n_prefix = sc.route_at, npre
    if trace is not None:
        assert trace.dtype == np.float64 and trace.flags.c_contiguous
        assert trace.shape[0] >= max_edges
        s.trace = trace.ctypes.data
    walk = _lib.nagashi_walk
    ref = ctypes.byref(s)
    while True:
        rc = walk(ref)
        if rc == _DONE:
            return route[: s.n_route].tolist(), s.length, s.t - t0_rel_s
        if rc != _NEED_MINUTE or not tmpl.add_minute(table, int(s.need_minute)):
            if rc == _NEED_MINUTE:  # (a minute past the template's span: none in practice)
                _reset(s, sc.own_t, sc.visits, route)
            return None


def route_value(
    table: ValueTable, start: int, t0_rel_s: float, route: Sequence[int]
) -> float | None:
    """:func:`agent.planner.stability.route_value` of a non-empty route; None where the C walk
    does not run (as :func:`follow`, and where a link is not the graph's: Python's indexing
    decides that)."""
    n = table.prep.n
    if not route or not ready() or not 0 <= start < n:
        return None
    if min(route) < 0 or max(route) >= n:
        return None
    _, s, _keep = _view(table)
    count = len(route)
    sc = _scratch(n, count)
    sc.route[:count] = route
    s.t0, s.start, s.own_t, s.visits = t0_rel_s, start, sc.own_at, sc.visits_at
    rc = _lib.nagashi_route_value(
        ctypes.byref(s), sc.route_at, count, sc.since_at, sc.ks_at, sc.out_ref
    )
    return sc.out.value if rc == 0 else None


def enterable(table: ValueTable, start: int, t0_rel_s: float, route: Sequence[int]) -> bool | None:
    """:func:`agent.planner.stability._enterable`; None where the C walk does not run (as
    :func:`follow`)."""
    n = table.prep.n
    if not ready() or not math.isfinite(t0_rel_s) or not 0 <= start < n:
        return None
    count = len(route)
    if count and (min(route) < 0 or max(route) >= n):
        return False  # (Python's first check)
    tmpl, s, _keep = _view(table)
    sc = _scratch(n, count)
    sc.route[:count] = route
    s.t0, s.start = t0_rel_s, start
    ref = ctypes.byref(s)
    while True:
        rc = _lib.nagashi_enterable(ref, sc.route_at, count)
        if rc in (0, _ENTERABLE):
            return bool(rc == _ENTERABLE)
        if rc != _NEED_MINUTE or not tmpl.add_minute(table, int(s.need_minute)):
            return None


def _reset(s: _Walk, own_t: F64, visits: npt.NDArray[np.int32], route: npt.NDArray[Any]) -> None:
    """The per-link state of a walk stopped midway back to none."""
    links = [int(s.start), *route[: s.n_route].tolist()]
    own_t[links] = -np.inf
    visits[links] = 0
