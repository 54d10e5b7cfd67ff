"""A tick's radius graph reuses what its bundle's graph computed once (issue 20,
``agent.planner.workspace.PER_GRAPH``): its legal turns filtered from the parent's sorted ones
are the turns it sorts itself, pair for pair, on real Manhattan radius graphs of any size; the
values are released with the workspace on a bundle swap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.planner import core
from agent.planner.workspace import PER_GRAPH, release_workspace
from tiles import TileStore


@pytest.mark.parametrize("radius_m", [150.0, 800.0, 3000.0])
def test_radius_graph_arcs_from_the_parent_are_its_own_sorted_arcs(
    manhattan_tiles: Path, radius_m: float
) -> None:
    with TileStore(manhattan_tiles) as store:
        full = store.all()
        rng = np.random.default_rng(int(radius_m))
        for e in rng.integers(0, full.n, 8).tolist():
            g = store.radius_graph(float(full.u_lon[e]), float(full.u_lat[e]), radius_m)
            assert (g.subset_of is not None and g.n < g.subset_of[0].n) or radius_m == 3000.0
            own = core._own_sorted_arcs(g)
            got = core._sorted_arcs(g)
            for a, b in zip(own, got, strict=True):
                assert a.dtype == b.dtype and np.array_equal(a, b)
            assert own[0].shape[0] > 0


def test_the_parents_arcs_are_kept_once_and_released_with_the_workspace(
    manhattan_tiles: Path,
) -> None:
    release_workspace()
    assert len(PER_GRAPH) == 0
    with TileStore(manhattan_tiles) as store:
        full = store.all()
        at = (float(full.u_lon[0]), float(full.u_lat[0]), 500.0)
        g1, g2 = store.radius_graph(*at), store.radius_graph(*at)  # two ticks at one place
        assert g1 is not g2 and g1.subset_of is not None and g2.subset_of is not None
        assert g1.subset_of[0] is g2.subset_of[0]  # one parent: the tiles' cached graph
        core._sorted_arcs(g1)
        core._sorted_arcs(g2)
        assert len(PER_GRAPH) == 1
    release_workspace()
    assert len(PER_GRAPH) == 0
