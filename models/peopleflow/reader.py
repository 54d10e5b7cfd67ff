"""MLIT people-flow mesh files (``monthly_mdp_mesh1km.csv``): their format, and
:func:`read_people_flow` into :class:`PeopleFlow` (people present per 1 km mesh, day flag and
time band, averaged over the months read)."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.errors import DemandDataError
from models.peopleflow.mesh import mesh1km_box
from tiles.fileio import sha256_file

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: the columns of MLIT's ``monthly_mdp_mesh1km.csv``
COLUMNS = (
    "mesh1kmid",
    "prefcode",
    "citycode",
    "year",
    "month",
    "dayflag",
    "timezone",
    "population",
)
FORMAT = "mlit_mdp_mesh1km"
FORMAT_KIND = (
    "MLIT 全国の人流オープンデータ: mean people present per JIS X 0410 1 km mesh and month "
    "(mobile phones, Agoop), weekday/holiday x midday (11-14 h)/night (1-4 h)/all day"
)
LICENCE = "CC BY 4.0"
ATTRIBUTION = "「全国の人流オープンデータ」（国土交通省）"
#: MLIT ``dayflag`` (0 holiday, 1 weekday, 2 all days)
DAYFLAG_HOLIDAY, DAYFLAG_WEEKDAY, DAYFLAG_ALL = 0, 1, 2
#: MLIT ``timezone`` (0 = 11-14 h, 1 = 1-4 h, 2 = all day)
BAND_MIDDAY, BAND_NIGHT, BAND_ALL_DAY = 0, 1, 2
BAND_NAMES = ("midday", "night", "all_day")
MIDDAY_HOURS = (11, 14)
NIGHT_HOURS = (1, 4)


@dataclass(frozen=True, eq=False)
class PeopleFlow:
    """People present per 1 km mesh, averaged over the months read.

    ``population[i, dayflag, band]`` is the mean over those months of MLIT's figure for mesh
    ``codes[i]`` (NaN where no month has one)."""

    codes: I64  # (n_mesh,) sorted 8-digit codes
    population: F64  # (n_mesh, 3 dayflags, 3 bands)
    months: tuple[tuple[int, int], ...]  # (year, month) read
    files: tuple[dict[str, Any], ...]  # path, sha256, rows read, rows used

    def people(self, codes: npt.ArrayLike, dayflag: int, band: int) -> F64:
        """People present in each mesh of ``codes`` (NaN for a mesh without a figure)."""
        c = np.asarray(codes, dtype=np.int64)
        i = np.searchsorted(self.codes, c)
        i = np.clip(i, 0, max(len(self.codes) - 1, 0))
        found = (self.codes[i] == c) if len(self.codes) else np.zeros(c.shape, dtype=bool)
        out = np.full(c.shape, np.nan)
        out[found] = self.population[i[found], dayflag, band]
        return out


#: one figure of a people-flow file: (mesh code, year, month, dayflag, band)
_FlowKey = tuple[int, int, int, int, int]


def read_people_flow(
    paths: Sequence[str | os.PathLike[str]],
    months: Sequence[int] = (),
    codes: Sequence[int] | None = None,
) -> PeopleFlow:
    """Read MLIT ``monthly_mdp_mesh1km.csv`` files (or files of the same columns).

    ``months`` keeps those months (1-12; empty: every month found); ``codes`` keeps those
    meshes (None: all). A file that is not in this format, a bad value or two different figures
    for the same mesh, month, day flag and band raise :class:`DemandDataError` (one line)."""
    if not paths:
        raise DemandDataError("no people-flow file given")
    bad_months = [m for m in months if not 1 <= m <= 12]
    if bad_months:
        raise DemandDataError(f"people-flow months run 1-12, got {bad_months[0]}")
    keep_months = set(months)
    keep_codes = None if codes is None else {int(c) for c in codes}
    values: dict[_FlowKey, float] = {}
    files: list[dict[str, Any]] = []
    for path in paths:
        p = Path(path)
        try:
            rows_read, rows_used = _read_file(p, keep_months, keep_codes, values)
        except OSError as e:
            raise DemandDataError(f"cannot read people-flow file {p}: {e.strerror or e}") from e
        except UnicodeDecodeError as e:
            raise DemandDataError(f"{p}: not a text CSV file ({e.reason})") from e
        files.append(
            {
                "path": str(p),
                "sha256": sha256_file(p),
                "format": FORMAT,
                "rows": rows_read,
                "rows_used": rows_used,
            }
        )
    if not values:
        raise DemandDataError(
            "no people-flow figure in " + ", ".join(str(p) for p in paths) + " for the months "
            "and meshes asked"
        )
    return _mean_over_months(values, tuple(files))


def _read_file(
    p: Path, keep_months: set[int], keep_codes: set[int] | None, values: dict[_FlowKey, float]
) -> tuple[int, int]:
    """Add the figures of one file (of the months and meshes kept) to ``values``; the rows
    read and the rows used. :class:`DemandDataError` for a file of another format, a bad row
    or a figure given twice with two values."""
    rows_read = rows_used = 0
    with p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != COLUMNS:
            raise DemandDataError(
                f"{p}: not an MLIT people-flow mesh file (header must be {','.join(COLUMNS)})"
            )
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            rows_read += 1
            try:
                key, pop = _parse_row(row)
            except ValueError as e:
                raise DemandDataError(f"{p}:{lineno}: bad people-flow row: {e}") from e
            code, year, month, dayflag, band = key
            if keep_months and month not in keep_months:
                continue
            if keep_codes is not None and code not in keep_codes:
                continue
            old = values.get(key)
            if old is not None and old != pop:
                raise DemandDataError(
                    f"{p}:{lineno}: mesh {code} {year}-{month:02d} dayflag {dayflag} "
                    f"timezone {band} given twice ({old:g} and {pop:g})"
                )
            values[key] = pop
            rows_used += 1
    return rows_read, rows_used


def _parse_row(row: list[str]) -> tuple[_FlowKey, float]:
    """One row of :data:`COLUMNS` as its key and figure; ValueError when a value is wrong."""
    if len(row) != len(COLUMNS):
        raise ValueError(f"{len(row)} columns")
    code = int(row[0])
    mesh1km_box(code)
    year, month = int(row[3]), int(row[4])
    dayflag, band = int(row[5]), int(row[6])
    pop = float(row[7])
    if not 1 <= month <= 12 or dayflag not in (0, 1, 2) or band not in (0, 1, 2):
        raise ValueError("month, dayflag or timezone out of range")
    if not (math.isfinite(pop) and pop >= 0):
        raise ValueError(f"population {row[7]!r}")
    return (code, year, month, dayflag, band), pop


def _mean_over_months(
    values: dict[_FlowKey, float], files: tuple[dict[str, Any], ...]
) -> PeopleFlow:
    """The mean over the months read of each mesh's figure per dayflag and band."""
    all_codes = np.array(sorted({k[0] for k in values}), dtype=np.int64)
    ym = tuple(sorted({(k[1], k[2]) for k in values}))
    total = np.zeros((len(all_codes), 3, 3))
    count = np.zeros((len(all_codes), 3, 3))
    index = {int(c): i for i, c in enumerate(all_codes)}
    for (code, _y, _m, dayflag, band), pop in values.items():
        total[index[code], dayflag, band] += pop
        count[index[code], dayflag, band] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        population = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return PeopleFlow(codes=all_codes, population=population, months=ym, files=files)
