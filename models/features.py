"""The predicted-demand model's feature specification, shared by training and the device.

One row per (link, 30-minute slot). Static per-link features are computed once at training time
from the road graph and the training pickups and shipped beside the model (``features.npz``,
``(n_edges, len(STATIC_FEATURES))`` float32); time features and the statistical-demand features
are read per tick from the time and the :class:`~models.demand.DemandTable`. The ONNX graph takes
``X`` float32 ``(N, len(FEATURES))`` in the order of :data:`FEATURES` and returns ``rate``
float32 ``(N, 1)``: expected street hails per hour, already absolute (the model multiplies the
statistical rate, an input, by a learned correction inside the graph).

Spec 2 (:data:`CELL_FEATURES`, :func:`assemble_cells`) is the recent-demand cell model's: one
row per (500 m cell, slot), with the recent inputs of :mod:`models.recent`.

Numpy only: this module runs in the cab.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from models.demand import DAY_TYPES, SLOTS_PER_DAY, DemandTable, slot_of_minute_of_week
from models.recent import RECENT_FEATURES, hour_features

FEATURE_SPEC_VERSION = 1

STATIC_FEATURES: tuple[str, ...] = (
    "highway_code",  # index into tiles.tags.HIGHWAY_CLASSES
    "length_m",
    "oneway",  # 1 when the link has no reverse twin
    "along_m",  # midpoint position along Manhattan's avenues (grid rotated 29 degrees), metres
    "across_m",  # and across them, metres, from the network's centre
    "dir_cos2",  # cos/sin of twice the link bearing: avenue vs street direction, sign-free
    "dir_sin2",
    "log_pickups_100m",  # log(1 + training pickups within 100 m of the midpoint), all times
    "log_pickups_300m",
    "log_link_share",  # log of the link's share of all-time statistical demand
)
DYNAMIC_FEATURES: tuple[str, ...] = (
    "day_type",
    "hour_sin",
    "hour_cos",
    "stat_log_rate",  # log of the statistical rate of this link and slot (hails/h, floored)
    "stat_log_cell_rate",  # log of the statistical rate of the link's 500 m cell and slot
)
FEATURES: tuple[str, ...] = STATIC_FEATURES + DYNAMIC_FEATURES
STAT_LOG_RATE_INDEX = FEATURES.index("stat_log_rate")
#: rates below this (hails/h) are floored before the log
RATE_FLOOR_PER_H = 1e-3
#: Manhattan's street grid is rotated ~29 degrees clockwise from true north
MANHATTAN_GRID_DEG = 29.0


def log_rate(x: npt.ArrayLike) -> npt.NDArray[np.float32]:
    return np.log(np.maximum(np.asarray(x, dtype=np.float64), RATE_FLOOR_PER_H)).astype(np.float32)


def cell_rates(table: DemandTable) -> npt.NDArray[np.float32]:
    """Statistical rate per (day type, slot, cell), summed over each cell's links."""
    out = np.zeros((len(DAY_TYPES), SLOTS_PER_DAY, table.grid.n_cells), dtype=np.float64)
    cells = table.edge_cell.astype(np.int64)
    ok = cells >= 0
    for d in range(len(DAY_TYPES)):
        for s in range(SLOTS_PER_DAY):
            out[d, s] = np.bincount(
                cells[ok], weights=table.pickups_per_h[d, s, ok], minlength=table.grid.n_cells
            )
    return out.astype(np.float32)


