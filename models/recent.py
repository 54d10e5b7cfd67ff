"""Recent-demand inputs of the predicted-demand model (spec 2): what happened in the last hours.

For a prediction made at an *anchor* minute ``A`` (the start of the slot it predicts, or the
tick's current minute on the cab), the inputs compare the pickups seen in windows ending at
``A`` with what statistics expected there:

* the 500 m cell and its eight neighbours, the last 15, 30, 60 and 120 minutes;
* the cell alone, the last 60 minutes; the whole network area, the last 60 minutes;
* the whole area since local midnight ("the day so far against its usual level").

On the cab these come either from the live layer's pickups one by one (:class:`RecentPickups`,
:func:`cab_features`) or from a live snapshot's per-cell counts of the last 15, 30 and 60
minutes (:class:`RecentCounts`, :func:`counts_features`): then the 120-minute window and the day
so far are filled in from the last hour (:func:`fill_unobserved`; measured in docs/demand.md).

Each is ``log((observed + k) / (expected + k))`` (``k`` pseudo-pickups keep empty windows
finite). A pickup counts in a window ``[A - w, A)`` by the minute it happened in: a pickup at
10:00:30 is seen from anchor 10:01 on, never by a prediction anchored at 10:00 (causal, tested).
When no recent inputs are known (a cab offline) every ratio is 0 and ``recent_missing`` is 1:
the model was trained with such rows (feature dropout) and then falls back to what statistics
and the time of day say.

The same function (:func:`features_from_windows`) turns window totals into the inputs for
training and evaluation (:func:`recent_features`: from the trip records, cumulative counts per
minute over a whole month) and on the cab (:func:`cab_features`: from the live layer's pickups,
each counted by the minute it happened in, as in the records).

Numpy only: this module runs in the cab.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.demand import CellGrid
from models.errors import DemandDataError

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

NEIGHBOUR_WINDOWS_MIN: tuple[int, ...] = (15, 30, 60, 120)
RECENT_FEATURES: tuple[str, ...] = (
    "recent_nb_15m",  # log ratio observed / expected, cell + 8 neighbours, last 15 min
    "recent_nb_30m",
    "recent_nb_60m",
    "recent_nb_120m",
    "recent_cell_60m",  # the cell alone
    "recent_area_60m",  # every cell of the network
    "recent_area_day",  # since local midnight
    "recent_missing",  # 1: no recent inputs (the ratios above are 0)
)
#: longest look-back a feature needs: a cab timeline of this many minutes before now
LOOKBACK_MIN = 1440
K_NEIGHBOURS = 2.0  # pseudo-pickups of the ratios (cell, neighbourhood)
K_AREA = 10.0
K_DAY = 20.0
MINUTES_PER_WEEK = 7 * 1440


@dataclass(frozen=True, eq=False)
class RecentPickups:
    """Pickups seen before a tick (on the cab: the fleet's live layer; issue 14).

    ``minutes_ago[i] > 0`` is how long before the tick's minute pickup ``i`` happened; its
    position is ``lon[i], lat[i]``. Pickups older than :data:`LOOKBACK_MIN` are ignored; the
    counts must be in the same units as the ones the model learnt from (``model.json``
    ``recent.pickups_per_hail``: the share of the table's hails the live layer sees).
    """

    minutes_ago: F64
    lon: F64
    lat: F64

    def __post_init__(self) -> None:
        n = np.asarray(self.minutes_ago).shape
        if np.asarray(self.lon).shape != n or np.asarray(self.lat).shape != n or len(n) != 1:
            raise DemandDataError("recent pickups: minutes_ago, lon and lat differ in shape")
        a = np.asarray(self.minutes_ago, dtype=np.float64)
        if not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise DemandDataError(
                "recent pickups must lie strictly before the tick (minutes_ago > 0, finite)"
            )


def neighbour_sum(a: npt.NDArray[np.floating], grid: CellGrid) -> F64:
    """Sum over each cell and its 8 neighbours; ``a`` has the cells on its last axis."""
    lead = a.shape[:-1]
    g = np.asarray(a, dtype=np.float64).reshape(*lead, grid.nrows, grid.ncols)
    p = np.zeros((*lead, grid.nrows + 2, grid.ncols + 2))
    p[..., 1:-1, 1:-1] = g  # zero padding (np.pad costs more than the sum on a cab's tick)
    out = np.zeros_like(g)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out += p[..., dy : dy + grid.nrows, dx : dx + grid.ncols]
    return out.reshape(*lead, grid.n_cells)


def expected_per_minute_of_week(cell_rate_per_h: npt.NDArray[np.floating], scale: float) -> F64:
    """Expected recent pickups per (minute of week, cell) from cell rates (3, 48, n_cells).

    ``scale`` converts the table's hails into the recent source's pickups. Day types of an
    ordinary week (Mon-Fri weekday, Saturday, Sunday).
    """
    r = np.asarray(cell_rate_per_h, dtype=np.float64) * (scale / 60.0)
    minute = np.arange(MINUTES_PER_WEEK)
    weekday = minute // 1440
    dt = np.where(weekday < 5, 0, np.where(weekday == 5, 1, 2))
    slot = (minute % 1440) // 30
    return np.asarray(r[dt, slot], dtype=np.float64)


def recent_features(
    obs_cum: F64,
    exp_cum: F64,
    anchor: I64,
    day_start: I64,
    cells: I64,
    grid: CellGrid,
    area_cells: I64,
) -> F32:
    """Recent inputs ``(len(anchor), len(cells), len(RECENT_FEATURES))`` on a minute timeline.

    ``obs_cum[t, c]`` are the pickups of cell ``c`` in timeline minutes ``< t`` (so a window
    ``[A - w, A)`` holds ``obs_cum[A] - obs_cum[A - w]``), ``exp_cum`` the same under
    statistics; ``anchor`` and ``day_start`` (local midnight of each anchor's day) are timeline
    indices, ``anchor >= 120``; ``area_cells`` the cells of the network area.
    """
    a = np.asarray(anchor, dtype=np.int64)
    if a.size and int(a.min()) < max(NEIGHBOUR_WINDOWS_MIN):
        raise DemandDataError("recent features need 120 minutes of timeline before each anchor")
    d0 = np.minimum(np.asarray(day_start, dtype=np.int64), a)
    obs = {w: obs_cum[a] - obs_cum[a - w] for w in NEIGHBOUR_WINDOWS_MIN}
    exp = {w: exp_cum[a] - exp_cum[a - w] for w in NEIGHBOUR_WINDOWS_MIN}
    return features_from_windows(
        obs, exp, obs_cum[a] - obs_cum[d0], exp_cum[a] - exp_cum[d0], cells, grid, area_cells
    )


def features_from_windows(
    obs: dict[int, F64],
    exp: dict[int, F64],
    obs_day: F64,
    exp_day: F64,
    cells: I64,
    grid: CellGrid,
    area_cells: I64,
) -> F32:
    """The recent inputs from window totals per cell: ``obs[w]``/``exp[w]`` (K, n_cells) for each
    ``w`` of :data:`NEIGHBOUR_WINDOWS_MIN`, ``obs_day``/``exp_day`` since local midnight."""
    c = np.asarray(cells, dtype=np.int64)
    k = obs[NEIGHBOUR_WINDOWS_MIN[0]].shape[0]
    out = np.empty((k, c.size, len(RECENT_FEATURES)), dtype=np.float32)
    ws = NEIGHBOUR_WINDOWS_MIN
    # one neighbourhood sum over every window, observed and expected (same sums as one by one)
    nb = neighbour_sum(np.stack([obs[w] for w in ws] + [exp[w] for w in ws]), grid)[..., c]
    for j in range(len(ws)):
        o, e = nb[j], nb[len(ws) + j]
        out[:, :, j] = np.log((o + K_NEIGHBOURS) / (e + K_NEIGHBOURS))
    o60, e60 = obs[60], exp[60]
    out[:, :, 4] = np.log((o60[:, c] + K_NEIGHBOURS) / (e60[:, c] + K_NEIGHBOURS))
    oa = o60[:, area_cells].sum(axis=1)
    ea = e60[:, area_cells].sum(axis=1)
    out[:, :, 5] = np.log((oa + K_AREA) / (ea + K_AREA))[:, None]
    od = obs_day[:, area_cells].sum(axis=1)
    ed = exp_day[:, area_cells].sum(axis=1)
    out[:, :, 6] = np.log((od + K_DAY) / (ed + K_DAY))[:, None]
    out[:, :, 7] = 0.0
    return out


def cab_features(
    recent: RecentPickups,
    grid: CellGrid,
    now_minute_of_week: int,
    exp_week_cum: F64,
    cells: I64,
    area_cells: I64,
) -> F32:
    """The recent inputs ``(1, len(cells), 8)`` of a tick at ``now_minute_of_week`` from the
    live layer's pickups; ``exp_week_cum`` (10081, n_cells): cumulative expected pickups over
    the minutes of an ordinary week (:func:`week_cumulative`).

    A pickup ``minutes_ago`` before now fell in minute ``now - ceil(minutes_ago)``, so it is in
    the window ``[now - w, now)`` when ``ceil(minutes_ago) <= w``, as in the records.
    """
    back = np.ceil(np.asarray(recent.minutes_ago, dtype=np.float64)).astype(np.int64)
    cell = grid.cell_of(recent.lon, recent.lat)
    ok = cell >= 0
    back, cell = back[ok], cell[ok]
    n = grid.n_cells

    def count(w: int) -> F64:
        return np.bincount(cell[back <= w], minlength=n).astype(np.float64)[None, :]

    since = now_minute_of_week % 1440
    obs = {w: count(w) for w in NEIGHBOUR_WINDOWS_MIN}
    exp = {w: week_window(exp_week_cum, now_minute_of_week, w) for w in NEIGHBOUR_WINDOWS_MIN}
    return features_from_windows(
        obs,
        exp,
        count(since),
        week_window(exp_week_cum, now_minute_of_week, since),
        cells,
        grid,
        area_cells,
    )


def week_window(exp_week_cum: F64, end_minute_of_week: int, w: int) -> F64:
    """``(1, n_cells)`` expected pickups in the ``w`` minutes before ``end_minute_of_week`` of
    an ordinary week (a window reaching before Monday 00:00 wraps to the previous week)."""
    lo = end_minute_of_week - w
    e = exp_week_cum[end_minute_of_week] - exp_week_cum[max(lo, 0)]
    if lo < 0:
        e = e + exp_week_cum[MINUTES_PER_WEEK] - exp_week_cum[MINUTES_PER_WEEK + lo]
    return np.asarray(e, dtype=np.float64)[None, :]


#: the windows the fleet's live snapshot counts per cell (sync.live: the last 15, 30, 60 min)
SNAPSHOT_WINDOWS_MIN: tuple[int, ...] = (15, 30, 60)
#: the recent inputs a live snapshot cannot give, filled in by :func:`fill_unobserved`
FILLED_FEATURES: tuple[str, ...] = ("recent_nb_120m", "recent_area_day")
#: how the unobserved part of a window is filled: at its usual level, or at the last hour's
FILL_RULES: tuple[str, ...] = ("usual", "level")


@dataclass(frozen=True, eq=False)
class RecentCounts:
    """Pickups per cell counted in the windows of the fleet's live snapshot.

    ``counts[c, j]`` are the pickups of cell ``c`` of the model's grid in the last
    :data:`SNAPSHOT_WINDOWS_MIN` ``[j]`` minutes before ``end_minute_of_week`` (the minute
    of week the snapshot was built in), already in the model's units (``model.json``
    ``recent.pickups_per_hail``). Cumulative windows: finite, >= 0, non-decreasing along ``j``.
    The 120-minute window and the day so far are not counted: :func:`counts_features` fills
    their unobserved part (``fill``, see :func:`fill_unobserved`).
    """

    counts: F64
    end_minute_of_week: int
    fill: str = "level"  # chosen on the validation week (docs/demand.md, "From a snapshot")

    def __post_init__(self) -> None:
        c = np.asarray(self.counts)
        if c.ndim != 2 or c.shape[1] != len(SNAPSHOT_WINDOWS_MIN):
            raise DemandDataError(
                f"recent counts: shape {c.shape}, expected (n_cells, {len(SNAPSHOT_WINDOWS_MIN)})"
            )
        if not np.all(np.isfinite(c)) or np.any(c < 0):
            raise DemandDataError("recent counts must be finite and >= 0")
        if np.any(np.diff(c, axis=1) < 0):
            raise DemandDataError("recent counts: a longer window holds fewer pickups")
        if not 0 <= int(self.end_minute_of_week) < MINUTES_PER_WEEK:
            raise DemandDataError(f"recent counts: minute of week {self.end_minute_of_week}")
        if self.fill not in FILL_RULES:
            raise DemandDataError(f"recent counts: fill {self.fill!r}, one of {FILL_RULES}")


def fill_unobserved(
    obs60: F64,
    exp60: F64,
    exp120: F64,
    exp_day: F64,
    since_midnight: npt.ArrayLike,
    area_cells: I64,
    fill: str = "usual",
) -> tuple[F64, F64]:
    """``(obs120, obs_day)`` from the last hour's pickups only, arrays ``(K, n_cells)``;
    ``since_midnight`` (K,) minutes of each anchor's day so far.

    ``usual``: the part of a window before the last hour had its expected pickups (the cell's
    120-minute ratio is the 60-minute one shrunk toward 1; the day's is the last hour's
    shrunk by how much of the day it covers). ``level``: that part ran at the last hour's
    level (the neighbourhood's for 120 min, the area's for the day). A day shorter than an
    hour holds the hour's pickups in proportion to its expectation.
    """
    since = np.asarray(since_midnight, dtype=np.int64).reshape(-1, 1)
    older120 = exp120 - exp60
    older_day = exp_day - exp60
    if fill == "usual":
        r_nb: F64 | float = 1.0
        r_area: F64 | float = 1.0
    else:
        r_nb = (obs60 + K_NEIGHBOURS) / (exp60 + K_NEIGHBOURS)
        o = obs60[:, area_cells].sum(axis=1, keepdims=True)
        e = exp60[:, area_cells].sum(axis=1, keepdims=True)
        r_area = (o + K_AREA) / (e + K_AREA)
    obs120 = obs60 + older120 * r_nb
    part = np.divide(exp_day, exp60, out=np.zeros_like(exp_day), where=exp60 > 0)
    obs_day = np.where(since >= 60, obs60 + older_day * r_area, obs60 * part)
    return np.asarray(obs120, np.float64), np.asarray(obs_day, np.float64)


def counts_features(
    recent: RecentCounts,
    grid: CellGrid,
    exp_week_cum: F64,
    cells: I64,
    area_cells: I64,
) -> F32:
    """The recent inputs ``(1, len(cells), 8)`` from a live snapshot's counts: the 15/30/60
    minute windows as counted, ending at ``recent.end_minute_of_week``, the 120-minute window
    and the day so far filled (:func:`fill_unobserved`)."""
    if recent.counts.shape[0] != grid.n_cells:
        raise DemandDataError(
            f"recent counts for {recent.counts.shape[0]} cells, the model's grid has {grid.n_cells}"
        )
    end = int(recent.end_minute_of_week)
    c = np.asarray(recent.counts, dtype=np.float64)
    obs = {w: c[None, :, j].copy() for j, w in enumerate(SNAPSHOT_WINDOWS_MIN)}
    exp = {w: week_window(exp_week_cum, end, w) for w in NEIGHBOUR_WINDOWS_MIN}
    since = end % 1440
    exp_day = week_window(exp_week_cum, end, since)
    obs[120], obs_day = fill_unobserved(
        obs[60], exp[60], exp[120], exp_day, [since], area_cells, recent.fill
    )
    return features_from_windows(obs, exp, obs_day, exp_day, cells, grid, area_cells)


def week_cumulative(exp_week: F64) -> F64:
    """(10081, n_cells): expected pickups in minutes ``< t`` of the week."""
    out = np.zeros((MINUTES_PER_WEEK + 1, exp_week.shape[1]), dtype=np.float64)
    np.cumsum(exp_week, axis=0, out=out[1:])
    return out


def missing_features(n_anchor: int, n_cells: int) -> F32:
    """Recent inputs of a cab without them (offline): ratios 0, ``recent_missing`` 1."""
    out = np.zeros((n_anchor, n_cells, len(RECENT_FEATURES)), dtype=np.float32)
    out[:, :, -1] = 1.0
    return out


def hour_features(minute_of_day: npt.ArrayLike, slot_minutes: int) -> tuple[F64, F64]:
    """sin/cos of the hour of the slot's centre."""
    m = np.asarray(minute_of_day, dtype=np.float64)
    ang = 2.0 * math.pi * (m + 0.5 * slot_minutes) / 1440.0
    return np.sin(ang), np.cos(ang)
