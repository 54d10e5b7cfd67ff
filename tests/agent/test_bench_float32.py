"""``nagashi bench float32``: the C pass built on float32 against the installed float64 one."""

from __future__ import annotations

import argparse
import ctypes
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.agent.cflags import setup_py_same_bits

ROOT = Path(__file__).resolve().parents[2]


def _args(tiles: Path, demand: Path, *extra: str) -> argparse.Namespace:
    from agent import bench_float32

    p = argparse.ArgumentParser()
    bench_float32.add_arguments(p)
    return p.parse_args(["--tiles", str(tiles), "--demand", str(demand), *extra])


def test_bench_float32_reports_what_float32_buys_and_changes(
    manhattan_tiles: Path, manhattan_demand: Path
) -> None:
    from agent import bench_float32

    out = bench_float32.run(
        _args(manhattan_tiles, manhattan_demand, "--cases", "3", "--repeats", "1")
    )
    assert out["cases"] == 3
    for key in ("pass_float64_ms_p50", "pass_float32_ms_p50", "plan_ms_p50", "kernel_ms_p50"):
        assert out[key] > 0.0, key
    # the estimate is this run's plan less what float32 saves on its pass
    assert out["plan_float32_est_ms_p50"] < out["plan_ms_p50"] + out["pass_float64_ms_p95"]
    assert out["plan_ms_for_goal"] == pytest.approx(3.0 * out["kernel_ms_p50"], abs=2e-3)
    assert isinstance(out["goal_met_by_float32_alone"], bool)
    # float32 values: close to the float64 pass, but not the same bits
    assert 0.0 < out["v_rel_diff_max"] < 1e-4
    assert 0.0 < out["v_abs_diff_mean_usd"] <= out["v_abs_diff_max_usd"] < 0.1
    same, total = (int(x) for x in out["same_best_successor_layer0"].split("/"))
    assert total > 1000 and same >= 0.99 * total


def test_the_float32_build_runs_the_same_statements_on_float32(
    manhattan: tuple[Any, Any], tmp_path: Path
) -> None:
    """The float32 library's first layer on a real kernel: its V row is the float64 pass's to
    float32 precision, so the ``-DNAGASHI_FLOAT32`` build is the pass, not another algorithm."""
    from agent import bench_float32
    from agent.bench_cruise import _capturing, radius_fixes
    from agent.planner import PlannerParams, kernel_c, plan_from_fix
    from agent.planner.workspace import Workspace

    store, table = manhattan
    lib = ctypes.CDLL(str(bench_float32.build_float32(tmp_path)))
    lib.nagashi_backward.argtypes = [ctypes.POINTER(kernel_c._Pass)]
    kns: list[Any] = []
    with _capturing(kns):
        plan_from_fix(store, table, *radius_fixes(store, 3, 1)[0], PlannerParams(radius_m=1500.0))
    case = bench_float32._Case(kns[-1], lib, bench_float32._sgemv_address(), Workspace(), {})
    case.run64()
    case.run32()
    n = case.kn.n
    v64, v32 = case.w.vflat[:n], case.w32.vflat[:n]
    assert v32.dtype == np.float32
    assert np.isfinite(v64).all() and np.abs(v64).max() > 1.0
    np.testing.assert_allclose(v32, v64, rtol=1e-5, atol=1e-4)
    assert v32.astype(np.float64).tobytes() != v64.tobytes()


def test_bench_float32_builds_with_the_flags_the_install_uses() -> None:
    from agent import bench_float32

    assert setup_py_same_bits() == bench_float32.SAME_BITS


def test_bench_float32_bad_arguments_are_one_line(
    manhattan_tiles: Path, manhattan_demand: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "bench", "float32", "--cases", "0",
         "--tiles", str(manhattan_tiles), "--demand", str(manhattan_demand)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "--cases and --repeats must be at least 1" in done.stderr
