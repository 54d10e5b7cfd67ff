"""Invariants of the statistical estimator and the snapper (Hypothesis) on the real network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.snap import snap_pickups
from models.statistics import (
    StatsConfig,
    _circular_smooth,
    edge_midpoints,
    make_grid,
    rates_from_counts,
)
from tests.conftest import TRIPS
from tiles import Graph, TileStore
from tools.cli import main


@pytest.fixture(scope="module")
def graph(manhattan_tiles: Path) -> Graph:
    with TileStore(manhattan_tiles) as store:
        return store.all()


pickups = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 47), st.integers(0, 10**6), st.integers(1, 30)),
    min_size=1,
    max_size=60,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=pickups, expo_scale=st.floats(1e-3, 10.0))
def test_link_rates_add_up_to_the_area_rate(
    graph: Graph, rows: list[tuple[int, int, int, int]], expo_scale: float
) -> None:
    cfg = StatsConfig()
    grid = make_grid(graph, cfg.cell_m)
    allowed = graph.cruise_allowed()
    ok_edges = np.flatnonzero(allowed)
    counts = np.zeros((3, 48, graph.n))
    for d, s, e, c in rows:
        counts[d, s, ok_edges[e % ok_edges.size]] += c
    exposure = np.full((3, 48), expo_scale)
    lon, lat = edge_midpoints(graph)
    cell = grid.cell_of(lon, lat)
    rates = rates_from_counts(
        counts, exposure, cell, grid.n_cells, graph.length_m.astype(float), allowed, cfg
    )
    assert np.all(np.isfinite(rates)) and np.all(rates >= 0)
    assert np.all(rates[:, :, ~allowed] == 0)
    area = _circular_smooth(counts.sum(axis=2), cfg.area_halfwidth_slots) / _circular_smooth(
        exposure, cfg.area_halfwidth_slots
    )
    np.testing.assert_allclose(rates.sum(axis=2), area, rtol=1e-9)
    # shrinkage: wherever the area has demand, no cruisable link is left at zero
    busy = area > 0
    assert busy.any()
    assert np.all(rates[busy][:, allowed] > 0)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pts=st.lists(
        st.tuples(
            st.floats(-74.012, -73.963),
            st.floats(40.736, 40.759),
            st.floats(-74.02, -73.95),
            st.floats(40.70, 40.80),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_each_pickup_is_one_whole_pickup_on_cruisable_links(
    graph: Graph, pts: list[tuple[float, float, float, float]]
) -> None:
    a = np.array(pts, dtype=float)
    s = snap_pickups(graph, a[:, 0], a[:, 1], a[:, 2], a[:, 3])
    trip, edge, w = s.edge_weights(graph.n)
    assert np.all(graph.cruise_allowed()[edge])
    per_trip = np.bincount(trip, weights=w, minlength=a.shape[0])
    np.testing.assert_allclose(per_trip[s.ok], 1.0)
    assert np.all(per_trip[~s.ok] == 0)
    assert np.all(s.distance_m[s.ok] <= 60.0)


def test_cli_build_reports_drops(
    manhattan_tiles: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        [
            "demand",
            "build",
            "--tiles",
            str(manhattan_tiles),
            "--trips",
            str(TRIPS["gcp_valid"]),
            str(TRIPS["reuven_2015_06"]),
            "--out",
            str(tmp_path),
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    reuven = out["inputs"][1]
    assert reuven["mode"] == "windows" and out["inputs"][0]["mode"] == "span"
    assert reuven["dropped"]["missing_coordinates"] == 129  # real rows with 0,0 pickups
    assert reuven["rows"] == 9999
    assert out["snapping"]["dropped_no_link_within_radius"] > 0
    assert (tmp_path / "demand.npz").exists() and (tmp_path / "demand.json").exists()