def time_features(
    minutes_of_week: npt.ArrayLike,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """(day type, slot, [day_type, hour_sin, hour_cos]) per minute of week (slot centres)."""
    dt, slot = slot_of_minute_of_week(np.atleast_1d(np.asarray(minutes_of_week)))
    hour = (slot + 0.5) * 0.5
    ang = 2.0 * math.pi * hour / 24.0
    feats = np.column_stack([dt, np.sin(ang), np.cos(ang)]).astype(np.float32)
    return dt, slot, feats


def assemble(
    static: npt.NDArray[np.float32],
    table: DemandTable,
    cell_rate: npt.NDArray[np.float32],
    edge_ids: npt.NDArray[np.int64],
    minutes_of_week: npt.ArrayLike,
) -> npt.NDArray[np.float32]:
    """Feature matrix ``(len(minutes) * len(edge_ids), len(FEATURES))``, slot-major."""
    dt, slot, tf = time_features(minutes_of_week)
    k, n = dt.shape[0], edge_ids.shape[0]
    x = np.empty((k, n, len(FEATURES)), dtype=np.float32)
    ns = len(STATIC_FEATURES)
    x[:, :, :ns] = static[edge_ids][None, :, :]
    x[:, :, ns : ns + 3] = tf[:, None, :]
    x[:, :, ns + 3] = log_rate(table.pickups_per_h[dt[:, None], slot[:, None], edge_ids[None, :]])
    cells = table.edge_cell[edge_ids].astype(np.int64)
    x[:, :, ns + 4] = log_rate(cell_rate[dt[:, None], slot[:, None], cells[None, :]])
    return x.reshape(k * n, len(FEATURES))


# --- spec 2: the recent-demand model, one row per (500 m cell, slot) ---------------------------

#: the recent-demand model (``model.json`` ``granularity: "cell"``): one row per (cell, slot);
#: its output multiplies the statistical rate of every link of the cell in that slot
CELL_FEATURE_SPEC_VERSION = 2
CELL_STATIC_FEATURES: tuple[str, ...] = (
    "cell_along_m",  # cell centre along / across Manhattan's avenues, metres from the centre
    "cell_across_m",
    "log_cell_share",  # log of the cell's share of the area's all-time statistical demand
)
CELL_TIME_FEATURES: tuple[str, ...] = (
    "day_type",
    "hour_sin",  # of the slot's centre
    "hour_cos",
    "lead_min",  # slot start minus the anchor (the minute recent inputs end), 0..60
    "stat_log_cell",  # log statistical rate of the cell in the slot (recent-source pickups/h)
    "stat_log_nb",  # and of the cell with its 8 neighbours
)

CELL_FEATURES: tuple[str, ...] = CELL_STATIC_FEATURES + CELL_TIME_FEATURES + RECENT_FEATURES
CELL_RECENT_START = len(CELL_STATIC_FEATURES) + len(CELL_TIME_FEATURES)


def assemble_cells(
    static_cells: npt.NDArray[np.float32],
    cell_rate_h: npt.NDArray[np.floating],
    nb_rate_h: npt.NDArray[np.floating],
    cells: npt.NDArray[np.int64],
    day_type: npt.ArrayLike,
    minute_of_day: npt.ArrayLike,
    lead_min: npt.ArrayLike,
    slot_minutes: int,
    recent: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    """Rows ``(K * len(cells), len(CELL_FEATURES))``, slot-major, for K slots.

    ``cell_rate_h`` / ``nb_rate_h`` (3, 48, n_cells): statistical pickups per hour of each cell
    (and its neighbourhood) in the recent source's units; ``recent`` (K, n, 8) from
    :func:`models.recent.recent_features` or :func:`models.recent.missing_features`.
    """
    dt = np.atleast_1d(np.asarray(day_type, dtype=np.int64))
    mod = np.atleast_1d(np.asarray(minute_of_day, dtype=np.int64))
    lead = np.broadcast_to(np.asarray(lead_min, dtype=np.float64), dt.shape)
    k, n = dt.size, cells.size
    slot30 = (mod % 1440) // 30
    x = np.empty((k, n, len(CELL_FEATURES)), dtype=np.float32)
    ns = len(CELL_STATIC_FEATURES)
    x[:, :, :ns] = static_cells[cells][None, :, :]
    hs, hc = hour_features(mod, slot_minutes)
    x[:, :, ns] = dt[:, None]
    x[:, :, ns + 1] = hs[:, None]
    x[:, :, ns + 2] = hc[:, None]
    x[:, :, ns + 3] = lead[:, None]
    x[:, :, ns + 4] = log_rate(cell_rate_h[dt[:, None], slot30[:, None], cells[None, :]])
    x[:, :, ns + 5] = log_rate(nb_rate_h[dt[:, None], slot30[:, None], cells[None, :]])
    x[:, :, CELL_RECENT_START:] = recent
    return x.reshape(k * n, len(CELL_FEATURES))
