"""Under ``--matching dispatch`` the simulated nagashi cabs plan with the dispatch-aware pickup
term (agent.planner.dispatch), unless a params.yaml's planner section says otherwise."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from models import DemandTable
from tiles import TileStore
from tiles.graph import Graph
from tools.sim.engine import CRUISE, DISPATCHED, DROPOFF, _Fleet, run_shift
from tools.sim.experiment import _planned_world
from tools.sim.policies import Allowed, NagashiLivePolicy, make_policy
from tools.sim.world import SimConfig, World, make_passengers


@pytest.fixture(scope="module")
def graph_table(manhattan_tiles: Path, manhattan_demand: Path) -> tuple[Graph, DemandTable]:
    with TileStore(manhattan_tiles) as store:
        return store.all(), DemandTable.load(manhattan_demand)


def config(matching: str) -> SimConfig:
    return SimConfig(
        taxis=12, test_taxis=12, hours=0.25, start_minute_of_week=1440 + 1080, matching=matching
    )


def test_the_matching_rule_reaches_the_planner(graph_table: tuple[Graph, DemandTable]) -> None:
    g, table = graph_table
    assert _planned_world(g, table, config("hail"), None, None).params.matching == "hail"
    w = _planned_world(g, table, config("dispatch"), None, None)
    assert w.params.matching == "dispatch"
    # a params.yaml's planner section decides (the hail values measured under dispatch)
    hail = _planned_world(g, table, config("dispatch"), {"matching": "hail"}, None)
    assert hail.params.matching == "hail" and hail.config.matching == "dispatch"


def shared_table_window(world: World, name: str = "nagashi-live") -> npt.NDArray[np.float64]:
    """W of the shared table the policy ``name`` solves first in ``world``."""
    policy = make_policy(name, world, Allowed(world), 0, 10.0, world.config.taxis)
    assert isinstance(policy, NagashiLivePolicy)
    policy.choose(0, int(np.flatnonzero(world.cruisable)[0]), 0.0, _Fleet(world.n))
    assert policy.table is not None  # solved at the first choice
    return np.asarray(policy.table.window_s, dtype=np.float64)


def test_dispatch_cabs_plan_with_the_catchment_and_drive_legally(
    graph_table: tuple[Graph, DemandTable],
) -> None:
    g, table = graph_table
    world = _planned_world(g, table, config("dispatch"), None, None)
    hail = _planned_world(g, table, config("dispatch"), {"matching": "hail"}, None)
    assert np.all(shared_table_window(world) == 0.0)  # no curb wait: dispatch values
    assert np.all(shared_table_window(hail) > 0.0)
    assert np.all(shared_table_window(world, "nagashi-live-hail") > 0.0)
    pax = make_passengers(world, 0, 10.0)
    run = run_shift(world, pax, "nagashi-live", 0, 10.0, record=True)
    assert run.pickups_per_h > 0
    for track in run.tracks:
        for (prev, _, _), (link, kind, t) in itertools.pairwise(track):
            if kind == DROPOFF:
                continue
            assert world.cruisable[link]
            assert not g.closed_at(math.floor(world.minute_at(t)))[link]
            if kind in (CRUISE, DISPATCHED):
                assert link in world.succ[prev]
