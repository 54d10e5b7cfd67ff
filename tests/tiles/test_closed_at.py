"""``Graph.closed_at`` over many minutes: for sorted minutes (a plan's layers) each window's
rows are found by a search instead of a (minutes x windows) mask; the same rows either way,
and the same as asking minute by minute."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tiles.conditional import MINUTES_PER_WEEK
from tiles.graph import Graph


def _graph(n: int, win_edge: np.ndarray, start: np.ndarray, end: np.ndarray) -> Graph:
    z, z32 = np.zeros(n), np.zeros(n, dtype=np.float32)
    return Graph(
        edge_id=np.arange(10, 10 + n, dtype=np.int32), u_lon=z, u_lat=z, v_lon=z, v_lat=z,
        u_node=np.arange(n, dtype=np.int32), v_node=np.arange(1, n + 1, dtype=np.int32),
        way_id=np.zeros(n, dtype=np.int64), length_m=z32 + 50.0, speed_kph=z32 + 30.0,
        highway=np.zeros(n, dtype=np.uint8), flags=np.zeros(n, dtype=np.uint16),
        bearing_start=z32, bearing_end=z32,
        geom_offsets=np.arange(0, 2 * n + 1, 2, dtype=np.int64), geom_lonlat=np.zeros((2 * n, 2)),
        turn_offsets=np.zeros(n + 1, dtype=np.int64), turn_to=np.zeros(0, dtype=np.int32),
        win_edge=win_edge.astype(np.int32), win_start=start.astype(np.int16),
        win_end=end.astype(np.int16), n_edges_total=n + 20, dated=None, subset_of=None,
    )  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_sorted_minutes_close_the_links_each_minute_closes(seed: int, repeats: bool) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 12))
    k = int(rng.integers(0, 30))
    win_edge = rng.integers(0, n + 20, k) + 10 - rng.integers(0, 2, k) * 10  # some off the graph
    start = rng.integers(0, MINUTES_PER_WEEK, k)
    # windows of any length, some empty or inverted (they close nothing), some at the week's end
    end = np.minimum(start + rng.integers(-30, 300, k), MINUTES_PER_WEEK)
    g = _graph(n, win_edge, start, end)
    first = int(rng.integers(-2 * MINUTES_PER_WEEK, 2 * MINUTES_PER_WEEK))
    span = int(rng.integers(1, 80))
    mins = np.unique((first + np.arange(span)) % MINUTES_PER_WEEK)  # a plan's distinct minutes
    if repeats:  # sorted with repeats
        mins = np.sort(rng.choice(mins, mins.shape[0] + 5))
    got = g.closed_at(mins)
    assert got.shape == (mins.shape[0], n)
    for i, m in enumerate(mins.tolist()):
        assert np.array_equal(got[i], g.closed_at(m)), m
    shuffled = rng.permutation(mins.shape[0])  # unsorted: the mask path, the same rows
    assert np.array_equal(g.closed_at(mins[shuffled]), got[shuffled])


def test_a_window_closes_from_its_start_to_before_its_end() -> None:
    g = _graph(3, np.array([11, 12, 40]), np.array([100, 200, 100]), np.array([103, 200, 500]))
    got = g.closed_at(np.arange(98, 106))
    assert got[:, 1].tolist() == [False, False, True, True, True, False, False, False]
    assert not got[:, 0].any() and not got[:, 2].any()  # empty window; link 40 not in the graph
