"""`nagashi bench simulate`: cab-hours per CPU-second on a held-out day, the shipped policy too."""

from __future__ import annotations

import argparse
from pathlib import Path

from tools import bench_simulate


def test_bench_simulate_reports_every_case_and_the_projection(manhattan_tiles: Path) -> None:
    p = argparse.ArgumentParser()
    bench_simulate.add_arguments(p)
    args = p.parse_args(
        ["--tiles", str(manhattan_tiles), "--hours", "0.05", "--fleets", "6",
         "--policies", "hotspot,nagashi-live"]
    )  # fmt: skip
    doc = bench_simulate.run(args)
    cases = {c["policy"]: c for c in doc["cases"]}
    assert set(cases) == {"hotspot", "nagashi-live"}
    for c in cases.values():
        assert c["taxis"] == 6 and c["cab_hours"] == 0.3 and c["cpu_s"] > 0
        assert c["cab_hours_per_cpu_s"] > 0 and 0 <= c["served"] <= c["passengers"]
    # no 3,000-cab case run: no projection, and the goal neither claimed nor said missed
    assert doc["projected_cpu_min_3000_cabs_14h_nagashi_live"] is None
    assert doc["goal_met"] is None and doc["goal_met_nagashi_live"] is None
    # the compiled kernel was readied before the timed cases (or numba is absent)
    assert doc["jit"] in ("ready", "unavailable", "disabled", "failed")
