"""The dead ends of a radius graph from its parent's (``agent.planner.deadends._from_parent``,
issue 20): the parent is peeled once per closure state and a fix's radius graph restricts it;
the same live links as peeling the radius graph itself, on real Manhattan radius graphs at real
minutes and under random closures, and a new closure state or a new parent graph is peeled
again (not read from the cache of another)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from agent.planner import PlannerParams, ValueTable, peel_c, solve, speed_factor_from_demand, walk_c
from agent.planner.deadends import _PARENT, _arcs, _from_parent, _peel, _peel_arcs, live_links
from models import DemandTable, tick_demand_from_table
from tiles import TileStore
from tiles.graph import Graph


def solved_at(store: TileStore, demand: DemandTable, lon: float, lat: float, r_m: float,
              minute: float) -> ValueTable:  # fmt: skip
    g = store.radius_graph(lon, lat, r_m)
    params = dataclasses.replace(
        PlannerParams(speed_factor=speed_factor_from_demand(demand, store.all())), horizon_s=60.0
    )
    return solve(
        g, tick_demand_from_table(demand, g.edge_id, math.floor(minute), 3), minute, params
    )


def closed(table: ValueTable, allowed: np.ndarray) -> ValueTable:
    """``table`` with ``allowed`` at every minute (other closures, the same graph)."""
    rows = np.repeat(allowed[None, :], table.allowed.shape[0], axis=0)
    return dataclasses.replace(table, allowed=rows)


@pytest.mark.parametrize("radius_m", [400.0, 3000.0])
def test_a_radius_graph_has_the_live_links_of_its_own_peel(
    manhattan_tiles: Path, manhattan_demand: Path, radius_m: float
) -> None:
    demand = DemandTable.load(manhattan_demand)
    rng = np.random.default_rng(int(radius_m) + 7)
    edge_only = 0  # links dead in the parent that reach the radius graph's edge
    with TileStore(manhattan_tiles) as store:
        full = store.all()
        for e in rng.integers(0, full.n, 6).tolist():
            minute = float(rng.uniform(0.0, 7 * 1440.0))
            table = solved_at(store, demand, float(full.u_lon[e]), float(full.u_lat[e]),
                              radius_m, minute)  # fmt: skip
            g = table.prep.graph
            assert g.subset_of is not None
            parent, idx = g.subset_of
            for allowed in (np.asarray(table.allowed_at(minute)), rng.random(g.n) < 0.7):
                want = _peel(table, allowed)
                got = _from_parent(g, allowed)
                assert got is not None
                assert np.array_equal(got, want)
                in_c = peel_c.live_links(table.prep, allowed)  # the C peel (CI builds it)
                assert in_c is not None and np.array_equal(in_c, want)
                per = _PARENT[parent]
                in_parent = next(v for k, v in per.items() if np.array_equal(
                    np.frombuffer(k, dtype=bool)[idx], allowed))  # fmt: skip
                edge_only += int((want & ~in_parent[idx]).sum())
    assert edge_only > 0  # the correction at the radius graph's edge had links to find


def test_other_closures_on_one_parent_are_peeled_again(
    manhattan_tiles: Path, manhattan_demand: Path
) -> None:
    """Two radius graphs of one parent and three closure states: each reads its own live links
    (a cache keyed on the parent alone, or on the minute, would return the first one's)."""
    demand = DemandTable.load(manhattan_demand)
    rng = np.random.default_rng(3)
    with TileStore(manhattan_tiles) as store:
        full = store.all()
        e = int(np.flatnonzero(full.cruise_allowed())[len(full.edge_id) // 3])
        lon, lat = float(full.u_lon[e]), float(full.u_lat[e])
        a = solved_at(store, demand, lon, lat, 1500.0, 600.0)
        b = solved_at(store, demand, lon + 0.0003, lat, 1400.0, 600.0)
        assert a.prep.graph.subset_of is not None and b.prep.graph.subset_of is not None
        assert a.prep.graph.subset_of[0] is b.prep.graph.subset_of[0]  # one parent
        seen = []
        for table in (a, b):
            open_ = np.asarray(table.allowed_at(600.0))
            shut = open_ & (rng.random(table.prep.n) < 0.8)
            for mask in (open_, shut, open_):
                got = live_links(closed(table, mask), 600.0)
                assert np.array_equal(got, _peel(table, mask))
                seen.append(got)
        assert not np.array_equal(seen[0], seen[1])  # the closures changed the live links


def test_a_new_parent_graph_is_peeled_again(manhattan_tiles: Path, manhattan_demand: Path) -> None:
    """The same links in a parent graph with other turns (a U-turn everywhere dropped): the
    radius graph cut from it reads its parent's live links, not the first parent's."""
    demand = DemandTable.load(manhattan_demand)
    with TileStore(manhattan_tiles) as store:
        full = store.all()
        e = int(np.flatnonzero(full.cruise_allowed())[len(full.edge_id) // 2])
        table = solved_at(store, demand, float(full.u_lon[e]), float(full.u_lat[e]), 1500.0, 0.0)
        g = table.prep.graph
        assert g.subset_of is not None
        parent, idx = g.subset_of
        allowed = np.asarray(table.allowed_at(0.0))
        first = _from_parent(g, allowed)
        # the parent without its straight-ahead turns: the first successor of each link dropped
        counts = np.diff(parent.turn_offsets)
        drop = np.zeros(parent.turn_to.shape[0], dtype=bool)
        drop[parent.turn_offsets[:-1][counts > 1]] = True
        offsets = np.zeros(parent.n + 1, dtype=np.int64)
        np.cumsum(counts - drop[parent.turn_offsets[:-1]].astype(np.int64) * (counts > 1),
                  out=offsets[1:])  # fmt: skip
        other = dataclasses.replace(parent, turn_offsets=offsets, turn_to=parent.turn_to[~drop])
        sub: Graph = other.subset(np.isin(np.arange(other.n), idx))
        t2 = solved_at_graph(table, sub)
        got = _from_parent(sub, allowed)
        assert got is not None and first is not None
        assert np.array_equal(got, _peel(t2, allowed))
        assert not np.array_equal(got, first)  # the turns changed the live links


def solved_at_graph(table: ValueTable, g: Graph) -> ValueTable:
    """``table``'s values on another graph of the same links (its prepared arcs are ``g``'s)."""
    from agent.planner.core import prepare

    prep = prepare(g, table.prep.step_s, 1.0, None)
    return dataclasses.replace(table, prep=prep)


def test_the_c_peel_is_the_numpy_peel_on_random_graphs() -> None:
    """``peel_c.live_links`` (``nagashi_live``: one queue) against ``_peel_arcs`` (rounds) on
    small random graphs: spurs whose only way on is a U-turn, links with turns off the graph,
    cycles, parallel turns, closures; and the hand-made cases of the module docstring."""
    from agent.planner.core import prepare

    assert walk_c.ready()  # built by the install (setup.py)
    rng = np.random.default_rng(20)
    for case in range(300):
        n = int(rng.integers(1, 40))
        nodes = int(rng.integers(2, max(3, n)))
        u = rng.integers(0, nodes, n).astype(np.int32)
        v = rng.integers(0, nodes, n).astype(np.int32)
        counts = rng.integers(0, 4, n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        # targets: links of the graph, some of them U-turns or repeated, and ids off the graph
        to = rng.integers(0, n + 3, int(offsets[-1])).astype(np.int32) + 100
        g = _toy_graph(u, v, offsets, to)
        prep = prepare(g, 10.0, 1.0, None)
        for p_open in (1.0, 0.8, 0.4):
            allowed = rng.random(n) < p_open
            want = _peel_arcs(_arcs(prep), allowed)
            got = peel_c.live_links(prep, allowed)
            assert got is not None and np.array_equal(got, want), case
    # a chain into a U-turn-only spur dies back to the junction; a turn off the graph lives
    g = _toy_graph(
        np.array([0, 1, 2, 1], dtype=np.int32),
        np.array([1, 2, 1, 3], dtype=np.int32),
        np.array([0, 2, 3, 4, 5], dtype=np.int64),
        np.array([101, 103, 102, 101, 999], dtype=np.int32),
    )  # 0 -> 1 (spur 1 <-> 2: U-turns only) or 3 (off the graph)
    prep = prepare(g, 10.0, 1.0, None)
    got = peel_c.live_links(prep, np.ones(4, dtype=bool))
    assert got is not None and got.tolist() == [True, False, False, True]
    shut = peel_c.live_links(prep, np.array([True, True, True, False]))
    assert shut is not None and shut.tolist() == [False, False, False, False]


def _toy_graph(u: np.ndarray, v: np.ndarray, offsets: np.ndarray, to: np.ndarray) -> Graph:
    """A graph of ``u.shape[0]`` links with ids 100.. and these turns (global ids: 100 + i is
    link i, others are off the graph)."""
    n = u.shape[0]
    z = np.zeros(n)
    z32 = np.zeros(n, dtype=np.float32)
    return Graph(
        edge_id=np.arange(100, 100 + n, dtype=np.int32), u_lon=z, u_lat=z, v_lon=z, v_lat=z,
        u_node=u, v_node=v, way_id=np.zeros(n, dtype=np.int64), length_m=z32 + 100.0,
        speed_kph=z32 + 30.0, highway=np.zeros(n, dtype=np.uint8),
        flags=np.zeros(n, dtype=np.uint16), bearing_start=z32, bearing_end=z32,
        geom_offsets=np.arange(0, 2 * n + 1, 2, dtype=np.int64),
        geom_lonlat=np.zeros((2 * n, 2)), turn_offsets=offsets, turn_to=to,
        win_edge=np.zeros(0, dtype=np.int32), win_start=np.zeros(0, dtype=np.int16),
        win_end=np.zeros(0, dtype=np.int16), n_edges_total=n + 1000, dated=None, subset_of=None,
    )  # fmt: skip
