"""The numba-compiled backward pass (the ``jit`` extra) equals the numpy one bit for bit, and the
planner falls back to numpy without it (issue 20)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from agent.planner import PlannerParams, core, kernel_jit, plan_from_fix, speed_factor_from_demand
from agent.planner.workspace import Workspace
from tiles import TileStore


def _cases(store: TileStore, k: int) -> list[tuple[float, float, float, float]]:
    """Seeded fixes on cruisable links and minutes of the week (as bench cruise draws them)."""
    full = store.all()
    rng = np.random.default_rng(20)
    cand = np.flatnonzero(full.cruise_allowed())
    picks = cand[rng.integers(0, cand.shape[0], k)]
    out = []
    for e in picks.tolist():
        f = float(rng.uniform(0.1, 0.9))
        lon = float(full.u_lon[e] + f * (full.v_lon[e] - full.u_lon[e]))
        lat = float(full.u_lat[e] + f * (full.v_lat[e] - full.u_lat[e]))
        out.append((lon, lat, float(full.bearing_start[e]), float(rng.uniform(0, 7 * 1440))))
    return out


@pytest.fixture(autouse=True)
def _numba_not_c(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are numba's: the C pass (tests/agent/test_kernel_c.py) is turned off."""
    monkeypatch.setenv("NAGASHI_KERNEL_C", "0")


def _numpy_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_jit, "_compiled", None)
    monkeypatch.setattr(kernel_jit, "_state", "disabled")  # no warm-up thread either


