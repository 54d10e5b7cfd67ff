"""Reading NYC trip files (TLC yellow-cab trips, Uber app pickups) into numpy arrays, dropping
bad rows by reason.

Three formats are understood (all present in ``data/trips``), recognised by their header
(:mod:`models.trips.formats`):

* the TLC 2015 schema, with a header: ``tpep_pickup_datetime``, ``tpep_dropoff_datetime``,
  ``pickup_longitude/latitude``, ``dropoff_longitude/latitude``, ``trip_distance`` (miles),
  ``fare_amount``, ...;
* the headerless 8-column sample (``fare_amount, pickup_datetime, pickup_lon, pickup_lat,
  dropoff_lon, dropoff_lat, passenger_count, key``) whose datetimes are local New York time
  despite their "UTC" label;
* the Uber 2014 pickups released to FiveThirtyEight (``Date/Time, Lat, Lon, Base``, times
  ``M/D/YYYY H:MM:SS`` local New York time): pickups only -- no drop-off, fare or trip time.

A file may be a zip holding exactly one CSV (``__MACOSX/`` entries and dot-files are ignored);
it is streamed, never unpacked, and bounded by ``MAX_TRIP_FILE_BYTES`` uncompressed.

Times stay local wall-clock time (minute of week, day type) because demand follows the city's
clock. Exact duplicate rows (every field equal to an earlier row of the same file) are read once
and counted (``Trips.duplicates``). A row is dropped, and counted under its reason, when its
pickup time or coordinates do not parse, are missing (blank or 0,0), or lie outside the given
bounding box. A row whose fare or drop-off is unusable keeps its pickup (demand) but not its
fare/drop-off (NaN).

Where each part lives: :mod:`~models.trips.reader` (:func:`read_trips`, the entry),
:mod:`~models.trips.rows` (one file into arrays, in named steps), :mod:`~models.trips.formats`
(opening, recognising and the fields of each format), :mod:`~models.trips.coverage` (what time
a file covers), :mod:`~models.trips.days` (holidays, day types, ``--days``) and
:mod:`~models.trips.table` (:class:`Trips`).
"""

from __future__ import annotations

from models.trips.coverage import WINDOW_GAP_S, Window, coverage
from models.trips.days import MAX_DAYS, day_ranges, day_type_of_date, parse_days, us_holidays
from models.trips.formats import (
    FORMAT_DESCRIPTIONS,
    FORMAT_RECORDS,
    MAX_TRIP_FILE_BYTES,
    MILE_M,
)
from models.trips.reader import read_trips
from models.trips.rows import DROP_REASONS, DURATION_RANGE_S, FARE_RANGE
from models.trips.table import Trips

__all__ = [
    "DROP_REASONS",
    "DURATION_RANGE_S",
    "FARE_RANGE",
    "FORMAT_DESCRIPTIONS",
    "FORMAT_RECORDS",
    "MAX_DAYS",
    "MAX_TRIP_FILE_BYTES",
    "MILE_M",
    "WINDOW_GAP_S",
    "Trips",
    "Window",
    "coverage",
    "day_ranges",
    "day_type_of_date",
    "parse_days",
    "read_trips",
    "us_holidays",
]
