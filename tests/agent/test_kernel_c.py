"""The C backward pass (``agent/planner/_vi.c``, built by the install) equals the numpy one bit
for bit, needs no numba, and gives way to numba or numpy when it is turned off (issue 20)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.planner import PlannerParams, core, kernel_c, kernel_jit, plan_from_fix
from agent.planner import speed_factor_from_demand as speed_factor
from agent.planner.workspace import Workspace
from tests.agent.cflags import c_compiler, setup_py_same_bits
from tests.agent.test_kernel_jit import _cases, _wide_kernel
from tests.conftest import REPO
from tiles import TileStore


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()  # every value, every bit (and -0.0 vs 0.0)


def test_the_install_built_it_and_the_agent_runs_it() -> None:
    # pip install (setup.py) compiles it; a machine without a C compiler plans on numpy
    assert kernel_c.library_path() is not None, "agent/planner/_vi.c was not built"
    assert kernel_c.ready(), kernel_c.status()
    assert kernel_jit.ready() is kernel_c.backward_pass
    assert kernel_jit.compiled_pass() == "c"
    assert kernel_jit.status()["c"] == {"state": "ready", "error": None}


@pytest.fixture(params=["simd", "scalar"])
def simd_or_scalar(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The action values with AVX2 (where this CPU has it) and with the scalar loop."""
    monkeypatch.setenv("NAGASHI_VI_SIMD", "1" if request.param == "simd" else "0")
    return str(request.param)


def test_real_plans_are_the_same_bytes_in_c_and_on_numpy(
    manhattan: tuple[TileStore, Any], simd_or_scalar: str
) -> None:
    store, table = manhattan
    params = PlannerParams(speed_factor=speed_factor(table, store.all()))
    kernels: list[core._Kernel] = []
    dispatch = core._backward_pass

    def capture(kn: core._Kernel, ws: Workspace | None = None) -> Any:
        kernels.append(kn)
        return dispatch(kn, ws)

    for case in _cases(store, 8):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(core, "_backward_pass", capture)
            in_c = plan_from_fix(store, table, *case, params).to_json()
        with kernel_jit.suspended():
            assert plan_from_fix(store, table, *case, params).to_json() == in_c
    assert len(kernels) == 8
    ws = Workspace()
    for kn in kernels:  # the pass alone, fresh arrays and a kept workspace's
        want = core._numpy_backward_pass(kn)
        _same(want, kernel_c.backward_pass(kn))
        _same(want, kernel_c.backward_pass(kn, ws))


def test_every_bit_where_the_order_of_operations_shows_and_every_layout(
    simd_or_scalar: str,
) -> None:
    """Values over sixteen orders of magnitude (another order of the sums or a fused
    multiply-add gives other bits), the drop-off matrix row-major, column-major and a column
    slice of a wider one, and the top-k drop-offs."""
    for seed in range(4):
        kn = _wide_kernel(seed)
        want = core._numpy_backward_pass(kn)
        rows = want[0][: kn.n_layers]
        assert sum(np.add.reduce(r) != sum(r.tolist()) for r in rows) > kn.n_layers // 2
        for p_in in (kn.p_in, np.ascontiguousarray(kn.p_in), np.asfortranarray(kn.p_in)):
            other = dataclasses.replace(kn, p_in=p_in)
            # (numpy's own product has other bits for a column-major matrix: BLAS sums in
            # another order; the C pass gives numpy's bits for each layout)
            _same(core._numpy_backward_pass(other), kernel_c.backward_pass(other))
    kn = _wide_kernel(9)
    idx = np.argsort(-kn.p_in, axis=1, kind="stable")[:, :5].T.copy()
    val = np.take_along_axis(kn.p_in, idx.T, axis=1).T.copy()
    top = dataclasses.replace(kn, p_top_idx=idx, p_top_val=val)
    _same(core._numpy_backward_pass(top), kernel_c.backward_pass(top))
    # a matrix neither row- nor column-contiguous: numpy makes no BLAS call, nor does this
    big = np.zeros((2 * kn.n_cells, 2 * kn.n_cells))
    big[::2, ::2] = kn.p_in
    strided = dataclasses.replace(kn, p_in=big[::2, ::2])
    assert not strided.p_in.flags.c_contiguous and not strided.p_in.flags.f_contiguous
    _same(core._numpy_backward_pass(strided), kernel_c.backward_pass(strided))


