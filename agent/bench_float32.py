"""What a float32 value iteration would buy: the C pass on float32 against the cab's float64 one.

Issue 20's last goal (a plan within 3x its minimal kernel) is missed, and the remedy named
for it was float32 values: half the bytes per value, eight links per AVX2 instruction instead
of four. This benchmark measures that before any plan version is built on it. It compiles the
planner's own C pass (``agent/planner/_vi.c``) a second time with ``-DNAGASHI_FLOAT32``: the
same statements on float32 values and 32-bit offsets, never installed or run by the agent. It
runs that build and the installed float64 one on the same radius plans' kernels (the fixes
of ``bench cruise``), interleaved in one process on one core, each on buffers kept between
cases as the agent keeps its own, after timing the plans themselves in one loop. It reports:

- both passes' times, and the plan a float32 pass would give: each case's plan, less its
  float64 pass, plus its float32 pass (the rest of the tick unchanged). Its ratio to the
  numpy minimal kernel is set against the goal of 3x;
- what float32 changes in the values: V over every layer against the float64 pass (the
  largest difference relative to the largest value, and in USD), and the share of links whose
  best successor at the first layer (the argmax of Q, the first move from there) stays the
  same.

There is no float32 read-out, and no numpy or numba twin to check its bits against, so these
figures bound a float32 plan version. They are not one.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from agent.bench_cruise import _capturing, _inputs, _ms, radius_fixes, successor_max_kernel
from agent.errors import AgentError

#: the flags ``setup.py`` builds the pass with (``SAME_BITS``; a test keeps them equal)
SAME_BITS = ("-O2", "-ffp-contract=off", "-fno-fast-math")
GOAL_RATIO = 3.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiles", default=None, help="tiles.sqlite (default: built from Manhattan)")
    p.add_argument("--demand", default=None, help="demand table directory (default: built)")
    p.add_argument("--cases", type=int, default=60, help="radius plans (default 60)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each pass per case")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--radius-m", type=float, default=3000.0)
    p.add_argument("--horizon-min", type=float, default=45.0)


def _source() -> Path:
    return Path(__file__).resolve().parent / "planner" / "_vi.c"


def build_float32(out_dir: Path) -> Path:
    """``_vi.c`` compiled with ``-DNAGASHI_FLOAT32`` into ``out_dir`` (the compiler and flags
    the install uses); AgentError when it cannot be built."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    if shutil.which(cc[0]) is None:
        raise AgentError(f"bench float32: no C compiler ({cc[0]}) to build the float32 pass")
    include = sysconfig.get_paths()["include"]
    lib = out_dir / "_vi_float32.so"
    cmd = [*cc, *SAME_BITS, "-DNAGASHI_FLOAT32", "-shared", "-fPIC", f"-I{include}",
           str(_source()), "-o", str(lib)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["(no message)"])[0]
        raise AgentError(f"bench float32: building the float32 pass failed: {first}")
    return lib


def _sgemv_address() -> int:
    """numpy's own ``cblas_sgemv``, found as ``kernel_c`` finds ``cblas_dgemv``."""
    from agent.planner._kernel_arrays import numpy_gemv_address

    addr = numpy_gemv_address("s")
    if addr is None:
        raise AgentError("bench float32: numpy's cblas_sgemv was not found")
    return addr


def _f32(x: Any) -> Any:
    if isinstance(x, np.ndarray) and x.dtype == np.float64:
        return np.ascontiguousarray(x, dtype=np.float32)
    return x


