"""``nagashi bench demand`` runs on the real model and reports both sources (no timing asserts)."""

from __future__ import annotations

import argparse
from pathlib import Path

from models import bench_demand


def test_bench_reports_onnx_and_statistical_peers(
    trained_model_dir: Path, manhattan_tiles: Path
) -> None:
    p = argparse.ArgumentParser()
    bench_demand.add_arguments(p)
    args = p.parse_args(
        ["--model", str(trained_model_dir), "--tiles", str(manhattan_tiles), "--repeats", "5"]
    )
    out = bench_demand.run(args)
    assert out["links"] > 1500  # 3 km around Times Square covers most of the extract
    assert out["rows_per_call"] == out["links"]  # one row per link; slots from statistics
    assert out["slots_per_tick"] == 3  # Tue 18:00 + 60 min: 18:00, 18:30, 19:00
    for key in ("onnx_tick", "onnx_run_only", "statistical_tick"):
        assert 0 < out[key]["p50_ms"] <= out[key]["p95_ms"] <= out[key]["max_ms"]
    assert out["agent_peak_rss_mb"] > 0