def test_nan_and_no_allowed_successor_as_numpy_has_them(simd_or_scalar: str) -> None:
    """np.maximum's NaN (from either side, and the first of two) and the exit value where
    every successor is closed (-inf), through the successor maximum's runs of each degree and
    the action values' last links (a count of links not a multiple of four)."""
    for seed in range(3):
        kn = _wide_kernel(seed)
        fare = kn.fare.copy()
        fare[::37] = np.nan
        m = kn.cz.shape[0] - 3
        cut = dataclasses.replace(
            kn,
            cz=kn.cz[:m], v_off=kn.v_off[:m], v_wpos=kn.v_wpos[:m], v_wneg=kn.v_wneg[:m],
            c_off=kn.c_off[:m], c_wpos=kn.c_wpos[:m], c_wneg=kn.c_wneg[:m], fare=fare[:m],
            cost=kn.cost[:m], prob=kn.prob[:, :m].copy(), prob_early=kn.prob_early[:, :m].copy(),
            penalty=np.where(np.arange(m) % 3 == 0, -np.inf, kn.penalty[:, :m]),
            columns=[np.minimum(c, m) for c in kn.columns],
        )  # fmt: skip
        want = core._numpy_backward_pass(cut)
        assert np.isnan(want[0]).any() and np.isfinite(want[0]).any()
        for x, y in zip(want, kernel_c.backward_pass(cut), strict=True):
            # NaN where numpy has NaN (its sign and payload are not kept: numpy's own loops
            # need not keep them either), every other value bit for bit
            assert np.array_equal(np.isnan(x), np.isnan(y))
            assert x[~np.isnan(x)].tobytes() == y[~np.isnan(y)].tobytes()


def test_built_without_simd_as_on_aarch64_the_same_bits(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The library as a machine without AVX2 intrinsics builds it (``-DNAGASHI_NO_SIMD``, the
    branch aarch64 takes): it compiles with setup.py's flags and gives numpy's bits."""
    import sysconfig

    cc = c_compiler()
    lib = tmp_path / "_vi_scalar.so"
    include = "-I" + sysconfig.get_paths()["include"]
    source = str(REPO / "agent/planner/_vi.c")
    flags = [*setup_py_same_bits(), "-DNAGASHI_NO_SIMD", "-fPIC", "-shared", include]
    subprocess.run([cc, *flags, source, "-o", str(lib)], check=True, capture_output=True)
    monkeypatch.setattr(kernel_c, "_state", "idle")
    monkeypatch.setattr(kernel_c, "library_path", lambda: str(lib))
    assert kernel_c.load(), kernel_c.status()
    for seed in range(3):
        kn = _wide_kernel(seed)
        _same(core._numpy_backward_pass(kn), kernel_c.backward_pass(kn))


def test_turned_off_it_gives_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAGASHI_KERNEL_C", "0")
    assert not kernel_c.ready() and kernel_jit.ready() is not kernel_c.backward_pass
    assert kernel_c.status()["state"] == "disabled"
    monkeypatch.setenv("NAGASHI_KERNEL_C", "1")
    monkeypatch.setenv("NAGASHI_JIT", "0")  # no compiled pass at all: numpy
    assert kernel_jit.ready() is None and kernel_jit.compiled_pass() == "numpy"
    monkeypatch.delenv("NAGASHI_JIT")
    with kernel_jit.suspended():  # the benchmarks' numpy twin
        assert kernel_jit.ready() is None
    assert kernel_jit.compiled_pass() == "c"


def test_a_library_that_is_not_there_is_the_numpy_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_c, "_state", "idle")
    monkeypatch.setattr(kernel_c, "library_path", lambda: None)
    assert not kernel_c.load()
    assert kernel_c.status() == {"state": "unavailable", "error": "not built"}
    kn = _wide_kernel(1)
    _same(core._numpy_backward_pass(kn), kernel_c.backward_pass(kn))  # the numpy path


def test_a_new_kernel_input_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_c, "_state", "idle")
    monkeypatch.setattr(kernel_jit, "KNOWN_FIELDS", kernel_jit.KNOWN_FIELDS - {"p_out"})
    assert not kernel_c.ready()
    st = kernel_c.status()
    assert st["state"] == "failed" and "p_out" in str(st["error"])


def test_a_fresh_agent_process_plans_in_c_without_numba(
    manhattan: tuple[TileStore, Any], manhattan_tiles: Path, manhattan_demand: Path
) -> None:
    """The cab's path: a plan in C, numba never imported (its JIT holds ~130 MB)."""
    store, table = manhattan
    plans = [(c, plan_from_fix(store, table, *c, PlannerParams())) for c in _cases(store, 8)]
    case, want = next((c, p) for c, p in plans if p.edges)  # a plan with a route to show
    code = (
        "import json, sys\n"
        "from agent.planner import PlannerParams, kernel_jit, plan_from_fix\n"
        "from models import DemandTable\n"
        "from tiles import TileStore\n"
        f"store = TileStore({str(manhattan_tiles)!r})\n"
        f"table = DemandTable.load({str(manhattan_demand)!r})\n"
        f"plan = plan_from_fix(store, table, *{case!r}, PlannerParams())\n"
        "print(json.dumps([kernel_jit.compiled_pass(), 'numba' in sys.modules,\n"
        "                  plan.to_json().decode()]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    used, numba_loaded, got = json.loads(done.stdout.strip().splitlines()[-1])
    assert used == "c" and not numba_loaded
    assert got == want.to_json().decode()
