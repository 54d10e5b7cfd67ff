"""The simulator and the road network's traps (tiles.traps): no passenger, drop-off or return
from outside lands a cab in one, and a cab on a trapped link (Midtown's east-edge service
spur, OSM way 1090458890) is put on the nearest free link and counted, instead of following
the road between the spur's two directions for the rest of the shift."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from pathlib import Path

import numpy as np
import pytest

from agent.planner import speed_factor_from_demand
from models import DemandTable
from tiles import TileStore, trapped_links
from tiles.graph import Graph
from tools.sim.engine import run_shift
from tools.sim.replay import DRAW, DayRecords, replay_passengers
from tools.sim.world import SimConfig, World, build_world, make_passengers

SPUR_WAY = 1090458890
#: a weekday's evening peak, the arrivals of a fleet of 95 (x10): passengers on many links
CONFIG = SimConfig(taxis=95, test_taxis=95, hours=0.5, start_minute_of_week=1440 + 1080)


@pytest.fixture(scope="module")
def midtown(manhattan_tiles: Path, manhattan_demand: Path) -> tuple[Graph, World]:
    table = DemandTable.load(manhattan_demand)
    with TileStore(manhattan_tiles) as store:
        g = store.all()
    return g, build_world(g, table, CONFIG, speed_factor_from_demand(table, g))


def test_no_passenger_or_drop_off_is_on_a_trapped_link(midtown: tuple[Graph, World]) -> None:
    g, world = midtown
    trapped = trapped_links(g)
    assert trapped.any()
    assert not trapped[world.edge_band].any()
    assert not any(trapped[c].any() for c in world.cell_links)
    for seed in (3, 4):
        pax = make_passengers(world, seed, 10.0)
        assert pax.count > 500
        assert not trapped[pax.link].any()
        assert not trapped[pax.dropoff_link].any()
        # still sorted by (link, arrival), with offsets per link
        key = pax.link * 1e6 + pax.arrive_s
        assert np.all(np.diff(key) >= 0)
        assert np.array_equal(pax.offsets, np.searchsorted(pax.link, np.arange(g.n + 1)))


def test_a_replayed_passenger_on_a_trapped_link_waits_on_its_escape_link(
    midtown: tuple[Graph, World],
) -> None:
    g, world = midtown
    trapped = trapped_links(g)
    spur = np.flatnonzero(g.way_id == SPUR_WAY)
    free = np.flatnonzero(world.cruisable & ~trapped)[:4]
    link = np.array([*spur.tolist(), *free.tolist()], dtype=np.int64)
    m = link.size
    nan = np.full(m, np.nan)
    day = DayRecords(
        day=dt.date(2014, 4, 22),
        start_minute_of_week=CONFIG.start_minute_of_week,
        link=link,
        t_s=np.linspace(10.0, 600.0, m),
        fare=np.full(m, 12.5),
        duration_s=nan,
        distance_m=nan,
        dropoff_cell=np.full(m, DRAW, dtype=np.int64),
    )
    pax = replay_passengers(world, day, 0)
    assert not trapped[pax.link].any() and not trapped[pax.dropoff_link].any()
    assert sorted(pax.link.tolist()) == sorted(world.escape[link].tolist())
    assert np.array_equal(np.sort(pax.arrive_s), day.t_s)
    assert np.array_equal(pax.offsets, np.searchsorted(pax.link, np.arange(g.n + 1)))


def test_the_rates_a_cab_meets_are_moved_off_the_traps(midtown: tuple[Graph, World]) -> None:
    g, world = midtown
    trapped = trapped_links(g)
    minute = CONFIG.start_minute_of_week
    table = world.link_rates(minute, 10.0)
    met = world.rates(minute, 10.0)
    assert table[trapped].sum() > 0  # the table has pickups on trapped links at that hour
    assert not met[trapped].any()
    assert met.sum() == pytest.approx(table.sum())
    free = ~trapped & ~np.isin(np.arange(g.n), world.escape[trapped])
    assert np.array_equal(met[free], table[free])


@pytest.mark.parametrize("matching", ["hail", "dispatch"])
def test_a_cab_in_the_spur_is_taken_out_and_counted(
    midtown: tuple[Graph, World], matching: str
) -> None:
    g, world0 = midtown
    # three cabs in the market of 95 (the passengers of the world above)
    config = dataclasses.replace(CONFIG, taxis=3, test_taxis=3, matching=matching)
    world = dataclasses.replace(world0, config=config)
    trapped = trapped_links(g)
    spur = np.flatnonzero(g.way_id == SPUR_WAY)
    assert spur.size == 2 and trapped[spur].all()
    pax = make_passengers(world, 3, 10.0)
    free = int(np.flatnonzero(world.cruisable & ~trapped)[0])
    starts = [int(spur[0]), int(spur[1]), free]
    run = run_shift(world, pax, "random", 3, 10.0, record=True, starts=starts)
    for track in run.tracks:
        # the cab drove on: most of its links are not the spur's
        assert sum(1 for e, _, _ in track if e in spur) <= len(track) // 2
    for c in (0, 1):
        track = run.tracks[c]
        assert track[1][1] == "rescue"  # at the end of its first link
        assert not trapped[track[1][0]]
        assert track[1][2] == pytest.approx(float(world.tau_s[starts[c]]))
    rescues = 0
    for track in run.tracks:
        for (e, _, _), nxt in itertools.pairwise(track):
            if trapped[e]:
                assert nxt[1] == "rescue" and not trapped[nxt[0]]  # never a second trapped link
            rescues += nxt[1] == "rescue"
    assert run.trap_rescues == rescues >= 2


def test_a_trap_whose_escape_link_is_closed_now_is_waited_out(
    midtown: tuple[Graph, World],
) -> None:
    g, world0 = midtown
    trapped = trapped_links(g)
    spur = int(np.flatnonzero(g.way_id == SPUR_WAY)[0])
    out = int(world0.escape[spur])
    # a no-entry window on the escape link for the whole week
    closed = dataclasses.replace(
        g,
        win_edge=np.array([g.edge_id[out]], dtype=np.int32),
        win_start=np.array([0], dtype=np.int16),
        win_end=np.array([10080], dtype=np.int16),
    )
    config = dataclasses.replace(CONFIG, taxis=1, test_taxis=1)
    world = dataclasses.replace(world0, graph=closed, config=config)
    pax = make_passengers(world, 3, 10.0)
    run = run_shift(world, pax, "random", 3, 10.0, record=True, starts=[spur])
    track = run.tracks[0]
    # a dead end's wait (dead_end_wait_s), then back on a link near the edge, never the closed one
    assert track[1][1] == "relocate" and not trapped[track[1][0]] and track[1][0] != out
    assert track[1][2] == pytest.approx(float(world.tau_s[spur]) + CONFIG.dead_end_wait_s)
    assert run.stuck >= 2
    assert run.trap_rescues == sum(1 for _, kind, _ in track if kind == "rescue")
