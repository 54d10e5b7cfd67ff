"""``tiles.spatial.within_radius`` is the mask of the full haversine distances, bit for bit
(the planner's radius graph, so every plan, depends on it), on the real network and on
points placed exactly at the radius, where only the full computation decides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiles import TileStore
from tiles.geo import haversine_m
from tiles.graph import Graph
from tiles.spatial import within_radius


def _full(g: Graph, lon: float, lat: float, r: float) -> np.ndarray:
    du = haversine_m(lon, lat, g.u_lon, g.u_lat)
    dv = haversine_m(lon, lat, g.v_lon, g.v_lat)
    return np.asarray((du <= r) | (dv <= r))


@pytest.fixture(scope="module")
def monaco(monaco_tiles: Path) -> Graph:
    with TileStore(monaco_tiles) as store:
        return store.all()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    i=st.integers(0, 10**6),
    dx=st.floats(-0.02, 0.02),
    dy=st.floats(-0.02, 0.02),
    r=st.one_of(st.floats(0.0, 5000.0), st.sampled_from([0.0, 1e-9, 1e8, float("inf")])),
)
def test_within_radius_is_the_full_haversine_mask(
    monaco: Graph, i: int, dx: float, dy: float, r: float
) -> None:
    k = i % monaco.n
    lon, lat = float(monaco.u_lon[k]) + dx, float(monaco.u_lat[k]) + dy
    assert np.array_equal(within_radius(monaco, lon, lat, r), _full(monaco, lon, lat, r))


def test_links_exactly_at_the_radius_are_decided_as_in_full(monaco: Graph) -> None:
    """Radii equal to (and one ulp either side of) the distances of real link ends: the cases
    the fast comparison leaves to the full computation."""
    rng = np.random.default_rng(3)
    for k in rng.integers(0, monaco.n, 40).tolist():
        lon, lat = float(monaco.v_lon[k]) + 1e-3, float(monaco.v_lat[k]) - 7e-4
        d = haversine_m(lon, lat, monaco.u_lon, monaco.u_lat)
        for j in rng.integers(0, monaco.n, 5).tolist():
            for r in (float(d[j]), float(np.nextafter(d[j], 0.0)), float(np.nextafter(d[j], 1e9))):
                got = within_radius(monaco, lon, lat, r)
                assert np.array_equal(got, _full(monaco, lon, lat, r)), (k, j, r)


class _Ends:
    """Link ends alone (all that within_radius reads of a graph)."""

    def __init__(self, lon: np.ndarray, lat: np.ndarray) -> None:
        self.u_lon, self.u_lat = lon[0], lat[0]
        self.v_lon, self.v_lat = lon[1], lat[1]


@pytest.mark.parametrize("lat0", [0.0, 35.66, -60.0, 84.0, -89.9])
@pytest.mark.parametrize("lon0", [0.0, 139.7, 179.99, -179.995])
def test_the_bounds_decide_as_the_full_mask_at_any_latitude_and_across_the_antimeridian(
    lat0: float, lon0: float
) -> None:
    """Link ends scattered around the fix (wrapping round the antimeridian, near the pole),
    some placed at the radius and one ulp off it: the bounds that skip the sine decide no link
    otherwise than the full haversine."""
    rng = np.random.default_rng(int(abs(lat0) * 100 + abs(lon0)))
    for r in (25.0, 800.0, 3000.0, 60_000.0):
        span = 3.0 * r / 111_195.0
        lat = np.clip(lat0 + rng.uniform(-span, span, (2, 4000)), -90.0, 90.0)
        lon = lon0 + rng.uniform(-span, span, (2, 4000)) / max(np.cos(np.radians(lat0)), 0.02)
        lon = (lon + 180.0) % 360.0 - 180.0
        g = _Ends(lon, lat)
        d = haversine_m(lon0, lat0, g.u_lon, g.u_lat)
        for j in rng.integers(0, 4000, 4).tolist():  # radii exactly at a link end's distance
            for rr in (float(d[j]), float(np.nextafter(d[j], 0.0)), float(np.nextafter(d[j], 1e9))):
                got = within_radius(g, lon0, lat0, rr)  # type: ignore[arg-type]  # ends only
                assert np.array_equal(got, _full(g, lon0, lat0, rr)), (r, j, rr)  # type: ignore[arg-type]
        got = within_radius(g, lon0, lat0, r)  # type: ignore[arg-type]
        want = _full(g, lon0, lat0, r)  # type: ignore[arg-type]
        assert np.array_equal(got, want) and 0 < want.sum() < want.size


def test_nan_fix_matches_nothing_as_in_full(monaco: Graph) -> None:
    got = within_radius(monaco, float("nan"), 43.73, 3000.0)
    assert not got.any() and np.array_equal(got, _full(monaco, float("nan"), 43.73, 3000.0))


def test_radius_graph_is_the_full_mask_subset(monaco_tiles: Path) -> None:
    with TileStore(monaco_tiles) as store:
        full = store.all()
        lon, lat = float(full.u_lon[100]), float(full.u_lat[100])
        g = store.radius_graph(lon, lat, 800.0)
        parent = g.subset_of[0] if g.subset_of is not None else full
        want = parent.edge_id[_full(parent, lon, lat, 800.0)]
        assert g.n > 0 and np.array_equal(g.edge_id, want)
