"""The three trip-file formats: how a file is opened (plain or one CSV in a zip), how its
format is recognised from the first row, and where each format keeps its fields.

* ``tlc2015``: the TLC 2015 schema, with a header (``tpep_pickup_datetime``,
  ``tpep_dropoff_datetime``, ``pickup_longitude/latitude``, ``dropoff_longitude/latitude``,
  ``trip_distance`` in miles, ``fare_amount``, ...);
* ``gcp8``: the headerless 8-column sample (``fare_amount, pickup_datetime, pickup_lon,
  pickup_lat, dropoff_lon, dropoff_lat, passenger_count, key``), local New York time despite
  its "UTC" label;
* ``uber2014``: the Uber 2014 pickups (``Date/Time, Lat, Lon, Base``, ``M/D/YYYY H:MM:SS``
  local New York time): pickups only.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import numpy.typing as npt

from models.errors import DemandDataError

F64 = npt.NDArray[np.float64]

MAX_TRIP_FILE_BYTES = 512 * 1024 * 1024
MILE_M = 1609.344

HEADER_2015 = ("tpep_pickup_datetime", "pickup_longitude", "pickup_latitude")
HEADER_UBER = ("date/time", "lat", "lon", "base")

#: what each format records besides the pickup (time and place): the demand table takes rates
#: from every pickup, and fares / trip times / drop-offs only from files that record them
FORMAT_RECORDS: dict[str, tuple[str, ...]] = {
    "tlc2015": ("pickup", "dropoff", "fare", "trip_time", "trip_distance"),
    "gcp8": ("pickup", "dropoff", "fare"),
    "uber2014": ("pickup",),
}
FORMAT_DESCRIPTIONS: dict[str, str] = {
    "tlc2015": "NYC TLC yellow-cab trips, 2015 schema (street hails and dispatch)",
    "gcp8": "NYC TLC yellow-cab trips, 8-column sample (street hails and dispatch)",
    "uber2014": "Uber app pickups, NYC 2014 (FiveThirtyEight FOIL): app demand, pickups only",
}


# --- opening a file --------------------------------------------------------------------------


def _zip_member(zf: zipfile.ZipFile, p: Path) -> zipfile.ZipInfo:
    """The one CSV member of a trip zip (``__MACOSX/`` resource forks and dot-files ignored)."""
    csvs = [
        i
        for i in zf.infolist()
        if not i.is_dir()
        and not any(part == "__MACOSX" for part in PurePosixPath(i.filename).parts)
        and not PurePosixPath(i.filename).name.startswith(".")
        and i.filename.lower().endswith(".csv")
    ]
    if len(csvs) != 1:
        names = ", ".join(i.filename for i in csvs)
        raise DemandDataError(
            f"trip file {p}: the zip holds {len(csvs)} CSV files"
            + (f" ({names})" if names else "")
            + ", expected exactly one"
        )
    if csvs[0].file_size > MAX_TRIP_FILE_BYTES:
        raise DemandDataError(
            f"trip file {p}: {csvs[0].filename} is {csvs[0].file_size} bytes, over the bound"
        )
    return csvs[0]


def open_rows(p: Path, stack: contextlib.ExitStack) -> Iterator[list[str]]:
    """CSV rows of a trip file, plain or zipped (streamed from the zip, bounded)."""
    size = p.stat().st_size
    if size > MAX_TRIP_FILE_BYTES:
        raise DemandDataError(f"trip file {p} is {size} bytes, over the bound")
    if p.suffix.lower() == ".zip" or zipfile.is_zipfile(p):
        try:
            zf = stack.enter_context(zipfile.ZipFile(p))
        except zipfile.BadZipFile as e:
            raise DemandDataError(f"trip file {p} is not a readable zip: {e}") from e
        raw = stack.enter_context(zf.open(_zip_member(zf, p)))
        text = stack.enter_context(
            io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        )
        return csv.reader(text)
    return csv.reader(io.StringIO(p.read_text(encoding="utf-8-sig", errors="replace")))


# --- recognising the format ------------------------------------------------------------------


def detect(p: Path, first: list[str]) -> tuple[str, dict[str, int], bool]:
    """(format, column index by lower-case name, whether ``first`` is a header)."""
    header = [c.strip().lower() for c in first]
    idx = {h: i for i, h in enumerate(header)}
    if all(h in idx for h in HEADER_2015):
        return "tlc2015", idx, True
    if all(h in idx for h in HEADER_UBER):
        return "uber2014", idx, True
    if len(first) == 8:
        return "gcp8", {}, False
    raise DemandDataError(
        f"trip file {p}: neither the TLC 2015 header, the Uber 2014 header (Date/Time, Lat,"
        " Lon, Base) nor the 8-column sample format"
    )


# --- the fields of each format ---------------------------------------------------------------


def parse_time(text: str) -> dt.datetime:
    """A TLC time (ISO, optionally with the GCP sample's misleading `` UTC``)."""
    s = text.strip()
    if s.endswith(" UTC"):  # the GCP sample: local New York time despite the label
        s = s[:-4]
    return dt.datetime.fromisoformat(s)


def _parse_uber_time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text.strip(), "%m/%d/%Y %H:%M:%S")


