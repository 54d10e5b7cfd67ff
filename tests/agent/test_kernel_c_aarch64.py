"""The C backward pass gives the same bits on aarch64 (issue 20: the tablet's other CPU).

``agent/planner/_vi.c`` is built with ``setup.py``'s flags by the aarch64 cross compiler into a
static program (``tests/agent/vi_driver.c``, the pass without Python) and run under qemu on
the kernels of real Manhattan plans and on random kernels whose values span sixteen orders of
magnitude; the same program built for this machine (with AVX2 and without) runs the same
inputs. Every output array must be the same bytes. Where a kernel needs no BLAS (top-k
drop-offs), the outputs must also be numpy's pass, bit for bit; the exact drop-off product is
the driver's own plain sums on both machines (the cab checks numpy's ``cblas_dgemv`` against
``np.matmul`` itself when it loads the pass: ``kernel_c.load``).

The route read-out's ``_walk.c`` likewise (``tests/agent/walk_driver.c``): the walks of real
plans' read-outs, recorded as ``walk_c.follow`` hands them over, give the same route, length
and duration on aarch64, on this machine's build and in the installed library. numpy's
``expm1`` loop (which the walk calls for the depleted probability) is not on the qemu side, so
all three call the drivers' own ``plain_expm1`` (the cab checks numpy's loop against
``np.expm1`` when the walk loads: ``walk_c.load``). numpy's own aarch64 loops and BLAS, with
both files built as aarch64 libraries, are run end to end by replaying a drive's log on an
aarch64 CPython (``tests/agent/test_runtime.py``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.planner import PlannerParams, core, kernel_c, plan_from_fix, walk_c
from agent.planner import speed_factor_from_demand as speed_factor
from agent.planner._kernel_arrays import ROW_MAJOR, Work, pass_inputs
from agent.planner.terms import _top_k_dropoffs
from agent.planner.workspace import Workspace
from tests.agent.cflags import c_compiler, setup_py_same_bits
from tests.agent.test_kernel_jit import _cases, _wide_kernel
from tests.components import require
from tests.conftest import REPO
from tiles import TileStore

DRIVER = REPO / "tests/agent/vi_driver.c"
WALK_DRIVER = REPO / "tests/agent/walk_driver.c"


def _build(cc: str, out: Path, *extra: str, source: Path = DRIVER) -> Path:
    cmd = [cc, *setup_py_same_bits(), "-DNAGASHI_NO_PYTHON", *extra, str(source), "-o", str(out),
           "-lm"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def drivers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """The command of each build: aarch64 under qemu, this machine's with and without AVX2."""
    cross = require("aarch64-gcc")
    require("aarch64-libc")
    qemu = require("qemu-aarch64")
    d = tmp_path_factory.mktemp("vi-driver")
    arm = _build(cross, d / "vi_aarch64", "-static")
    native = c_compiler()
    return {
        "aarch64": [qemu, str(arm)],
        "native": [str(_build(native, d / "vi_native"))],
        "native-scalar": [str(_build(native, d / "vi_scalar", "-DNAGASHI_NO_SIMD"))],
        "walk-aarch64": [
            qemu,
            str(_build(cross, d / "walk_aarch64", "-static", source=WALK_DRIVER)),
        ],
        "walk-native": [str(_build(native, d / "walk_native", source=WALK_DRIVER))],
    }


#: an array of the input: its pointer field's offset, kind (0: the field points at it; 1: at
#: a table of pointers to its blocks), bytes and block size (kind 1)
_Array = tuple[int, int, bytes, int]


