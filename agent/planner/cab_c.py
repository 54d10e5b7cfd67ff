"""One simulated cab's view of the fleet's live snapshot in C (``_walk.c``'s
``nagashi_cab_overlay``): the links of its own route and passes where its view differs from the
snapshot's shared one, and their ``W``, ``P`` and seen ages, as
:meth:`agent.planner.fleet.SnapshotReadout.table_for`'s numpy computes them, bit for bit
(tests/tools/test_sim_speed_fleet.py). Only where the C walk is ready (:func:`cab_inputs`
gives None otherwise); the walk then reads the overlay as it is
(:class:`agent.planner.cab_view.CabOverlay`)."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from agent.planner import walk_c
from agent.planner.core import F64, ValueTable
from agent.planner.walk_c import _c, _ptr

_P = ctypes.c_void_p
_I = ctypes.c_int64
_D = ctypes.c_double


class _Cab(ctypes.Structure):
    """``_walk.c``'s ``Cab``: one cab's overlay (:func:`cab_overlay`)."""

    _fields_ = [
        ("n", _I),
        ("slots", _I),
        ("n_total", _I),
        *((name, _P) for name in ("g2l", "planned", "window_s", "tau_s", "rate_h", "prob")),
        ("vacant", _P),
        ("scale", _D),
        ("expm1", _P),
        ("expm1_data", _P),
        ("claims", _I),
        ("route", _P),
        ("n_route", _I),
        ("own_link", _I),
        ("pass_link", _P),
        ("pass_t", _P),
        ("n_pass", _I),
        ("alone", _I),
        ("seen", _I),
        ("now_s", _D),
        ("age", _D),
        ("n_claims", _I),
        ("n_passes", _I),
    ]


_declared = False


def _declare() -> None:
    """The overlay function's signature, once (the library is walk_c's)."""
    global _declared
    if not _declared:
        fn = walk_c.library().nagashi_cab_overlay
        fn.argtypes = [ctypes.POINTER(_Cab), _P, _P]
        fn.restype = ctypes.c_int
        _declared = True


_work = threading.local()


class CabInputs:
    """What :func:`cab_overlay` reads of one snapshot and table (set once by
    :func:`cab_inputs`: the snapshot's planned passes and vacant cabs, the table's ``W``,
    ``tau``, rates and ``P``), and the addresses the walk reads of every overlay made from it
    (:attr:`shared`); ``keep``: the arrays they point into."""

    __slots__ = ("keep", "shared", "slots", "struct")

    def __init__(self, struct: _Cab, shared: tuple[int | None, ...], keep: object) -> None:
        self.struct, self.slots = struct, int(struct.slots)
        self.shared, self.keep = shared, keep


def cab_inputs(
    g2l: npt.NDArray[np.int32],
    planned: F64,
    vacant: npt.NDArray[np.uint8],
    scale: float,
    claims: bool,
    table: ValueTable,
    window: F64,
    prob: F64,
) -> CabInputs | None:
    """The :class:`CabInputs` of a snapshot's read-out (``g2l``: the graph's global -> local
    links; ``planned``, ``vacant``: the snapshot's per local link; ``scale``: claims per hour
    of a planned pass; ``claims``: the snapshot claims some link; ``window``, ``prob``: the
    snapshot's shared ``W`` and ``P``), or None where the C walk does not run (then numpy
    computes each overlay)."""
    if not walk_c.ready():
        return None
    _declare()
    arrays = {
        "g2l": _c(g2l, np.int32),
        "planned": _c(planned, np.float64),
        "window_s": _c(table.window_s, np.float64),
        "tau_s": _c(table.prep.tau_s, np.float64),
        "rate_h": _c(table.rate_h, np.float64),
        "prob": _c(table.pickup_prob, np.float64),
        "vacant": _c(vacant, np.uint8),
    }
    c = _Cab()
    c.n, c.slots, c.n_total = table.prep.n, table.rate_h.shape[0], arrays["g2l"].shape[0]
    for name, a in arrays.items():
        setattr(c, name, _ptr(a))
    c.scale, c.claims = scale, int(claims)
    loop = walk_c.expm1_loop()
    assert loop is not None
    c.expm1, c.expm1_data = loop[0], loop[1] or None
    # the shared arrays of the overlays' walks: P, W, rates, the table's pass ages, vacant
    ages = table.pass_age_s
    shared = (
        _c(prob, np.float64),
        _c(window, np.float64),
        arrays["rate_h"],
        None if ages is None else _c(ages, np.float64),
        arrays["vacant"],
    )
    return CabInputs(c, tuple(_ptr(a) for a in shared), (arrays, shared))


def cab_overlay(
    inputs: CabInputs,
    route: Sequence[int],
    own_link: int,
    passes: dict[int, float] | None,
    alone: int,
    seen: bool,
    now_s: float,
    age: float,
) -> tuple[F64, int, int, int, int] | None:
    """One cab's overlay (agent.planner.fleet.SnapshotReadout.table_for, the same bits), as
    :class:`agent.planner.cab_view.CabOverlay` keeps it: one buffer whose first words are its
    links (the claimed ones, then its passes', both sorted: int64), then their values (the
    claimed links' ``W``, their ``P`` per slot, the passes' seen ages), the number of link
    words, the two counts and the buffer's address; None for a pass not on the graph (numpy
    decides)."""
    count = len(passes) if passes else 0
    n_route = len(route)
    n_links = n_route + count + 1
    buf = np.empty(n_links + n_route * (inputs.slots + 1) + count + 1, dtype=np.float64)
    at = buf.ctypes.data
    sc = _cab_scratch(max(n_route, count))
    c = _Cab.from_buffer_copy(inputs.struct)
    if n_route:
        sc.route[:n_route] = route
        c.route, c.n_route = sc.route_at, n_route
    if count:
        assert passes is not None
        sc.links[:count] = list(passes)
        sc.times[:count] = list(passes.values())
        c.pass_link, c.pass_t, c.n_pass = sc.links_at, sc.times_at, count
    c.own_link, c.alone, c.seen = own_link, alone, int(seen)
    c.now_s, c.age = now_s, age
    if walk_c.library().nagashi_cab_overlay(ctypes.byref(c), at, at + 8 * n_links) != 0:
        return None
    return buf, n_links, int(c.n_claims), int(c.n_passes), at


class _CabScratch:
    """This thread's input buffers of :func:`cab_overlay` and their addresses."""

    __slots__ = ("links", "links_at", "route", "route_at", "times", "times_at")

    def __init__(self, size: int) -> None:
        self.route = np.empty(size, dtype=np.int64)
        self.links = np.empty(size, dtype=np.int64)
        self.times = np.empty(size, dtype=np.float64)
        self.route_at, self.links_at = self.route.ctypes.data, self.links.ctypes.data
        self.times_at = self.times.ctypes.data


def _cab_scratch(size: int) -> _CabScratch:
    sc: _CabScratch | None = getattr(_work, "cab", None)
    if sc is None or sc.route.shape[0] < size:
        sc = _work.cab = _CabScratch(max(size, 2 * (0 if sc is None else sc.route.shape[0]), 256))
    return sc
