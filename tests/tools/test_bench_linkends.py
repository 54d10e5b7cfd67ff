"""``nagashi bench linkends``: the agent's tick on noisy fixes at link ends of the real bundle
(figures reported, never asserted)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from tools import bench_linkends

REPO = Path(__file__).resolve().parents[2]


def test_bench_linkends_reports_the_fallback_shares(manhattan_bundle: Path) -> None:
    p = argparse.ArgumentParser()
    bench_linkends.add_arguments(p)
    args = p.parse_args(["--bundle-dir", str(manhattan_bundle), "--samples", "30", "--seed", "1"])
    r = bench_linkends.run(args)
    assert r["samples"] == 30 and r["seed"] == 1
    assert 0.0 <= r["fallback_share"] <= 1.0
    # every fallback has a reason; a tick may have several
    assert sum(r["reason_share"].values()) >= r["fallback_share"]
    assert all(0.0 < v <= 1.0 for v in r["reason_share"].values())
    assert r["tick_cpu_ms"] > 0
    again = bench_linkends.run(args)  # seeded: the same ticks, the same figures
    assert {**again, "tick_cpu_ms": 0} == {**r, "tick_cpu_ms": 0}


def test_bench_linkends_refuses_a_bad_option_in_one_line(manhattan_bundle: Path) -> None:
    cmd = [sys.executable, "-m", "tools.cli", "bench", "linkends", "--bundle-dir"]
    out = subprocess.run(
        [*cmd, str(manhattan_bundle), "--samples", "0"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
