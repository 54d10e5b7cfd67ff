"""Routing on tiles equals scipy's Dijkstra on the untiled graph; round trips; matching."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import dijkstra

import tiles
from tests.conftest import OSM, REPO
from tiles import TileStore, match_fix
from tiles._osm import RawGraph, read_osm
from tiles.graph import Graph
from tiles.routing import DEFAULT_AVOID
from tiles.store import write_tiles


@pytest.fixture(scope="module")
def raw_manhattan() -> RawGraph:
    return read_osm(OSM["manhattan"])


@pytest.fixture(scope="module")
def raw_shibuya() -> RawGraph:
    return read_osm(OSM["shibuya"])


def _raw_as_graph(raw: RawGraph) -> Graph:
    """The untiled import as a Graph (ids = import order), for comparisons."""
    n = raw.n_edges
    return Graph(
        edge_id=np.arange(n, dtype=np.int32),
        u_lon=raw.node_lon[raw.edge_u],
        u_lat=raw.node_lat[raw.edge_u],
        v_lon=raw.node_lon[raw.edge_v],
        v_lat=raw.node_lat[raw.edge_v],
        u_node=raw.edge_u,
        v_node=raw.edge_v,
        way_id=raw.edge_way,
        length_m=raw.edge_length_m,
        speed_kph=raw.edge_speed_kph,
        highway=raw.edge_highway,
        flags=raw.edge_flags,
        bearing_start=raw.edge_bearing_start,
        bearing_end=raw.edge_bearing_end,
        geom_offsets=raw.geom_offsets,
        geom_lonlat=raw.geom_lonlat,
        turn_offsets=raw.turn_offsets,
        turn_to=raw.turn_to,
        win_edge=raw.win_edge,
        win_start=raw.win_start,
        win_end=raw.win_end,
        n_edges_total=n,
    )


def _key(g: Graph) -> list[tuple[int, int, int, float, float]]:
    first = g.geom_lonlat[g.geom_offsets[:-1] + 1]
    return list(
        zip(
            g.way_id.tolist(),
            g.u_node.tolist(),
            g.v_node.tolist(),
            np.round(first[:, 0], 7).tolist(),
            np.round(first[:, 1], 7).tolist(),
            strict=True,
        )
    )


def _mapping(raw_g: Graph, tiled: Graph) -> np.ndarray:
    """tiled local index -> raw index, by edge identity (way, end nodes, first shape point)."""
    raw_index = {k: i for i, k in enumerate(_key(raw_g))}
    assert len(raw_index) == raw_g.n
    return np.array([raw_index[k] for k in _key(tiled)])


def test_shortest_paths_equal_scipy_on_untiled_graph(
    manhattan_tiles: Path, raw_manhattan: RawGraph
) -> None:
    store = TileStore(manhattan_tiles)
    tiled = store.all()
    raw_g = _raw_as_graph(raw_manhattan)
    to_raw = _mapping(raw_g, tiled)
    # the scipy reference: the untiled line graph, same cost and the same edges allowed
    cost = raw_g.travel_time_s
    allowed = (raw_g.flags & DEFAULT_AVOID) == 0
    ref = raw_g.line_graph(cost, allowed)
    rng = np.random.default_rng(20261126)
    ok_edges = np.flatnonzero((tiled.flags & DEFAULT_AVOID) == 0)
    compared = 0
    for _ in range(200):
        s, t = (int(x) for x in rng.choice(ok_edges, 2, replace=False))
        dist = dijkstra(ref, directed=True, indices=int(to_raw[s]))
        expect = float(dist[to_raw[t]])
        if not np.isfinite(expect):
            with pytest.raises(tiles.NoRouteError):
                tiles.edge_path(tiled, s, t)
            continue
        path, got = tiles.edge_path(tiled, s, t)
        assert got == pytest.approx(expect, rel=1e-9, abs=1e-6)
        # the path is legal: each step is a permitted turn, and its cost adds up
        src, dst = tiled.turn_pairs
        turns = set(zip(src.tolist(), dst.tolist(), strict=True))
        assert all((a, b) in turns for a, b in itertools.pairwise(path))
        assert float(tiled.travel_time_s[path[1:]].sum()) == pytest.approx(got, rel=1e-9)
        compared += 1
    assert compared > 150


def test_route_crosses_tile_borders(manhattan_tiles: Path) -> None:
    store = TileStore(manhattan_tiles)
    route = tiles.shortest_path(store, (-74.0020, 40.7400), (-73.9700, 40.7560))
    tile_ids = {store.tile_of_edge(e) for e in route.edges}
    assert len(tile_ids) >= 3
    assert 3000 < route.length_m < 6000
    g = store.all()
    loc = g.local(list(route.edges))
    assert np.all(loc >= 0)
    assert np.all(g.v_node[loc[:-1]] == g.u_node[loc[1:]])  # connected end to end


def test_distance_route_no_longer_than_time_route(manhattan_tiles: Path) -> None:
    store = TileStore(manhattan_tiles)
    a, b = (-73.9855, 40.7580), (-73.9772, 40.7420)
    by_time = tiles.shortest_path(store, a, b, "time")
    by_dist = tiles.shortest_path(store, a, b, "distance")
    assert by_dist.length_m <= by_time.length_m + 1e-6
    assert by_time.duration_s <= by_dist.duration_s + 1e-6


_FIXTURE_OK = [HealthCheck.function_scoped_fixture]


@settings(max_examples=8, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(tile_deg=st.floats(min_value=0.002, max_value=0.05))
def test_tile_round_trip(
    tmp_path_factory: pytest.TempPathFactory, raw_shibuya: RawGraph, tile_deg: float
) -> None:
    out = tmp_path_factory.mktemp("rt") / "tiles.sqlite"
    write_tiles(raw_shibuya, out, tile_deg, {"name": "shibuya", "sha256": "0" * 64})
    with TileStore(out) as store:
        g = store.all()
        raw_g = _raw_as_graph(raw_shibuya)
        m = _mapping(raw_g, g)
        assert sorted(m.tolist()) == list(range(raw_g.n))  # every edge exactly once
        for name in ("length_m", "speed_kph", "highway", "flags", "u_lon", "v_lat"):
            assert np.array_equal(getattr(g, name), getattr(raw_g, name)[m]), name
        # geometry and turns survive (turn targets renumbered consistently)
        for i in range(0, g.n, 37):
            assert np.array_equal(g.geometry(i), raw_g.geometry(int(m[i])))
        src, dst = g.turn_pairs
        rsrc, rdst = raw_g.turn_pairs
        assert set(zip(m[src].tolist(), m[dst].tolist(), strict=True)) == set(
            zip(rsrc.tolist(), rdst.tolist(), strict=True)
        )
        # windows
        sunday_13 = 6 * 1440 + 13 * 60
        assert np.array_equal(g.closed_at(sunday_13), raw_g.closed_at(sunday_13)[m])
        # each edge lives in the tile of its start node, with contiguous ids per tile
        for e in range(0, g.n, 11):
            tid = store.tile_of_edge(int(g.edge_id[e]))
            assert tid == int(tiles.tile_of(g.u_lon[e], g.u_lat[e], tile_deg))


@settings(max_examples=25, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(lon=st.floats(-74.005, -73.97), lat=st.floats(40.738, 40.757), r=st.floats(100, 1500))
def test_radius_graph_equals_brute_force(
    manhattan_tiles: Path, lon: float, lat: float, r: float
) -> None:
    store = TileStore(manhattan_tiles)
    sub = store.radius_graph(lon, lat, r)
    g = store.all()
    du = tiles.geo.haversine_m(lon, lat, g.u_lon, g.u_lat)
    dv = tiles.geo.haversine_m(lon, lat, g.v_lon, g.v_lat)
    assert sub.edge_id.tolist() == g.edge_id[(du <= r) | (dv <= r)].tolist()
    # CSR views for engineers
    assert sub.line_graph(sub.travel_time_s).shape == (sub.n, sub.n)


def test_cache_is_bounded_and_lazy(manhattan_tiles: Path) -> None:
    store = TileStore(manhattan_tiles, cache_tiles=2, cache_graphs=1)
    assert store.tiles_loaded == 0
    for t in store.tiles:
        store.load_tile(t.tile_id)
    assert store.tiles_loaded == len(store.tiles)
    assert len(store._tile_cache) == 2
    store.load_tile(store.tiles[-1].tile_id)
    assert store.tiles_loaded == len(store.tiles)  # a cached tile is not read again


def test_map_matching_picks_direction_by_heading(manhattan_tiles: Path) -> None:
    store = TileStore(manhattan_tiles)
    g = store.radius_graph(-73.9897, 40.7506, 300)  # West 34th Street near 7th Avenue
    names = store.way_names(np.unique(g.way_id))
    east = match_fix(g, -73.9897, 40.7506, heading_deg=119.0, speed_mps=8.0)
    west = match_fix(g, -73.9897, 40.7506, heading_deg=299.0, speed_mps=8.0)
    for m, sign in ((east, 1), (west, -1)):
        e = int(g.local([m.edge_id])[0])
        assert names[int(g.way_id[e])] == "West 34th Street"
        assert np.sign(g.v_lon[e] - g.u_lon[e]) == sign
        assert m.best.distance_m < 15
    assert east.edge_id != west.edge_id
    with pytest.raises(tiles.NoMatchError):
        match_fix(g, -73.9, 40.9, None, None)


def test_route_cli_json(manhattan_tiles: Path) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cli",
            "route",
            "--tiles",
            str(manhattan_tiles),
            "--from",
            "-73.9855,40.7580",
            "--to",
            "-73.9772,40.7420",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    doc = json.loads(res.stdout)
    assert set(doc) == {"length_m", "duration_s", "edges", "coordinates"}
    assert doc["length_m"] > 1500 and doc["duration_s"] > 60
    assert all(len(c) == 2 and -74.1 < c[0] < -73.9 for c in doc["coordinates"])
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cli",
            "route",
            "--tiles",
            str(manhattan_tiles),
            "--from",
            "40.7580,-73.9855",
            "--to",
            "-73.9772,40.7420",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
