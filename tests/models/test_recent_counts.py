"""Recent inputs from a live snapshot's per-cell counts (models.recent.RecentCounts): the windows
it has equal the inputs from the same pickups one by one; the windows it lacks are filled."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from models import DemandDataError
from models.demand import CellGrid
from models.recent import (
    FILL_RULES,
    FILLED_FEATURES,
    MINUTES_PER_WEEK,
    RECENT_FEATURES,
    SNAPSHOT_WINDOWS_MIN,
    RecentCounts,
    RecentPickups,
    cab_features,
    counts_features,
    week_cumulative,
)

GRID = CellGrid(-74.0, 40.7, 0.01, 0.01, 5, 4)
#: the inputs a snapshot gives (the rest are filled)
FROM_SNAPSHOT = [i for i, f in enumerate(RECENT_FEATURES[:-1]) if f not in FILLED_FEATURES]


def _expected(seed: int) -> npt.NDArray[np.float64]:
    """(10081, n_cells) cumulative expected pickups of a made-up week."""
    rng = np.random.default_rng(seed)
    per_min = rng.gamma(2.0, 0.02, size=(MINUTES_PER_WEEK, GRID.n_cells))
    return week_cumulative(per_min)


@pytest.mark.parametrize("now", [3 * 1440 + 18 * 60, 30, 6 * 1440 + 1439])
def test_snapshot_windows_equal_the_pickups_they_count(now: int) -> None:
    rng = np.random.default_rng(now)
    cum = _expected(1)
    n = 400
    ago = rng.uniform(0.01, 60.0, n)
    col = rng.integers(0, GRID.ncols, n)
    row = rng.integers(0, GRID.nrows, n)
    lon = GRID.min_lon + (col + rng.uniform(0.1, 0.9, n)) * GRID.cell_deg_lon
    lat = GRID.min_lat + (row + rng.uniform(0.1, 0.9, n)) * GRID.cell_deg_lat
    cells = np.arange(GRID.n_cells, dtype=np.int64)
    area = cells[:-3]
    one_by_one = cab_features(RecentPickups(ago, lon, lat), GRID, now, cum, cells, area)
    # the snapshot's counts: a pickup in window w when it happened in its minutes (as the cab)
    back = np.ceil(ago).astype(np.int64)
    cell = GRID.cell_of(lon, lat)
    counts = np.stack(
        [np.bincount(cell[back <= w], minlength=GRID.n_cells) for w in SNAPSHOT_WINDOWS_MIN],
        axis=1,
    ).astype(np.float64)
    for fill in FILL_RULES:
        got = counts_features(RecentCounts(counts, now, fill), GRID, cum, cells, area)
        np.testing.assert_allclose(got[..., FROM_SNAPSHOT], one_by_one[..., FROM_SNAPSHOT])
        assert np.all(got[..., -1] == 0.0)  # recent inputs are known


@pytest.mark.parametrize("fill", FILL_RULES)
def test_a_usual_last_hour_fills_a_usual_day(fill: str) -> None:
    """The last hour exactly at its expectation: every filled ratio is 0 (usual level)."""
    cum = _expected(2)
    now = 2 * 1440 + 14 * 60
    cells = np.arange(GRID.n_cells, dtype=np.int64)
    exp = np.stack([cum[now] - cum[now - w] for w in SNAPSHOT_WINDOWS_MIN], axis=1)  # (n_cells, 3)
    f = counts_features(RecentCounts(exp, now, fill), GRID, cum, cells, cells)
    np.testing.assert_allclose(f[0, :, :7], 0.0, atol=1e-6)
    # twice as busy in the last hour: the 120-minute and day inputs rise, more so under "level"
    busy = counts_features(RecentCounts(2 * exp, now, fill), GRID, cum, cells, cells)
    nb120, day = RECENT_FEATURES.index("recent_nb_120m"), RECENT_FEATURES.index("recent_area_day")
    assert np.all(busy[0, :, nb120] > 0) and np.all(busy[0, :, day] > 0)


def test_level_fill_trusts_the_last_hour_more_than_usual() -> None:
    cum = _expected(3)
    now = 4 * 1440 + 20 * 60
    cells = np.arange(GRID.n_cells, dtype=np.int64)
    exp = np.stack([cum[now] - cum[now - w] for w in SNAPSHOT_WINDOWS_MIN], axis=1)
    usual, level = (
        counts_features(RecentCounts(3 * exp, now, fill), GRID, cum, cells, cells)
        for fill in ("usual", "level")
    )
    j = RECENT_FEATURES.index("recent_area_day")
    assert np.all(level[0, :, j] > usual[0, :, j] + 0.1)


@pytest.mark.parametrize(
    ("counts", "match"),
    [
        (np.full((GRID.n_cells, 3), -1.0), "finite and >= 0"),
        (np.full((GRID.n_cells, 3), np.nan), "finite and >= 0"),
        (np.tile([5.0, 3.0, 9.0], (GRID.n_cells, 1)), "longer window holds fewer"),
        (np.zeros((GRID.n_cells, 2)), "shape"),
    ],
)
def test_odd_counts_are_refused(counts: npt.NDArray[np.float64], match: str) -> None:
    with pytest.raises(DemandDataError, match=match):
        RecentCounts(counts, 100)


def test_counts_for_another_grid_are_refused() -> None:
    cum = _expected(4)
    cells = np.arange(GRID.n_cells, dtype=np.int64)
    with pytest.raises(DemandDataError, match="cells"):
        counts_features(RecentCounts(np.zeros((7, 3)), 100), GRID, cum, cells, cells)
    with pytest.raises(DemandDataError, match="minute of week"):
        RecentCounts(np.zeros((GRID.n_cells, 3)), MINUTES_PER_WEEK)


def test_neighbour_sum_equals_the_padded_sum_bit_for_bit() -> None:
    """The tick's one stacked neighbourhood sum (zero padding by slicing) equals a plain
    ``np.pad`` sum of each array alone, bit for bit (training and the cab share it)."""
    from models.recent import neighbour_sum

    rng = np.random.default_rng(5)
    a = rng.gamma(2.0, 1.3, size=(8, 3, GRID.n_cells))
    g = a.reshape(8, 3, GRID.nrows, GRID.ncols)
    p = np.pad(g, [(0, 0), (0, 0), (1, 1), (1, 1)])
    want = np.zeros_like(g)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            want += p[..., dy : dy + GRID.nrows, dx : dx + GRID.ncols]
    got = neighbour_sum(a, GRID)
    assert np.array_equal(got, want.reshape(8, 3, GRID.n_cells))
    assert np.array_equal(got[2], neighbour_sum(a[2], GRID))
    # a corner cell sums its 3 neighbours and itself
    assert got[0, 0, 0] == pytest.approx(a[0, 0, [0, 1, GRID.ncols, GRID.ncols + 1]].sum())
