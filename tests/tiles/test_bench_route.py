"""``bench route`` runs nagashi's CCH and Dijkstra beside the peers and checks their costs; its
agent-side RSS is that of the probe alone (no timing is asserted: figures go in the report)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import OSM, REPO
from tiles import cch as tiles_cch
from tiles.bench_route import _agent_peak_rss_mb


def test_agent_rss_probe_does_not_count_the_parent(manhattan_tiles: Path) -> None:
    """The probe is a fresh process: a parent that holds 200 MB does not show in its peak
    (``ru_maxrss`` after fork and exec keeps the forked parent's; VmHWM does not)."""
    ballast = np.ones(200 * 2**20, dtype=np.uint8)  # 200 MB, every page touched
    mid = ((-74.0020, 40.7400), (-73.9700, 40.7560))
    rss = _agent_peak_rss_mb(manhattan_tiles, mid)
    assert int(ballast[-1]) == 1
    assert 20 < rss < 180, rss


def test_bench_route_json_compares_cch_and_dijkstra(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), tiles_cch.CACHE_ENV: str(tmp_path)}
    env.pop(tiles_cch.BACKEND_ENV, None)
    cmd = [sys.executable, "-m", "tools.cli", "bench", "route", "--json", "--queries", "12"]
    out = subprocess.run(
        [*cmd, "--osm", str(OSM["monaco"])],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=REPO,
    )
    doc = json.loads(out.stdout)
    for side in ("nagashi_warm", "nagashi_warm_dijkstra", "nagashi_dijkstra", "scipy"):
        assert set(doc[side]) == {"median_ms", "p95_ms"}, side
    assert doc["backend"] == ("cch" if tiles_cch.ENABLED else "dijkstra")
    assert doc["nagashi_warm_route_duration_max_abs_diff_s"] < 0.01
    if tiles_cch.ENABLED:  # nagashi's CCH against its Dijkstra and against RoutingKit's
        assert doc["nagashi_cch_queries_compared"] >= 5
        assert doc["nagashi_cch_cost_max_abs_diff"] < 0.01
        assert (
            0.9999 < doc["cch_travel_time_ratio_min"] <= doc["cch_travel_time_ratio_max"] < 1.0001
        )
        assert doc["ratio_p95_nagashi_cch_over_cch_with_path"] > 0
        assert doc["nagashi_cch_build_s"] > 0
