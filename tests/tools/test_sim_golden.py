"""The simulator's outputs byte for byte: a short fixed shift of every baseline policy under both
matching rules (every measure, every test cab's track and pickup, every vacant pass of every
cab) hashes to the digest the event loop gave before it was laid out in steps (issue 14).

The nagashi policies are left out: their routes follow the planner, whose own changes are not
the engine's. If the engine's behaviour is changed on purpose, the new digest is the one this
test prints (say why in the commit)."""

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

POLICIES = ("random", "random-walk", "random-destination", "hotspot", "greedy")
#: sha256 of :func:`golden_outputs` as the engine gave it before the split (commit d361478),
#: then with the traps taken out (tiles.traps: no passenger, drop-off, start or return on a
#: trapped link, a cab off one put on the nearest free link, ``trap_rescues``; the baselines
#: see a trapped link's rates on its escape link); with
#: ``trapped_links`` returning no trap, the run gives the earlier digest 8ab363c5...4474dd2
#: (less the new ``trap_rescues`` field, 0 everywhere)
DIGEST = "3eb25bdcaff6ed9bc8c903648ef5d50d085623f5c0ecfc3416f5aa6a690a09f8"


def golden_outputs(tiles: Path, demand: Path) -> dict[str, Any]:
    """Every run's measures, tracks, pickups and vacant passes (20 cabs, 3 under test, 30 min of
    a weekday's evening peak, seed 3, arrivals x10)."""
    table = DemandTable.load(demand)
    with TileStore(tiles) as store:
        g = store.all()
    config = SimConfig(taxis=20, test_taxis=3, hours=0.5, start_minute_of_week=1440 + 1080)
    world0 = build_world(g, table, config, speed_factor_from_demand(table, g))
    out: dict[str, Any] = {}
    for matching in ("hail", "dispatch"):
        world = dataclasses.replace(world0, config=dataclasses.replace(config, matching=matching))
        pax = make_passengers(world, 3, 10.0)
        for policy in POLICIES:
            passes: list[tuple[float, int]] = []
            run = run_shift(world, pax, policy, 3, 10.0, record=True, passes=passes)
            measures = dataclasses.asdict(run)
            del measures["cpu_s"], measures["policy_stats"]  # CPU time varies; not a measure
            out[f"{matching}/{policy}"] = {"run": measures, "passes": passes}
    return out


def digest_of(outputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(outputs, sort_keys=True).encode()).hexdigest()


def test_run_shift_outputs_are_the_same_bytes(
    manhattan_tiles: Path, manhattan_demand: Path
) -> None:
    outputs = golden_outputs(manhattan_tiles, manhattan_demand)
    got = digest_of(outputs)
    if got != DIGEST:
        summary = {k: v["run"]["revenue_per_h"] for k, v in outputs.items()}
        pytest.fail(f"run_shift's outputs changed: sha256 {got} (was {DIGEST}); {summary}")
