"""``Graph.subset`` keeps, of every edge in the mask, its arrays, shape points, turns and
no-entry windows, in order: checked against the edge-by-edge definition on random masks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from tiles import TileStore
from tiles.graph import Graph


def _by_edge(g: Graph, keep: np.ndarray) -> dict[str, np.ndarray]:
    idx = np.flatnonzero(keep)
    kept = set(g.edge_id[idx].tolist())
    return {
        "geom_lonlat": np.concatenate([g.geometry(int(i)) for i in idx]).reshape(-1, 2),
        "turn_to": np.concatenate(
            [g.turn_to[g.turn_offsets[i] : g.turn_offsets[i + 1]] for i in idx]
        ).astype(g.turn_to.dtype),
        "win_edge": np.array([w for w in g.win_edge.tolist() if w in kept], dtype=g.win_edge.dtype),
        "win_start": g.win_start[[w in kept for w in g.win_edge.tolist()]],
        "geom_offsets": np.concatenate([[0], np.cumsum(np.diff(g.geom_offsets)[idx])]),
        "turn_offsets": np.concatenate([[0], np.cumsum(np.diff(g.turn_offsets)[idx])]),
        "edge_id": g.edge_id[idx],
        "flags": g.flags[idx],
    }


def test_subset_keeps_each_kept_edge_whole(manhattan_tiles: Path) -> None:
    rng = np.random.default_rng(11)
    with TileStore(manhattan_tiles) as store:
        g = store.all()
    assert g.win_edge.size > 0  # Midtown has no-entry windows: the window filter is exercised
    for share in (0.0, 0.05, 0.5, 0.97, 1.0):
        keep = rng.uniform(0.0, 1.0, g.n) < share
        sub = g.subset(keep)
        assert sub.subset_of is not None and np.array_equal(sub.subset_of[1], np.flatnonzero(keep))
        if not keep.any():
            assert sub.n == 0 and sub.geom_lonlat.shape == (0, 2) and sub.turn_to.size == 0
            continue
        for name, want in _by_edge(g, keep).items():
            got = getattr(sub, name)
            assert got.dtype == want.dtype or name.endswith("offsets"), name
            assert np.array_equal(got, want), name
        assert dataclasses.replace(sub, subset_of=None).geometry(0).shape[1] == 2