def _drive(
    cmd: list[str], raw: bytes, fn_at: int, arrays: list[_Array]
) -> tuple[int, bytes, list[bytes]]:
    """Run a driver (tests/agent/driver_io.h): its return code, the struct after it and each
    array's bytes after it."""
    blob = [struct.pack("<QQQ", len(raw), len(arrays), fn_at), raw]
    for at, kind, data, block in arrays:
        blob.append(struct.pack("<QQQ", at, kind, len(data)))
        if kind == 1:
            blob.append(struct.pack("<Q", block))
        blob.append(data)
    done = subprocess.run(cmd, input=b"".join(blob), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout
    rc = struct.unpack("<q", out[:8])[0]
    at = 8 + len(raw)
    after = []
    for _, _, data, _ in arrays:
        after.append(out[at : at + len(data)])
        at += len(data)
    assert at == len(out)
    return rc, out[8 : 8 + len(raw)], after


def _zeroed(raw: bytes, fields: Any, cls: Any, pointer: Any) -> bytes:
    """The struct's bytes with every address zeroed: none of this process goes to a driver."""
    out = bytearray(raw)
    for name, kind, *_ in fields:
        if kind is pointer:
            off = getattr(cls, name).offset
            out[off : off + 8] = bytes(8)
    return bytes(out)


def _pass_run(cmd: list[str], kn: core._Kernel) -> dict[str, bytes]:
    """vi_driver's run of ``kn``, as ``kernel_c.backward_pass`` would pass it (the drop-off
    matrix made contiguous, rows of ``n_cells``): each array's bytes after the pass."""
    _, _, a, w = pass_inputs(kn, None)
    o = kernel_c.order_of(a)
    named: dict[str, Any] = {name: getattr(a, name) for name in kernel_c._INPUTS}
    named.update({name: getattr(w, name) for name in Work._fields})
    named.update({name: getattr(o, name) for name in kernel_c.Order._fields})
    if kn.p_in.size:
        named["p_in"] = np.ascontiguousarray(kn.p_in, dtype=np.float64)
    s = kernel_c._struct(kn, a, w, (ROW_MAJOR, max(int(kn.n_cells), 1)), o)
    raw = _zeroed(bytes(s), kernel_c._FIELDS, kernel_c._Pass, kernel_c._P)
    arrays = [
        (getattr(kernel_c._Pass, name).offset, 0, np.ascontiguousarray(arr).tobytes(), 0)
        for name, arr in named.items()
    ]
    rc, _, after = _drive(cmd, raw, kernel_c._Pass.gemv.offset, arrays)
    assert rc == 0
    return dict(zip(named, after, strict=True))


def _top_k(kn: core._Kernel, k: int) -> core._Kernel:
    idx, val = _top_k_dropoffs(kn.p_in, k)
    return dataclasses.replace(kn, p_top_idx=idx, p_top_val=val)


@pytest.fixture(scope="module")
def real_kernels(manhattan: tuple[TileStore, Any]) -> list[core._Kernel]:
    """The kernels of real radius plans: exact drop-offs, and the top eight per cell."""
    store, table = manhattan
    kernels: list[core._Kernel] = []
    dispatch = core._backward_pass

    def capture(kn: core._Kernel, ws: Workspace | None = None) -> Any:
        kernels.append(kn)
        return dispatch(kn, ws)

    base = PlannerParams(speed_factor=speed_factor(table, store.all()), horizon_s=900.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(core, "_backward_pass", capture)
        for i, case in enumerate(_cases(store, 4)):
            params = dataclasses.replace(base, dropoff_top_k=8) if i % 2 else base
            plan_from_fix(store, table, *case, params)
    assert len(kernels) == 4 and sum(k.p_top_idx.size > 0 for k in kernels) == 2
    return kernels


PASS_BUILDS = ("aarch64", "native", "native-scalar")

#: what the pass writes: every buffer of ``Work`` but ``best`` (the numba pass's scratch; the C
#: pass never touches it, so it holds what ``np.empty`` left there)
OUTPUTS = tuple(f for f in Work._fields if f != "best")


def _outputs(got: dict[str, bytes]) -> dict[str, bytes]:
    return {name: got[name] for name in OUTPUTS}


def _check(drivers: dict[str, list[str]], kn: core._Kernel) -> None:
    runs = {name: _outputs(_pass_run(drivers[name], kn)) for name in PASS_BUILDS}
    for name in ("native", "native-scalar"):
        for field in OUTPUTS:
            assert runs["aarch64"][field] == runs[name][field], (name, field)
    if kn.p_top_idx.size or kn.n_cells == 0:  # no BLAS: numpy's pass, bit for bit
        want = core._numpy_backward_pass(kn)  # (V, C, exit value, slope_v, slope_c)
        fields = ("vflat", "cflat", "exit_value", "slope_v", "slope_c")
        for field, arr in zip(fields, want, strict=True):
            assert runs["aarch64"][field] == arr.tobytes(), field


def test_real_plans_kernels_give_the_same_bits_on_aarch64(
    drivers: dict[str, list[str]], real_kernels: list[core._Kernel]
) -> None:
    for kn in real_kernels:
        _check(drivers, kn)


@pytest.mark.parametrize("seed", range(3))
def test_values_of_sixteen_orders_of_magnitude_give_the_same_bits_on_aarch64(
    drivers: dict[str, list[str]], seed: int
) -> None:
    """Where another order of the sums or a fused multiply-add shows (``_wide_kernel``):
    exact drop-offs, and the top five per cell (then numpy's bits too)."""
    kn = _wide_kernel(seed)
    _check(drivers, kn)
    _check(drivers, _top_k(kn, 5))


def test_with_fused_multiply_adds_aarch64_gives_other_bits(
    drivers: dict[str, list[str]], tmp_path: Path
) -> None:
    """The comparison catches what it is there for: the same source built for aarch64 with
    ``-ffp-contract=fast`` (GCC then fuses multiply-adds there, as setup.py's flags forbid)
    gives other bits on the wide kernels."""
    # (the last -ffp-contract given is the one GCC takes: this one, after setup.py's "off")
    fused = _build(require("aarch64-gcc"), tmp_path / "vi_fused", "-static", "-ffp-contract=fast")
    fused_cmd = [drivers["aarch64"][0], str(fused)]
    kn = _top_k(_wide_kernel(0), 5)
    assert _pass_run(fused_cmd, kn)["vflat"] != _pass_run(drivers["aarch64"], kn)["vflat"]


def _walk_inputs(s: Any) -> tuple[bytes, list[_Array]]:
    """A walk's struct (``walk_c._Walk``, as ``walk_c.follow`` hands it to ``nagashi_walk``)
    and the arrays its fields point at, read from this process's memory by the sizes the
    struct gives (the walk reads no further): per link, per layer, per row of the tables, the
    allowed mask of every minute of its span (kind 1), the route's buffer and the trace."""
    n, rows = int(s.n), int(s.values_rows)
    layers = int(s.n_layers)
    slots = 1 + max(_ctypes_array(s.layer_slot, layers, np.int64).tolist() or [0])
    fwd_n = int(_ctypes_array(s.fwd_off, n + 1, np.int64)[-1])
    arc_n = int(_ctypes_array(s.arc_off, n + 1, np.int64)[-1])
    sizes = {
        "fwd_off": 8 * (n + 1), "fwd_dst": 8 * fwd_n, "arc_off": 8 * (n + 1), "arc_dst": 8 * arc_n,
        "cell": 8 * n, "layer_slot": 8 * layers, "length_m": 8 * n, "tau_s": 8 * n,
        "values": 8 * rows * n, "cont": 8 * int(s.cont_rows) * int(s.cont_width),
        "fare": 8 * n, "cost": 8 * n, "trip_layers": 8 * n, "slope_v": 8 * layers,
        "slope_c": 8 * layers, "prob": 8 * slots * n, "window_s": 8 * n,
        "rate_h": 8 * slots * n, "pass_age": 8 * n, "last_pass": 8 * n, "live": n,
        "route": 8 * (int(s.n_prefix) + int(s.max_edges) + 1), "own_t": 8 * n, "visits": 4 * n,
        "trace": 8 * int(s.max_edges),
    }  # fmt: skip
    for name in walk_c._OVERLAY:  # a plain table's walk: no cab's view of the fleet
        assert not getattr(s, name), name
    arrays: list[_Array] = []
    for name, size in sizes.items():
        addr = getattr(s, name)
        if addr:
            arrays.append((getattr(walk_c._Walk, name).offset, 0, ctypes.string_at(addr, size), 0))
    table = (ctypes.c_void_p * int(s.mask_count)).from_address(s.masks)
    assert all(table), "every minute's mask handed over before the walk"
    masks = b"".join(ctypes.string_at(int(m or 0), n) for m in table)
    arrays.append((walk_c._Walk.masks.offset, 1, masks, n))
    raw = _zeroed(bytes(s), walk_c._Walk._fields_, walk_c._Walk, walk_c._P)
    return raw, arrays


def _ctypes_array(addr: int, count: int, dtype: Any) -> Any:
    return np.frombuffer(ctypes.string_at(addr, count * np.dtype(dtype).itemsize), dtype=dtype)


#: numpy's expm1 loop's signature (``walk_c``'s ``loop_fn``)
_LOOP = ctypes.CFUNCTYPE(
    None,
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.POINTER(ctypes.c_ssize_t),
    ctypes.POINTER(ctypes.c_ssize_t),
    ctypes.c_void_p,
)


def _plain_expm1_py(args: Any, dims: Any, steps: Any, data: Any) -> None:
    """walk_driver.c's plain_expm1 in Python: the same operations, so the same bits."""
    for i in range(dims[0]):
        x = ctypes.c_double.from_address(args[0] + i * steps[0]).value
        y = x * (1.0 + x * (0.5 + x / 6.0))
        ctypes.c_double.from_address(args[1] + i * steps[1]).value = y


_PLAIN_EXPM1 = _LOOP(_plain_expm1_py)

#: a walk's inputs, and what the installed walk gave with plain_expm1: the route, length, time
Walked = tuple[bytes, list[_Array], list[int], float, float]


class _Recorder:
    """``walk_c._lib`` that keeps each walk's inputs before it runs (every minute's mask handed
    over first, so one call walks the whole route) and runs the installed walk on them with
    walk_driver.c's ``plain_expm1`` (then the real walk, as the plan asked)."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        self.walks: list[Walked] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lib, name)

    def nagashi_walk(self, ref: Any) -> int:
        s = ref._obj
        last = walk_c._LAST_VIEW
        assert last is not None
        table, tmpl = last[0], last[1]
        for i in range(len(tmpl.masks)):
            if not tmpl.masks[i]:
                tmpl.add_minute(table, tmpl.mask_lo + i)
        raw, arrays = _walk_inputs(s)
        plain = walk_c._Walk.from_buffer_copy(s)  # (the same buffers: the walk restores them)
        plain.expm1 = ctypes.cast(_PLAIN_EXPM1, ctypes.c_void_p).value
        plain.expm1_data = None
        assert self._lib.nagashi_walk(ctypes.byref(plain)) == 0
        route = _ctypes_array(plain.route, int(plain.n_route), np.int64).tolist()
        self.walks.append((raw, arrays, route, plain.length, plain.t))
        return int(self._lib.nagashi_walk(ref))


@pytest.fixture(scope="module")
def real_walks(manhattan: tuple[TileStore, Any]) -> list[Walked]:
    """The C walks of the read-outs of real radius plans, their inputs and results."""
    store, table = manhattan
    assert walk_c.ready(), walk_c.status()
    rec = _Recorder(walk_c._lib)
    params = PlannerParams(speed_factor=speed_factor(table, store.all()), horizon_s=900.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(walk_c, "_lib", rec)
        for case in _cases(store, 6):
            plan_from_fix(store, table, *case, params)
    assert len(rec.walks) >= 6
    return rec.walks


def test_real_read_out_walks_are_the_same_on_aarch64(
    drivers: dict[str, list[str]], real_walks: list[Walked]
) -> None:
    """The same route, length, duration and per-link state, bit for bit, on aarch64, on this
    machine's build of the driver and in the installed walk (all three with plain_expm1)."""
    route_at = walk_c._Walk.route.offset
    fn_at = walk_c._Walk.expm1.offset
    lengths: list[int] = []
    for raw, arrays, want, length, t in real_walks:
        rc_a, s_a, after_a = _drive(drivers["walk-aarch64"], raw, fn_at, arrays)
        rc_n, s_n, after_n = _drive(drivers["walk-native"], raw, fn_at, arrays)
        assert rc_a == rc_n == 0
        assert after_a == after_n
        got_a, got_n = walk_c._Walk.from_buffer_copy(s_a), walk_c._Walk.from_buffer_copy(s_n)
        for name in ("n_route", "e", "started", "length", "t", "need_minute"):
            assert getattr(got_a, name) == getattr(got_n, name), name
        i = next(i for i, a in enumerate(arrays) if a[0] == route_at)
        route = np.frombuffer(after_a[i], dtype=np.int64)[: got_a.n_route].tolist()
        assert route == want
        lengths.append(len(route))
        assert struct.pack("<dd", got_a.length, got_a.t) == struct.pack("<dd", length, t)
    assert sum(k > 1 for k in lengths) >= 4, lengths  # (a plan may have no route: a dead end)


def test_the_walk_comparison_sees_a_changed_input(
    drivers: dict[str, list[str]], real_walks: list[Walked]
) -> None:
    """The comparison can fail: the same walk with every link's travel time one ulp longer
    ends at another time on aarch64 than the installed walk's."""
    raw, arrays, _, _, t = next(w for w in real_walks if len(w[2]) > 1)
    tau_at = walk_c._Walk.tau_s.offset
    changed = [
        (at, kind, np.nextafter(np.frombuffer(data), np.inf).tobytes() if at == tau_at else data, b)
        for at, kind, data, b in arrays
    ]
    _, s_a, _ = _drive(drivers["walk-aarch64"], raw, walk_c._Walk.expm1.offset, changed)
    got = walk_c._Walk.from_buffer_copy(s_a)
    assert struct.pack("<d", got.t) != struct.pack("<d", t)
