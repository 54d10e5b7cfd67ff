"""The recent-demand inputs of a cell demand model, from the tick's live snapshot.

A cell model (``models/rolling/``, ``model.json`` ``granularity: "cell"``) predicts from the
pickups of the last minutes per 500 m cell. On the cab they come from the live snapshot's
per-cell meter pickups: :func:`tick_recent` checks and scales them into
:class:`models.RecentCounts`, or says (a ``RECENT_*`` reason in the tick record's ``recent``)
why the model is asked without them. Pure: no clock, no network.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.bundle import LoadedBundle
from agent.errors import AgentError
from agent.tick_live import LiveInput, LiveSnapshot
from models import SNAPSHOT_WINDOWS_MIN, DemandModel, ModelsError, RecentCounts

__all__ = [
    "RECENT_BAD_COUNTS",
    "RECENT_FILLED",
    "RECENT_FROM_SNAPSHOT",
    "RECENT_MAX_SCALE",
    "RECENT_MIN_EXPECTED",
    "RECENT_NO_SNAPSHOT",
    "RECENT_NO_UNITS",
    "RECENT_OTHER_GRID",
    "RECENT_TOO_FEW",
    "tick_recent",
]

#: why a cell model with recent inputs was asked without them (the tick record's ``recent``)
RECENT_NO_SNAPSHOT = "RECENT_NO_SNAPSHOT"  # no fresh live snapshot (offline, refused, off)
RECENT_NO_UNITS = "RECENT_NO_UNITS"  # params.yaml names no live.pickups_per_hail
RECENT_OTHER_GRID = "RECENT_OTHER_GRID"  # the snapshot's cells are not the model's grid
RECENT_BAD_COUNTS = "RECENT_BAD_COUNTS"  # negative, non-cumulative, misshapen, outside the grid
RECENT_TOO_FEW = "RECENT_TOO_FEW"  # the fleet sees too few pickups for them to say anything
#: the snapshot's counts are used only when one fleet pickup stands for at most this many of
#: the model's source pickups and the area's last hour should hold at least
#: RECENT_MIN_EXPECTED fleet pickups: with fewer, the scaled counts are noise and the model
#: does worse than statistics (measured on the validation week, docs/demand.md)
RECENT_MAX_SCALE = 4.0
RECENT_MIN_EXPECTED = 10.0
#: the cell model's recent inputs a snapshot gives (its 15/30/60-minute counts) ...
RECENT_FROM_SNAPSHOT = (
    "recent_nb_15m",
    "recent_nb_30m",
    "recent_nb_60m",
    "recent_cell_60m",
    "recent_area_60m",
)
#: ... and those it does not, filled from the last hour (models.recent.fill_unobserved)
RECENT_FILLED = ("recent_nb_120m", "recent_area_day")


def tick_recent(
    lb: LoadedBundle, model: DemandModel, live: LiveInput | None
) -> tuple[RecentCounts | None, dict[str, Any]]:
    """The recent-demand inputs of a cell model from the tick's live snapshot, and the tick
    record's ``recent`` (which inputs were used, or why none).

    The snapshot counts the fleet's meter pickups per cell of the demand grid in the last 15,
    30 and 60 minutes before it was built; they are scaled into the model's units (its
    ``recent.pickups_per_hail`` over the bundle's ``params.yaml`` ``live.pickups_per_hail``,
    the fleet's meter pickups per hail of the demand table) and end at the snapshot's own
    minute. The 120-minute window and the day so far are not in a snapshot: the model fills
    them from the last hour at their usual level (:func:`models.recent.fill_unobserved`).
    Without a fresh snapshot, units, or with counts that cannot be right, the model is asked
    without recent inputs (as a cab offline) and ``reason`` says why."""
    rec: dict[str, Any] = {
        "used": [],
        "windows_min": [],
        "filled": [],
        "scale": None,
        "pickups": None,
        "reason": "",
    }
    snap = None if live is None else live.snapshot
    if snap is None:
        rec["reason"] = RECENT_NO_SNAPSHOT
        return None, rec
    units = _live_pickups_per_hail(lb)
    if units is None:
        rec["reason"] = RECENT_NO_UNITS
        return None, rec
    if not _same_grid(snap, model):
        rec["reason"] = RECENT_OTHER_GRID
        return None, rec
    try:
        recent, counts, scale = _scaled_counts(lb, model, snap, units)
    except (TypeError, ValueError, ModelsError, AgentError) as e:
        rec["reason"] = RECENT_BAD_COUNTS
        rec["error"] = str(e)[:200]
        return None, rec
    end = recent.end_minute_of_week
    expected = model.expected_area_pickups(end, SNAPSHOT_WINDOWS_MIN[-1]) / scale
    rec["expected_fleet_pickups_60m"] = round(expected, 3)
    if scale > RECENT_MAX_SCALE or expected < RECENT_MIN_EXPECTED:
        rec["reason"] = RECENT_TOO_FEW
        return None, rec
    rec.update(
        used=list(RECENT_FROM_SNAPSHOT),
        windows_min=list(SNAPSHOT_WINDOWS_MIN),
        filled=list(RECENT_FILLED),
        scale=scale,
        pickups=int(counts[:, -1].sum()) if counts.size else 0,
        end_minute_of_week=end,
    )
    return recent, rec


def _same_grid(snap: LiveSnapshot, model: DemandModel) -> bool:
    """Whether the snapshot counts on the model's grid (its ``grid`` attribute: origin, cell
    size, columns and rows; a snapshot without one, or with an unreadable one, does not)."""
    grid = model.table.grid
    want = (grid.min_lon, grid.min_lat, grid.cell_deg_lon, grid.cell_deg_lat)
    g = getattr(snap, "grid", None)
    try:
        return bool(
            g is not None
            and len(g) == 6
            and (int(g[4]), int(g[5])) == (grid.ncols, grid.nrows)
            and all(
                math.isclose(float(a), b, rel_tol=0, abs_tol=1e-12)
                for a, b in zip(g[:4], want, strict=True)
            )
        )
    except (TypeError, ValueError):
        return False


def _scaled_counts(
    lb: LoadedBundle, model: DemandModel, snap: LiveSnapshot, units: float
) -> tuple[RecentCounts, npt.NDArray[np.float64], float]:
    """The snapshot's per-cell counts on every cell of the grid, scaled into the model's
    units and ending at the snapshot's minute; with the counts as sent and the scale. Raises
    ValueError (or TypeError, ModelsError, AgentError) for counts that cannot be right."""
    grid = model.table.grid
    ids = np.asarray(getattr(snap, "cell_ids", None), dtype=np.int64)
    counts = np.asarray(getattr(snap, "pickups", None), dtype=np.float64)
    k = len(SNAPSHOT_WINDOWS_MIN)
    if (
        ids.ndim != 1
        or counts.shape != (ids.size, k)
        or (ids.size and (int(ids.min()) < 0 or int(ids.max()) >= grid.n_cells))
        or np.unique(ids).size != ids.size
    ):
        raise ValueError("cells outside the model's grid or counts of another shape")
    per_cell = np.zeros((grid.n_cells, k), dtype=np.float64)
    per_cell[ids] = counts
    scale = model.pickups_per_hail / units
    end = math.floor(lb.minute_of_week(float(snap.built_s)))
    return RecentCounts(per_cell * scale, end), counts, scale


def _live_pickups_per_hail(lb: LoadedBundle) -> float | None:
    """``params.yaml`` ``live.pickups_per_hail``: the fleet's meter pickups per hail of the
    demand table (its share of street hails), None when absent or not a positive number."""
    live = lb.params_doc.get("live")
    v = live.get("pickups_per_hail") if isinstance(live, dict) else None
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) and f > 0 else None
