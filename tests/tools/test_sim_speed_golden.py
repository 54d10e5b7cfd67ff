"""nagashi-live's outputs byte for byte (issue 16, the simulator's speed): a short fixed shift
with the whole fleet on ``nagashi-live`` (the live layer in the loop, per-cab snapshot-aware
read-outs, the route read-out) under both matching rules -- every measure, every cab's track
and pickup, every vacant pass -- hashes to the digest the simulator gave before its speed work.
The speed work must not change a result; a change of the planner or the live layer on purpose
changes the digest: the new one is the one this test prints (say why in the commit).

Like ``test_sim_golden.py`` for the baselines; the planner's values are bit-identical between
its numba and numpy paths (``agent.planner.kernel_jit``), so either gives this digest."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from agent.planner import speed_factor_from_demand
from models import DemandTable
from tiles import TileStore
from tools.sim.engine import run_shift
from tools.sim.world import SimConfig, build_world, make_passengers

#: sha256 of :func:`golden_outputs` before the speed work (commit 98b0901)
DIGEST = "94eb28011bfd8ac29f6fa0c75548a8775944ab92a6987b7b99c8e6e764a10caa"


def golden_outputs(tiles: Path, demand: Path) -> dict[str, Any]:
    """Every run's measures, tracks, pickups and vacant passes (40 cabs, all on nagashi-live,
    20 min of a weekday's evening peak, seed 5, arrivals x10)."""
    table = DemandTable.load(demand)
    with TileStore(tiles) as store:
        g = store.all()
    config = SimConfig(taxis=40, test_taxis=40, hours=1 / 3, start_minute_of_week=1440 + 1080)
    world0 = build_world(g, table, config, speed_factor_from_demand(table, g))
    out: dict[str, Any] = {}
    for matching in ("hail", "dispatch"):
        world = dataclasses.replace(world0, config=dataclasses.replace(config, matching=matching))
        pax = make_passengers(world, 5, 10.0)
        passes: list[tuple[float, int]] = []
        run = run_shift(world, pax, "nagashi-live", 5, 10.0, record=True, passes=passes)
        measures = dataclasses.asdict(run)
        del measures["cpu_s"]  # CPU time varies; not a measure
        out[matching] = {"run": measures, "passes": passes}
    return out


def test_nagashi_live_outputs_are_the_same_bytes(
    manhattan_tiles: Path, manhattan_demand: Path
) -> None:
    outputs = golden_outputs(manhattan_tiles, manhattan_demand)
    assert all(o["run"]["served"] > 0 for o in outputs.values())  # the cabs did pick up
    got = hashlib.sha256(json.dumps(outputs, sort_keys=True).encode()).hexdigest()
    if got != DIGEST:
        summary = {k: v["run"]["revenue_per_h"] for k, v in outputs.items()}
        pytest.fail(f"nagashi-live's outputs changed: sha256 {got} (was {DIGEST}); {summary}")
