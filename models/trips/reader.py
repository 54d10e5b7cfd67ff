"""The public entry: :func:`read_trips` reads every file (:func:`models.trips.rows.read_file`),
measures what time each covers (:func:`models.trips.coverage.coverage`), and joins them into
one :class:`models.trips.table.Trips`."""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.trips.coverage import Window, coverage
from models.trips.rows import DROP_REASONS, EPOCH, FileRead, read_file
from models.trips.table import Trips

log = logging.getLogger("models.trips")

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def read_trips(
    paths: list[str | os.PathLike[str]],
    bbox: tuple[float, float, float, float],
    days: frozenset[dt.date] | None = None,
) -> Trips:
    """Read trip files; keep pickups inside ``bbox`` (min_lon, min_lat, max_lon, max_lat).

    Exact duplicate rows (every field equal) are read once and counted per file. With ``days``,
    only pickups on those local dates are read (the others are counted, not dropped as bad):
    the file's coverage and citywide count are those of the kept days.
    """
    reads: list[FileRead] = []
    covered: list[F64] = []
    windows: list[tuple[Window, ...]] = []
    window_of_trip: list[I64] = []
    modes: list[str] = []
    day_types: dict[dt.date, int] = {}
    for path in paths:
        p = Path(path)
        r = read_file(p, bbox, days, day_types)
        reads.append(r)
        mode, cov, wins = coverage(r.city_times, days=days)
        r.city_times = []  # only the coverage needs them
        modes.append(mode)
        windows.append(wins)
        window_of_trip.append(_window_of_trip(wins, r.arrays["ts"]))
        covered.append(cov)
        log.info(
            "read %s (%s): %d rows, %d exact duplicates, dropped %s",
            p,
            r.fmt,
            r.rows,
            r.duplicates,
            dict(r.reasons),
        )
    return _join(paths, reads, covered, modes, windows, window_of_trip, days)


def _window_of_trip(wins: tuple[Window, ...], ts: F64) -> I64:
    """Per trip, the index of the window it lies in (-1 for a span sample)."""
    if not wins:
        return np.full(ts.shape[0], -1, dtype=np.int64)
    starts = np.array([(w.start - EPOCH).total_seconds() for w in wins])
    return (np.searchsorted(starts, ts, side="right") - 1).astype(np.int64)


def _join(
    paths: list[str | os.PathLike[str]],
    reads: list[FileRead],
    covered: list[F64],
    modes: list[str],
    windows: list[tuple[Window, ...]],
    window_of_trip: list[I64],
    days: frozenset[dt.date] | None,
) -> Trips:
    """The files' trips end to end, with their per-file counts."""

    def cat(k: str, dtype: type[np.generic]) -> npt.NDArray[Any]:
        parts = [r.arrays[k] for r in reads]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    def i64(k: str) -> I64:
        return cat(k, np.int64)

    def f64(k: str) -> F64:
        return cat(k, np.float64)

    file_index = (
        np.concatenate(
            [np.full(r.arrays["ts"].shape[0], fi, dtype=np.int64) for fi, r in enumerate(reads)]
        )
        if reads
        else np.zeros(0, dtype=np.int64)
    )
    return Trips(
        pickup_minute_of_week=i64("mow"),
        pickup_day_type=i64("dtype"),
        pickup_date_ord=i64("date"),
        pickup_s=f64("ts"),
        lon=f64("lon"),
        lat=f64("lat"),
        dropoff_lon=f64("dlon"),
        dropoff_lat=f64("dlat"),
        fare=f64("fare"),
        distance_m=f64("dist"),
        duration_s=f64("dur"),
        file_index=file_index,
        files=tuple(str(p) for p in paths),
        rows_read=tuple(r.rows for r in reads),
        dropped=tuple({k: int(r.reasons.get(k, 0)) for k in DROP_REASONS} for r in reads),
        citywide=tuple(r.citywide for r in reads),
        covered_h=tuple(covered),
        mode=tuple(modes),
        windows=tuple(windows),
        window=(np.concatenate(window_of_trip) if window_of_trip else np.zeros(0, dtype=np.int64)),
        duplicates=tuple(r.duplicates for r in reads),
        outside_days=tuple(r.outside_days for r in reads),
        formats=tuple(r.fmt for r in reads),
        days=days,
    )
