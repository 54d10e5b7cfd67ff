"""``nagashi bench startup`` measures a real child agent (figures reported, never asserted)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tools import bench_startup


def test_bench_startup_reports_its_figures(manhattan_bundle: Path) -> None:
    p = argparse.ArgumentParser()
    bench_startup.add_arguments(p)
    args = p.parse_args(["--bundle-dir", str(manhattan_bundle), "--seconds", "2", "--speed", "20"])
    r = bench_startup.run(args)
    assert r["startup_s"] > 0 and r["first_tick_in_process_s"] is not None
    assert r["steady_rss_mb"] > 50 and r["peak_rss_mb"] >= r["steady_rss_mb"]
    assert r["rss_samples"] >= 2 and r["ticks_during_sampling"] >= 1
    assert isinstance(r["meets_goals"], bool)