def test_compiled_backward_pass_is_bit_identical(
    manhattan: tuple[TileStore, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("numba")
    store, table = manhattan
    monkeypatch.setattr(kernel_jit, "_compiled", None)
    monkeypatch.setattr(kernel_jit, "_state", "idle")
    jit = kernel_jit.warm_up()
    assert jit is not None, kernel_jit.status()
    assert kernel_jit.status()["state"] == "ready"
    from agent.planner import _kernel_numba

    def signatures() -> set[Any]:
        return set(_kernel_numba._run.signatures) | set(_kernel_numba._run_gemv.signatures)

    compiled = signatures()  # the warm-up compiled (or loaded) these
    # the kernels of real plans, solved by numpy (captured on the way), then compiled
    kernels: list[core._Kernel] = []
    numpy_pass = core._backward_pass

    def capture(kn: core._Kernel, ws: Workspace | None = None) -> Any:
        kernels.append(kn)
        return numpy_pass(kn, ws)

    params = PlannerParams(speed_factor=speed_factor_from_demand(table, store.all()))
    jit_plans = []
    cases = _cases(store, 8)
    for lon, lat, heading, minute in cases:  # whole plans with the compiled pass
        jit_plans.append(plan_from_fix(store, table, lon, lat, heading, minute, params).to_json())
    # real plans need no signature the warm-up did not compile: no JIT time on a tick
    assert signatures() == compiled
    _numpy_only(monkeypatch)
    monkeypatch.setattr(core, "_backward_pass", capture)
    for (lon, lat, heading, minute), want in zip(cases, jit_plans, strict=True):
        plan = plan_from_fix(store, table, lon, lat, heading, minute, params)
        assert plan.to_json() == want  # the canonical plan bytes
    assert len(kernels) == len(cases)
    # numpy's BLAS called directly where numpy's own product is matched (it is with numpy's
    # wheels), else object mode for np.matmul: both give numpy's bits
    assert _kernel_numba.gemv_matches_numpy() == _kernel_numba.USE_GEMV
    gemv = [_kernel_numba.USE_GEMV, False]
    for i, kn in enumerate(kernels):
        monkeypatch.setattr(_kernel_numba, "USE_GEMV", gemv[i % 2])
        a, b = numpy_pass(kn), jit(kn)
        for x, y in zip(a, b, strict=True):
            assert x.dtype == y.dtype and x.shape == y.shape
            assert x.tobytes() == y.tobytes()  # every value, every bit (and -0.0 vs 0.0)


def test_without_numba_the_numpy_path_plans(
    manhattan: tuple[TileStore, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, table = manhattan
    monkeypatch.setenv("NAGASHI_JIT", "0")
    monkeypatch.setattr(kernel_jit, "_compiled", None)
    monkeypatch.setattr(kernel_jit, "_state", "idle")
    assert not kernel_jit.available()
    assert kernel_jit.warm_up() is None and kernel_jit.ready() is None
    assert kernel_jit.status()["state"] == "unavailable"
    plans = [plan_from_fix(store, table, *c, PlannerParams()) for c in _cases(store, 3)]
    assert any(p.edges for p in plans)
    kernel_jit.start_warm_up(delay_s=0.0)  # nothing to start
    assert kernel_jit._state == "disabled"


def test_a_new_kernel_input_turns_the_compiled_path_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("numba")
    monkeypatch.setattr(kernel_jit, "_compiled", None)
    monkeypatch.setattr(kernel_jit, "_state", "idle")
    monkeypatch.setattr(kernel_jit, "KNOWN_FIELDS", kernel_jit.KNOWN_FIELDS - {"p_out"})
    assert kernel_jit.warm_up() is None
    st = kernel_jit.status()
    assert st["state"] == "failed" and "p_out" in st["error"]
    # said, not only kept in status(): the plans go on, on the numpy path
    (rec,) = [r for r in caplog.records if r.name == "agent.planner.kernel_jit"]
    assert rec.levelname == "WARNING" and "numpy path" in rec.message and "p_out" in rec.message


def test_top_k_dropoffs_are_the_same_bits_compiled_and_named_in_the_plan(
    manhattan: tuple[TileStore, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dropoff_top_k``: the approximation runs compiled and on numpy with the same bits, says
    so in the plan's params (exact plans do not carry the key), and with k at least the number
    of cells it is the exact solver up to the order of the sums."""
    import dataclasses
    import json

    pytest.importorskip("numba")
    store, table = manhattan
    monkeypatch.setattr(kernel_jit, "_compiled", None)
    monkeypatch.setattr(kernel_jit, "_state", "idle")
    assert kernel_jit.warm_up() is not None, kernel_jit.status()
    exact = PlannerParams(speed_factor=speed_factor_from_demand(table, store.all()))
    near = dataclasses.replace(exact, dropoff_top_k=6)
    every = dataclasses.replace(exact, dropoff_top_k=10_000)
    for case in _cases(store, 3):
        compiled = plan_from_fix(store, table, *case, near)
        with kernel_jit.suspended():
            assert plan_from_fix(store, table, *case, near).to_json() == compiled.to_json()
        plain = plan_from_fix(store, table, *case, exact)
        assert json.loads(compiled.to_json())["params"]["dropoff_top_k"] == 6
        assert "dropoff_top_k" not in json.loads(plain.to_json())["params"]
        full = plan_from_fix(store, table, *case, every)
        assert full.expected_revenue == pytest.approx(plain.expected_revenue, rel=1e-9)
        assert full.edges == plain.edges


def _wide_kernel(seed: int) -> core._Kernel:
    """A synthetic kernel of 300 links whose values span sixteen orders of magnitude, so any
    other order of the sums (pairwise halves above 128, 8 accumulators, the bincount) or a
    fused multiply-add gives other bits; with -inf penalties and successor-less sources."""
    rng = np.random.default_rng(seed)
    n, n_cells, K, m = 300, 40, 12, 280
    rows = K + 4

    def wide(*shape: int) -> Any:
        return rng.normal(size=shape) * 10.0 ** rng.uniform(-8, 8, shape)

    cz = np.sort(rng.choice(n, m, replace=False)).astype(np.int64)
    shift = rng.integers(1, 4, m)
    penalty = np.where(rng.random((3, m)) < 0.1, -np.inf, 0.0) + wide(3, m)
    lens = [260, 200, 90, 17]
    columns = [rng.integers(0, m + 1, c).astype(np.int64) for c in lens]  # m: no successor
    member_cell = rng.integers(0, n_cells - 4, 250).astype(np.int64)  # the last four empty
    count = np.bincount(member_cell, minlength=n_cells).astype(np.float64)
    p_in = rng.random((n_cells, n_cells + 1))
    p_in /= p_in.sum(axis=1, keepdims=True)
    return core._Kernel(
        n=n,
        n_cells=n_cells,
        n_layers=K,
        rows_v=rows,
        rows_c=rows,
        cz=cz,
        v_off=(shift * n + cz).astype(np.int64),
        v_wpos=rng.random(m),
        v_wneg=np.where(rng.random(m) < 0.3, rng.random(m), 0.0),
        c_off=(shift * (n_cells + 1) + rng.integers(0, n_cells + 1, m)).astype(np.int64),
        c_wpos=rng.random(m),
        c_wneg=np.where(rng.random(m) < 0.3, rng.random(m), 0.0),
        fare=wide(m),
        cost=np.abs(wide(m)),
        prob=rng.random((4, m)),
        prob_early=rng.random((2, m)),
        penalty=penalty,
        layer_slot=rng.integers(0, 4, K).astype(np.int64),
        layer_minute=rng.integers(0, 3, K).astype(np.int64),
        srcs=rng.permutation(n)[: lens[0]].astype(np.int64),
        columns=columns,
        members=rng.integers(0, n, 250).astype(np.int64),
        member_cell=member_cell,
        inv_count=1.0 / np.maximum(count, 1.0),
        empty=count == 0,
        p_in=p_in[:, :n_cells],
        p_out=p_in[:, n_cells],
        outside_value_share=0.7,
        p_top_idx=np.zeros((0, 0), dtype=np.int64),
        p_top_val=np.zeros((0, 0)),
    )


def test_the_compiled_pass_keeps_every_bit_where_the_order_of_operations_shows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The compiled action values and pairwise sums give numpy's bits on values where
    another order of the sums (or a fused multiply-add) gives other bits."""
    pytest.importorskip("numba")
    monkeypatch.setattr(kernel_jit, "_compiled", None)
    monkeypatch.setattr(kernel_jit, "_state", "idle")
    jit = kernel_jit.warm_up()
    assert jit is not None, kernel_jit.status()
    from agent.planner import _kernel_numba

    _numpy_only(monkeypatch)
    for seed in range(4):
        kn = _wide_kernel(seed)
        want = core._backward_pass(kn)
        rows = want[0][: kn.n_layers]
        # the order shows in the bits: summed one by one, most rows' sums differ
        assert sum(np.add.reduce(r) != sum(r.tolist()) for r in rows) > kn.n_layers // 2
        assert np.isfinite(rows).all() and np.isfinite(want[1]).all()  # the values are real
        for gemv in {_kernel_numba.USE_GEMV, False}:
            monkeypatch.setattr(_kernel_numba, "USE_GEMV", gemv)
            got = jit(kn)
            for x, y in zip(want, got, strict=True):
                assert x.tobytes() == y.tobytes()


def test_the_compiled_minimal_kernel_is_the_numpy_successor_maximum() -> None:
    """``successor_max_only``: the per-layer successor maximum alone (the bench's peer), the
    same values as numpy's ``np.maximum`` per out-degree rank, NaN and -inf kept."""
    pytest.importorskip("numba")
    import dataclasses

    from agent.planner import _kernel_min

    kn = _wide_kernel(7)
    cost = kn.cost.copy()
    cost[[3, 9]] = np.nan, np.inf  # a NaN, and a successor worth -inf
    columns = [c.copy() for c in kn.columns]
    columns[0][250] = kn.cz.shape[0]  # a source with no successor: -inf
    kn = dataclasses.replace(kn, cost=cost, columns=columns)

    def numpy_max(kn: core._Kernel) -> Any:
        q_ext = np.full(kn.cz.shape[0] + 1, -np.inf)
        q_ext[:-1] = -kn.cost
        best = q_ext[kn.columns[0]]
        for col in kn.columns[1:]:
            np.maximum(best[: col.shape[0]], q_ext[col], out=best[: col.shape[0]])
        return best

    want = numpy_max(kn)
    assert np.isnan(want).any() and (want == -np.inf).any()
    assert _kernel_min.successor_max_only(kn).tobytes() == want.tobytes()


def test_the_warm_up_loads_only_the_signatures_the_agent_runs() -> None:
    """Each loaded signature is resident memory (2-6 MB): with numpy's BLAS called directly,
    the agent's warm-up loads the BLAS path for the three layouts and neither the object-mode
    path nor the bench's minimal kernel; an empty drop-off matrix takes the BLAS path too."""
    pytest.importorskip("numba")
    import subprocess
    import sys

    from tests.conftest import REPO

    code = (
        "import json, numpy as np\n"
        "from agent.planner import kernel_jit, _kernel_numba as K, _kernel_min as M\n"
        "kernel_jit.warm_up()\n"
        "print(json.dumps([K.USE_GEMV, len(K._run.signatures), len(K._run_gemv.signatures),"
        " len(M._successor_max_layers.signatures), K.gemv_layout(np.zeros((0, 0)))]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    use_gemv, run, run_gemv, minimal, empty = json.loads(done.stdout.strip().splitlines()[-1])
    assert minimal == 0
    assert empty == [101, 1]  # cblas row-major: no product is made
    if use_gemv:
        assert (run, run_gemv) == (0, 3)
    else:
        assert (run, run_gemv) == (3, 0)
