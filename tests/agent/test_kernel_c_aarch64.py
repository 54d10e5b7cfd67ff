"""The C backward pass gives the same bits on aarch64 (issue 20: the tablet's other CPU).

``agent/planner/_vi.c`` is built with ``setup.py``'s flags by the aarch64 cross compiler into a
static program (``tests/agent/vi_driver.c``, the pass without Python) and run under qemu on
the kernels of real Manhattan plans and on random kernels whose values span sixteen orders of
magnitude; the same program built for this machine (with AVX2 and without) runs the same
inputs. Every output array must be the same bytes. Where a kernel needs no BLAS (top-k
drop-offs), the outputs must also be numpy's pass, bit for bit; the exact drop-off product is
the driver's own plain sums on both machines (the cab checks numpy's ``cblas_dgemv`` against
``np.matmul`` itself when it loads the pass: ``kernel_c.load``).

Not covered here: the route read-out's ``_walk.c`` on aarch64, and numpy's own aarch64 loops
(which the numpy path and the read-out's Python reference run on).
"""

from __future__ import annotations

import ast
import dataclasses
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.planner import PlannerParams, core, kernel_c, plan_from_fix
from agent.planner import speed_factor_from_demand as speed_factor
from agent.planner._kernel_arrays import ROW_MAJOR, Work, pass_inputs
from agent.planner.terms import _top_k_dropoffs
from agent.planner.workspace import Workspace
from tests.agent.test_kernel_jit import _cases, _wide_kernel
from tests.components import require
from tests.conftest import REPO
from tiles import TileStore

DRIVER = REPO / "tests/agent/vi_driver.c"


def _same_bits_flags() -> list[str]:
    tree = ast.parse((REPO / "setup.py").read_text())  # (importing setup.py would run it)
    return list(
        next(
            ast.literal_eval(n.value)
            for n in tree.body
            if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "SAME_BITS"
        )
    )


def _build(cc: str, out: Path, *extra: str) -> Path:
    cmd = [cc, *_same_bits_flags(), "-DNAGASHI_NO_PYTHON", *extra, str(DRIVER), "-o", str(out),
           "-lm"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def drivers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """The command of each build: aarch64 under qemu, this machine's with and without AVX2."""
    cross = require("aarch64-gcc")
    qemu = require("qemu-aarch64")
    d = tmp_path_factory.mktemp("vi-driver")
    arm = _build(cross, d / "vi_aarch64", "-static")
    native = shutil.which("cc") or shutil.which("gcc")
    assert native is not None, "no C compiler (pip install needs one to build the C pass)"
    return {
        "aarch64": [qemu, str(arm)],
        "native": [str(_build(native, d / "vi_native"))],
        "native-scalar": [str(_build(native, d / "vi_scalar", "-DNAGASHI_NO_SIMD"))],
    }


def _inputs(kn: core._Kernel) -> tuple[bytes, dict[str, Any]]:
    """The pass's struct (every address zeroed: none of this process goes to the driver) and
    its arrays by field, as ``kernel_c.backward_pass`` would pass them; the drop-off matrix
    made contiguous (rows of ``n_cells``)."""
    _, _, a, w = pass_inputs(kn, None)
    o = kernel_c.order_of(a)
    arrays: dict[str, Any] = {name: getattr(a, name) for name in kernel_c._INPUTS}
    arrays.update({name: getattr(w, name) for name in Work._fields})
    arrays.update({name: getattr(o, name) for name in kernel_c.Order._fields})
    if kn.p_in.size:
        arrays["p_in"] = np.ascontiguousarray(kn.p_in, dtype=np.float64)
    raw = bytearray(bytes(kernel_c._struct(kn, a, w, (ROW_MAJOR, max(int(kn.n_cells), 1)), o)))
    for name, kind in kernel_c._FIELDS:
        if kind is kernel_c._P:
            off = getattr(kernel_c._Pass, name).offset
            raw[off : off + 8] = bytes(8)
    return bytes(raw), arrays


def _run(cmd: list[str], kn: core._Kernel) -> dict[str, bytes]:
    """The driver's run of ``kn``: each of its arrays' bytes after the pass."""
    raw, arrays = _inputs(kn)
    data = {name: np.ascontiguousarray(arr).tobytes() for name, arr in arrays.items()}
    blob = [struct.pack("<QQQ", len(raw), len(data), kernel_c._Pass.gemv.offset), raw]
    for name, b in data.items():
        blob += [struct.pack("<QQ", getattr(kernel_c._Pass, name).offset, len(b)), b]
    done = subprocess.run(cmd, input=b"".join(blob), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert struct.unpack("<q", done.stdout[:8])[0] == 0
    out, at = {}, 8
    for name, b in data.items():
        out[name] = done.stdout[at : at + len(b)]
        at += len(b)
    assert at == len(done.stdout)
    return out


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


#: what the pass writes: every buffer of ``Work`` but ``best`` (the numba pass's scratch; the C
#: pass never touches it, so it holds what ``np.empty`` left there)
OUTPUTS = tuple(f for f in Work._fields if f != "best")


def _outputs(got: dict[str, bytes]) -> dict[str, bytes]:
    return {name: got[name] for name in OUTPUTS}


def _check(drivers: dict[str, list[str]], kn: core._Kernel) -> None:
    runs = {name: _outputs(_run(cmd, kn)) for name, cmd in drivers.items()}
    for name in ("native", "native-scalar"):
        for field in OUTPUTS:
            assert runs["aarch64"][field] == runs[name][field], (name, field)
    if kn.p_top_idx.size or kn.n_cells == 0:  # no BLAS: numpy's pass, bit for bit
        want = core._numpy_backward_pass(kn)
        assert runs["aarch64"]["vflat"] == want[0].tobytes()
        assert runs["aarch64"]["cflat"] == want[1].tobytes()
        assert runs["aarch64"]["exit_value"] == want[2].tobytes()
        assert runs["aarch64"]["slope_v"] == want[3].tobytes()
        assert runs["aarch64"]["slope_c"] == want[4].tobytes()


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
    cross = require("aarch64-gcc")
    fused = tmp_path / "vi_fused"
    flags = [f for f in _same_bits_flags() if not f.startswith("-ffp-contract")]
    cmd = [cross, *flags, "-ffp-contract=fast", "-DNAGASHI_NO_PYTHON", "-static", str(DRIVER),
           "-o", str(fused), "-lm"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    fused_cmd = [drivers["aarch64"][0], str(fused)]
    kn = _top_k(_wide_kernel(0), 5)
    assert _outputs(_run(fused_cmd, kn))["vflat"] != _outputs(_run(drivers["aarch64"], kn))["vflat"]
