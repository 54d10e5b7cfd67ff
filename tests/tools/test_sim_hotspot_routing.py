"""The hotspot policy's nearest-hotspot search on the CCH (tiles.EdgeRouter) reaches a hotspot
as fast as the Dijkstra search it replaces (the fallback), along legal allowed links."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from agent.planner import speed_factor_from_demand
from models import DemandTable
from tests.tiles.test_cch import _need_cch
from tiles import TileStore
from tiles import cch as tiles_cch
from tools.sim.policies import Allowed, HotspotPolicy
from tools.sim.world import SimConfig, World, build_world


@pytest.fixture(scope="module")
def world(manhattan_tiles: Path, manhattan_demand: Path) -> World:
    table = DemandTable.load(manhattan_demand)
    with TileStore(manhattan_tiles) as store:
        g = store.all()
        config = SimConfig(
            taxis=10,
            test_taxis=1,
            hours=0.5,
            start_minute_of_week=1 * 1440 + 1080,
            calibration_seeds=1,
            calibration_tolerance=0.5,
        )
        return build_world(g, table, config, speed_factor_from_demand(table, g))


def test_hotspot_search_on_cch_equals_dijkstra(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _need_cch()
    rng = np.random.default_rng(3)
    links = rng.choice(np.flatnonzero(world.cruisable), 150, replace=False).tolist()
    t_s = 600.0
    found: dict[bool, list[list[int]]] = {}
    for enabled in (True, False):
        monkeypatch.setattr(tiles_cch, "ENABLED", enabled)
        allowed = Allowed(world)
        policy = HotspotPolicy(world, allowed, np.random.default_rng(0), 1.0)
        found[enabled] = [policy._retarget(link, t_s) for link in links]
    ok = Allowed(world).at(t_s)
    hot = set(HotspotPolicy(world, Allowed(world), rng, 1.0)._hotspots(t_s).tolist())
    routed = 0
    for link, a, b in zip(links, found[True], found[False], strict=True):
        assert bool(a) == bool(b), link
        if not a:
            continue
        for path in (a, b):
            assert path[-1] in hot and path[-1] != link
            steps = [link, *path]
            assert all(y in world.succ[x] for x, y in itertools.pairwise(steps))
            assert bool(np.all(ok[path]))
        cost_a = float(world.tau_s[a].sum())
        cost_b = float(world.tau_s[b].sum())
        assert cost_a == pytest.approx(cost_b, abs=0.5e-4 * (len(a) + len(b)) + 1e-6)
        routed += 1
    assert routed > 100