def _kept(pool: dict[str, Any], name: str, x: Any) -> Any:
    """``x`` as float32 in a buffer kept between cases (as the planner's workspace keeps V and
    C: no fresh pages for either pass), grown when a case needs more."""
    buf = pool.get(name)
    if buf is None or buf.shape[0] < x.shape[0]:
        buf = pool[name] = np.zeros(x.shape[0] + x.shape[0] // 8, dtype=np.float32)
    out = buf[: x.shape[0]]
    out[:] = x
    return out


def _i32(x: Any) -> Any:
    if x.size and int(np.abs(x).max()) >= 2**31:
        raise AgentError("bench float32: an offset does not fit 32 bits")
    return np.ascontiguousarray(x, dtype=np.int32)


class _Case:
    """One kernel's two passes: ``run64()`` the installed float64 pass, ``run32()`` the float32
    build, each writing its own V, C and Q in place (V and C in buffers kept between cases:
    ``ws`` for float64, ``pool`` for float32)."""

    def __init__(self, kn: Any, lib32: Any, sgemv: int, ws: Any, pool: dict[str, Any]) -> None:
        from agent.planner import kernel_c
        from agent.planner._kernel_arrays import ROW_MAJOR, Arrays, Work, gemv_layout, pass_inputs

        self.kn = kn
        lay = gemv_layout(kn.p_in)
        if lay is None:
            raise AgentError("bench float32: a drop-off matrix BLAS cannot take")
        self.values, _, a, self.w = pass_inputs(kn, ws)
        self.o = kernel_c.order_of(a)
        self.s64 = kernel_c._struct(kn, a, self.w, lay, self.o)
        a32 = Arrays(*(_f32(x) for x in a))._replace(v_off=_i32(a.v_off), c_off=_i32(a.c_off))
        # ``best`` is scratch the C pass does not read (np.empty in ``pass_inputs``)
        self.w32 = Work(
            *(
                np.zeros(x.shape, np.float32)
                if f == "best"
                else _kept(pool, f, x)
                if f in ("vflat", "cflat")
                else _f32(x)
                for f, x in zip(Work._fields, self.w, strict=True)
            )
        )
        self.p32 = np.ascontiguousarray(kn.p_in, dtype=np.float32)
        s = kernel_c._struct(kn, a, self.w, lay, self.o)
        for name in kernel_c._INPUTS:
            setattr(s, name, kernel_c.address(getattr(a32, name)))
        for name in Work._fields:
            setattr(s, name, kernel_c.address(getattr(self.w32, name)))
        s.p_in = kernel_c.address(self.p32) if self.p32.size else None
        s.order, s.lda, s.gemv = ROW_MAJOR, max(self.p32.shape[0], 1), sgemv
        self.s32, self.a32, self.lib64, self.lib32 = s, a32, kernel_c._lib, lib32

    def run64(self) -> float:
        return _ms(self.lib64.nagashi_backward, ctypes.byref(self.s64))

    def run32(self) -> float:
        return _ms(self.lib32.nagashi_backward, ctypes.byref(self.s32))

    def differences(self) -> tuple[float, float, float, int, int]:
        """V over the pass's layers: the largest difference relative to the largest value, the
        largest and mean absolute difference (USD); the links whose best successor at the first
        layer is the same, of those with one."""
        kn = self.kn
        rows = kn.n_layers * kn.n
        v64 = self.w.vflat[:rows]
        v32 = self.w32.vflat[:rows].astype(np.float64)
        ok = np.isfinite(v64) & np.isfinite(v32)
        if not ok.any():
            raise AgentError("bench float32: a pass gave no finite value")
        diff = np.abs(v32[ok] - v64[ok])
        scale = float(np.abs(v64[ok]).max()) or 1.0
        same, total = _same_best(kn, self.w.q_ext, self.w32.q_ext.astype(np.float64))
        return float(diff.max()) / scale, float(diff.max()), float(diff.mean()), same, total


def _same_best(kn: Any, q64: Any, q32: Any) -> tuple[int, int]:
    """Per source, the successor of the largest Q (the first column on ties) in each; the count
    of sources where they agree and of those with any successor of finite Q."""
    cols = kn.columns
    n_src = cols[0].shape[0]
    best64 = np.full((n_src, len(cols)), -np.inf)
    best32 = np.full((n_src, len(cols)), -np.inf)
    for d, col in enumerate(cols):
        best64[: col.shape[0], d] = q64[col]
        best32[: col.shape[0], d] = q32[col]
    has = np.isfinite(best64).any(axis=1)
    agree = np.argmax(best64, axis=1) == np.argmax(best32, axis=1)
    return int((agree & has).sum()), int(has.sum())


def run(args: argparse.Namespace) -> dict[str, Any]:
    from agent.planner import (
        PlannerParams,
        kernel_c,
        kernel_jit,
        plan_from_fix,
        speed_factor_from_demand,
    )
    from models import DemandTable
    from tiles import TileStore

    if args.cases < 1 or args.repeats < 1:
        raise AgentError("bench float32: --cases and --repeats must be at least 1")
    if not kernel_c.ready():
        raise AgentError(f"bench float32: the installed C pass is not ready ({kernel_c.status()})")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    # numba's pass (if installed) compiled or loaded now, as bench cruise does: else the
    # planner starts its warm-up in a thread after the first plan, on the timed core
    kernel_jit.warm_up()
    sgemv = _sgemv_address()
    with tempfile.TemporaryDirectory(prefix="nagashi-bench-float32-") as tmp_name:
        tmp = Path(tmp_name)
        lib32 = ctypes.CDLL(str(build_float32(tmp)))
        lib32.nagashi_backward.argtypes = [ctypes.POINTER(kernel_c._Pass)]
        lib32.nagashi_backward.restype = ctypes.c_int
        tiles, demand_dir = _inputs(args, tmp)
        table = DemandTable.load(demand_dir)
        with TileStore(tiles) as store:
            params = PlannerParams(
                radius_m=args.radius_m,
                horizon_s=args.horizon_min * 60.0,
                speed_factor=speed_factor_from_demand(table, store.all()),
            )
            fixes = radius_fixes(store, args.seed, args.cases)
            plan_from_fix(store, table, *fixes[0], params)  # warm-up: not timed
            out = _measure(args, store, table, params, fixes, lib32, sgemv)
    return out


def _measure(
    args: argparse.Namespace,
    store: Any,
    table: Any,
    params: Any,
    fixes: list[tuple[float, float, float, float]],
    lib32: Any,
    sgemv: int,
) -> dict[str, Any]:
    """The plans first, in one loop as the agent runs them (each at once again, warm), their
    kernels kept; then per kernel the two passes, interleaved, and the minimal kernel (the
    passes allocate and free buffers the size of V: between plans they would slow the plans'
    own allocations, which the agent's loop does not see)."""
    from agent.planner import plan_from_fix
    from agent.planner.workspace import Workspace

    plan_ms: list[float] = []
    warm_ms: list[float] = []
    kns: list[Any] = []
    for fix in fixes:
        with _capturing(kns):
            plan_ms.append(_ms(plan_from_fix, store, table, *fix, params))
        del kns[len(plan_ms) :]  # the plan's own kernel (one pass a plan)
        # at once again: its inputs in the caches
        warm_ms.append(_ms(plan_from_fix, store, table, *fix, params))
    if len(kns) != len(fixes):
        raise AgentError("bench float32: a plan ran no backward pass")
    p64: list[float] = []
    p32: list[float] = []
    kern: list[float] = []
    diffs: list[tuple[float, float, float, int, int]] = []
    pool: dict[str, Any] = {}
    ws = Workspace()  # the two passes' V and C, kept between cases as the agent's are
    for kn in kns:
        case = _Case(kn, lib32, sgemv, ws, pool)
        a, b = [], []
        for r in range(args.repeats):  # alternate which runs first
            if r % 2 == 0:
                a.append(case.run64())
                b.append(case.run32())
            else:
                b.append(case.run32())
                a.append(case.run64())
        p64.append(float(np.median(a)))
        p32.append(float(np.median(b)))
        kern.append(_ms(successor_max_kernel, kn))
        diffs.append(case.differences())
    links = [int(kn.n) for kn in kns]
    return _report(args, plan_ms, warm_ms, p64, p32, kern, diffs, links)


def _report(
    args: argparse.Namespace,
    plan_ms: list[float],
    warm_ms: list[float],
    p64: list[float],
    p32: list[float],
    kern: list[float],
    diffs: list[tuple[float, float, float, int, int]],
    links: list[int],
) -> dict[str, Any]:
    from agent.planner import kernel_c

    rel, usd_max, usd_mean, same, total = zip(*diffs, strict=True)
    plan, warm = np.asarray(plan_ms), np.asarray(warm_ms)
    saved = np.asarray(p64) - np.asarray(p32)
    est, est_warm = plan - saved, warm - saved
    k50 = float(np.percentile(kern, 50))

    def p(x: Any, q: float) -> float:
        return round(float(np.percentile(np.asarray(x), q)), 3)

    ratio_est = round(float(np.percentile(est, 50)) / k50, 2)
    ratio_warm = round(float(np.percentile(est_warm, 50)) / k50, 2)
    return {
        "cases": args.cases,
        "repeats": args.repeats,
        "cores": 1,
        "simd": bool(kernel_c.simd()),
        "links_in_radius_p50": int(np.percentile(links, 50)),
        "pass_float64_ms_p50": p(p64, 50),
        "pass_float64_ms_p95": p(p64, 95),
        "pass_float32_ms_p50": p(p32, 50),
        "pass_float32_ms_p95": p(p32, 95),
        "speedup_pass_float32_p50": round(float(np.percentile(np.asarray(p64) / p32, 50)), 2),
        "plan_ms_p50": p(plan, 50),
        "plan_ms_p95": p(plan, 95),
        "plan_float32_est_ms_p50": p(est, 50),
        "plan_float32_est_ms_p95": p(est, 95),
        "plan_warm_ms_p50": p(warm, 50),
        "plan_warm_float32_est_ms_p50": p(est_warm, 50),
        "pass_saved_ms_p50": p(saved, 50),
        "kernel_ms_p50": round(k50, 3),
        "ratio_plan_to_kernel_p50": round(float(np.percentile(plan, 50)) / k50, 2),
        "ratio_plan_float32_est_to_kernel_p50": ratio_est,
        "goal_ratio_to_kernel": GOAL_RATIO,
        "ratio_plan_warm_float32_est_to_kernel_p50": ratio_warm,
        "goal_met_by_float32_alone": max(ratio_est, ratio_warm) <= GOAL_RATIO,
        "plan_ms_for_goal": round(GOAL_RATIO * k50, 3),
        "v_rel_diff_max": float(f"{max(rel):.3g}"),
        "v_abs_diff_max_usd": float(f"{max(usd_max):.3g}"),
        "v_abs_diff_mean_usd": float(f"{float(np.mean(usd_mean)):.3g}"),
        "same_best_successor_layer0": f"{sum(same)}/{sum(total)}",
    }