def pickup_time_parser(fmt: str) -> Callable[[str], dt.datetime]:
    return _parse_uber_time if fmt == "uber2014" else parse_time


def pickup_columns(fmt: str, idx: dict[str, int]) -> tuple[int, int, int]:
    """Column indices of the pickup's (time, longitude, latitude)."""
    if fmt == "tlc2015":
        i_t, i_lon, i_lat = (idx[h] for h in HEADER_2015)
        return i_t, i_lon, i_lat
    if fmt == "uber2014":
        return idx["date/time"], idx["lon"], idx["lat"]
    return 1, 2, 3


def to_float(text: str | None) -> float:
    """A number, NaN for a blank or missing field (ValueError for junk)."""
    if text is None or not text.strip():
        return float("nan")
    return float(text)


@dataclass(frozen=True, eq=False)
class Details:
    """What a trip records besides its pickup, per kept trip (NaN: not recorded or unusable)."""

    dropoff_lon: F64
    dropoff_lat: F64
    fare: F64
    distance_m: F64
    duration_s: F64

    @classmethod
    def unknown(cls, n: int) -> Details:
        return cls(*(np.full(n, np.nan) for _ in range(5)))


def read_details(
    fmt: str,
    idx: dict[str, int],
    records: list[tuple[str, ...]],
    pickups: list[dt.datetime],
) -> Details:
    """The drop-off, fare, distance and trip time of each record (its pickup at ``pickups``).

    A field that does not parse leaves it, and the record's fields after it, NaN: the pickup
    stays. ``uber2014`` records none of them.
    """
    out = Details.unknown(len(records))
    if fmt == "uber2014":
        return out
    for j, rec in enumerate(records):
        try:
            if fmt == "tlc2015":
                _tlc2015_details(out, j, rec, idx, pickups[j])
            else:
                _gcp8_details(out, j, rec)
        except (ValueError, IndexError):
            pass  # the pickup stays; what failed stays NaN
    return out


def _tlc2015_details(
    out: Details, j: int, rec: tuple[str, ...], idx: dict[str, int], pickup: dt.datetime
) -> None:
    if "dropoff_longitude" in idx:
        out.dropoff_lon[j] = to_float(rec[idx["dropoff_longitude"]])
    if "dropoff_latitude" in idx:
        out.dropoff_lat[j] = to_float(rec[idx["dropoff_latitude"]])
    if "fare_amount" in idx:
        out.fare[j] = to_float(rec[idx["fare_amount"]])
    if "trip_distance" in idx:
        out.distance_m[j] = to_float(rec[idx["trip_distance"]]) * MILE_M
    if "tpep_dropoff_datetime" in idx:
        t_off = parse_time(rec[idx["tpep_dropoff_datetime"]])
        out.duration_s[j] = (t_off - pickup).total_seconds()


def _gcp8_details(out: Details, j: int, rec: tuple[str, ...]) -> None:
    out.fare[j], out.dropoff_lon[j], out.dropoff_lat[j] = (
        to_float(rec[0]),
        to_float(rec[4]),
        to_float(rec[5]),
    )
