"""Map matching on a radius graph reuses its parent's segment index, bit for bit.

``store.radius_graph`` makes a new graph every plan; ``match_fix`` on it reads the parent's
cached index (``tiles.matching._SubsetIndex``). The same graph without its parent link is
matched the long way (``segments(g)`` built from scratch): every field of every candidate must be
equal, exactly, including the errors.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tiles import MatchConfig, TileStore, match_fix
from tiles.errors import NoMatchError
from tiles.graph import Graph
from tiles.matching import _SUBSET_CACHE, Match


def _both(g: Graph, *args: Any, **kw: Any) -> tuple[Match | str, Match | str]:
    plain = dataclasses.replace(g, subset_of=None)  # the same arrays, no parent: full index
    out: list[Match | str] = []
    for graph in (g, plain):
        try:
            out.append(match_fix(graph, *args, **kw))
        except NoMatchError as e:
            out.append(f"NoMatchError: {e}")
    return out[0], out[1]


@pytest.mark.parametrize("area", ["manhattan", "monaco"])
def test_radius_graph_matches_equal_full_index(area: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(f"{area}_tiles")
    rng = np.random.default_rng(20)
    with TileStore(path) as store:
        full = store.all()
        picks = rng.integers(0, full.n, 60)
        checked = reused = 0
        for i, e in enumerate(picks.tolist()):
            f = rng.uniform(0.0, 1.0)
            geom = full.geometry(e)
            p = geom[0] + f * (geom[-1] - geom[0]) + rng.normal(0.0, 15.0 / 111_195.0, 2)
            lon, lat = float(p[0]), float(p[1])
            # the radius centred away from the fix, as the planner's is not always
            c_lon = lon + rng.normal(0.0, 400.0 / 80_000.0)
            c_lat = lat + rng.normal(0.0, 400.0 / 111_195.0)
            g = store.radius_graph(c_lon, c_lat, 1500.0)
            assert g.subset_of is not None
            heading = float(rng.uniform(0, 360)) if i % 3 else None
            cfg = MatchConfig(radius_m=[50.0, 20.0, 120.0][i % 3])
            allowed = (rng.uniform(0, 1, g.n) < 0.8) if i % 4 == 0 else None
            a, b = _both(g, lon, lat, heading, 10.0, cfg, allowed=allowed)
            assert a == b, (i, a, b)
            reused += g in _SUBSET_CACHE
            checked += isinstance(a, Match)
        assert reused == len(picks)
        assert checked > len(picks) // 2  # most fixes lie near a road of the radius graph


def test_multi_segment_candidates_are_exact(monaco_tiles: Path) -> None:
    """Fixes near the far segments of curved links (``along0`` from the subset's cumulative
    sum) and far from any road (the error)."""
    rng = np.random.default_rng(3)
    with TileStore(monaco_tiles) as store:
        full = store.all()
        counts = np.diff(full.geom_offsets)
        curved = np.flatnonzero(counts >= 4)
        assert curved.size > 20
        for e in rng.choice(curved, 40, replace=False).tolist():
            geom = full.geometry(e)
            p = geom[len(geom) - 2]  # a shape point late on the link
            g = store.radius_graph(float(p[0]) + 0.003, float(p[1]), 1200.0)
            a, b = _both(g, float(p[0]), float(p[1]), None, None)
            assert isinstance(a, Match) and a == b
        lon, lat = float(full.u_lon[0]), float(full.u_lat[0])
        g = store.radius_graph(lon, lat, 800.0)
        a, b = _both(g, lon + 0.05, lat + 0.05, None, None)
        assert isinstance(a, str) and a == b


def test_a_matched_radius_graph_is_freed(monaco_tiles: Path) -> None:
    """The reuse cache is keyed weakly by the radius graph: matching must not keep it (nor its
    parent's index) alive, or every plan's graph would stay in memory."""
    import gc
    import weakref

    with TileStore(monaco_tiles) as store:
        full = store.all()
        lon, lat = float(full.u_lon[10]), float(full.u_lat[10])
        g = store.radius_graph(lon, lat, 800.0)
        match_fix(g, lon, lat)
        assert g in _SUBSET_CACHE
        ref = weakref.ref(g)
        del g
        gc.collect()
        assert ref() is None


def test_a_copy_with_other_geometry_is_not_matched_on_the_parent(monaco_tiles: Path) -> None:
    with TileStore(monaco_tiles) as store:
        full = store.all()
        lon, lat = float(full.u_lon[10]), float(full.u_lat[10])
        g = store.radius_graph(lon, lat, 800.0)
        keep = np.ones(g.n, dtype=bool)
        keep[: g.n // 2] = False
        other = g.subset(keep)  # fewer edges ...
        forged = dataclasses.replace(other, subset_of=g.subset_of)  # ... claiming g's parent
        a, b = _both(forged, lon, lat, None, None)
        assert a == b and forged not in _SUBSET_CACHE


def test_one_radius_graph_matched_again_further_on(monaco_tiles: Path) -> None:
    """``along0``'s running sum covers only the subset's edges up to the candidate's: fixes on
    one radius graph late, early, then later again (shortened, then extended) stay exact."""
    with TileStore(monaco_tiles) as store:
        full = store.all()
        lon, lat = float(full.u_lon[200]), float(full.u_lat[200])
        g = store.radius_graph(lon, lat, 1500.0)
        counts = np.diff(g.geom_offsets)
        curved = np.flatnonzero(counts >= 4)
        assert curved.size > 10
        order = [curved[curved.size // 2], curved[0], curved[-1], curved[1]]
        for e in order:
            p = g.geometry(int(e))[counts[e] - 2]
            a, b = _both(g, float(p[0]), float(p[1]), None, None)
            assert isinstance(a, Match) and a == b, (e, a, b)
        assert g in _SUBSET_CACHE
