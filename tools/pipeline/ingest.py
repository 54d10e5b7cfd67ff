"""Idempotent trip ingest: trip files into one SQLite table keyed by trip identity.

Files are parsed by the demand layer's own reader (:func:`models.trips.read_trips`: both TLC
formats and the zipped Uber 2014 pickups, whose exact duplicate rows it reads once and counts);
nothing here parses CSV. Each trip gets an identity, ``trip_key``: the sha256 of its
pickup local time (to the second), pickup and drop-off coordinates (to 1e-6 degree, about
0.1 m) and fare (to the cent) -- the fields both formats carry. The files have no trip id of
their own (the 8-column sample's ``key`` is a row number within its file).

Ingesting is a keyed upsert, as a SQL ``MERGE`` would do it: a trip already present is not
inserted again; fields it lacks (trip distance, duration: only the 2015 schema has them) are
filled from the new row, and nothing else changes -- in particular its ``label`` (the data set
it was first ingested into: ``train``, ``valid``, ``eval``) stays, so a trip that appears in
two files can never be both trained on and evaluated on. Adding the same file twice, or a file
overlapping one already ingested, therefore leaves the counts unchanged. Two genuinely distinct
trips with the same second, the same coordinates and the same fare are counted as one: the
identity cannot tell them apart, and the ingest report counts such merges.

:func:`export_trips_csv` is the adapter to the demand builder, which reads trip *files*: it
writes the deduplicated trips of the chosen labels as a TLC-2015-schema CSV (exact float
``repr``, sorted by pickup time then key), so the same database content gives the same bytes.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import logging
import math
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tiles.fileio import atomic_write_bytes, migrate_sqlite, sha256_file
from tools.pipeline.errors import IngestError

if TYPE_CHECKING:
    from models.trips import Trips

log = logging.getLogger(__name__)

#: the whole world: the ingest keeps every trip with a usable pickup; areas filter later
WORLD_BBOX = (-180.0, -90.0, 180.0, 90.0)
BUSY_TIMEOUT_S = 30.0
_EPOCH = dt.datetime(1970, 1, 1)
_LABEL_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_trips",
        """
        CREATE TABLE trips (
            trip_key TEXT PRIMARY KEY,
            label TEXT NOT NULL,
            pickup_local TEXT NOT NULL,
            pickup_lon REAL NOT NULL,
            pickup_lat REAL NOT NULL,
            dropoff_lon REAL,
            dropoff_lat REAL,
            fare REAL,
            distance_m REAL,
            duration_s REAL,
            first_ingest INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX trips_label_time ON trips (label, pickup_local);
        CREATE TABLE ingests (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL,
            file_sha256 TEXT NOT NULL,
            label TEXT NOT NULL,
            rows_read INTEGER NOT NULL,
            usable INTEGER NOT NULL,
            new_trips INTEGER NOT NULL,
            merged_trips INTEGER NOT NULL,
            dropped TEXT NOT NULL,
            ingested_at TEXT NOT NULL
        );
        """,
    ),
)

EXPORT_HEADER = (
    "tpep_pickup_datetime",
    "tpep_dropoff_datetime",
    "pickup_longitude",
    "pickup_latitude",
    "dropoff_longitude",
    "dropoff_latitude",
    "trip_distance",
    "fare_amount",
)
_MILE_M = 1609.344


@dataclass(frozen=True)
class IngestReport:
    """What one file's ingest did."""

    path: str
    file_sha256: str
    label: str
    rows_read: int
    usable: int  # rows with a usable pickup (time and coordinates)
    new_trips: int  # inserted
    merged_trips: int  # already present (same identity): merged, not duplicated
    dropped: dict[str, int]
    #: exact duplicate rows of the file itself (read once by the reader, counted here)
    duplicates_removed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "file_sha256": self.file_sha256,
            "label": self.label,
            "rows_read": self.rows_read,
            "usable": self.usable,
            "new_trips": self.new_trips,
            "merged_trips": self.merged_trips,
            "dropped": dict(self.dropped),
            "duplicates_removed": self.duplicates_removed,
        }


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _key_part(x: float | None, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def trip_key(
    pickup_local: str,
    lon: float,
    lat: float,
    dlon: float | None,
    dlat: float | None,
    fare: float | None,
) -> str:
    """The identity of a trip (see module docstring)."""
    fare_cents = None if fare is None else float(round(fare * 100))
    text = "|".join(
        (
            pickup_local,
            _key_part(lon, ".6f"),
            _key_part(lat, ".6f"),
            _key_part(dlon, ".6f"),
            _key_part(dlat, ".6f"),
            _key_part(fare_cents, ".0f"),
        )
    )
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _rows(trips: Trips, label: str) -> list[tuple[Any, ...]]:
    """The ``trips`` table's rows (without ``first_ingest``) of every usable trip read."""
    rows = []
    for i in range(trips.n):
        t = _EPOCH + dt.timedelta(seconds=float(trips.pickup_s[i]))
        local = t.strftime("%Y-%m-%d %H:%M:%S")
        lon, lat = float(trips.lon[i]), float(trips.lat[i])
        dlon, dlat = _num(trips.dropoff_lon[i]), _num(trips.dropoff_lat[i])
        fare = _num(trips.fare[i])
        rows.append(
            (
                trip_key(local, lon, lat, dlon, dlat, fare),
                label,
                local,
                lon,
                lat,
                dlon,
                dlat,
                fare,
                _num(trips.distance_m[i]),
                _num(trips.duration_s[i]),
            )
        )
    return rows


class TripStore:
    """The trips database at ``path`` (WAL, created on first use)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except (sqlite3.Error, OSError) as e:
            raise IngestError(f"trips database {self.path} is unusable: {e}") from e

    def close(self) -> None:
        # fold the WAL back so the database is one self-contained file
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._conn.close()

    def __enter__(self) -> TripStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        migrate_sqlite(self._conn, MIGRATIONS)

    def count(self, label: str | None = None) -> int:
        if label is None:
            return int(self._conn.execute("SELECT count(*) FROM trips").fetchone()[0])
        return int(
            self._conn.execute("SELECT count(*) FROM trips WHERE label = ?", (label,)).fetchone()[0]
        )

    def counts_by_label(self) -> dict[str, int]:
        return {
            str(r[0]): int(r[1])
            for r in self._conn.execute("SELECT label, count(*) FROM trips GROUP BY label")
        }

    def ingest(self, path: str | os.PathLike[str], label: str, *, now: dt.datetime) -> IngestReport:
        """Upsert every usable trip of ``path`` under ``label`` (see module docstring)."""
        from models.errors import ModelsError
        from models.trips import read_trips

        if not label or not set(label) <= _LABEL_CHARS:
            raise IngestError(f"label must be [a-z0-9_-]+, got {label!r}")
        p = Path(path)
        try:
            digest = sha256_file(p)
            trips = read_trips([p], WORLD_BBOX)
        except OSError as e:
            raise IngestError(f"cannot read trip file {p}: {e.strerror or e}") from e
        except ModelsError as e:
            raise IngestError(str(e)) from e
        rows = _rows(trips, label)
        new = self._upsert(p, digest, label, trips, rows, now)
        report = IngestReport(
            str(p),
            digest,
            label,
            trips.rows_read[0],
            trips.n,
            new,
            trips.n - new,
            dict(trips.dropped[0]),
            trips.duplicates[0],
        )
        log.info("ingested %s as %s: %d new, %d merged", p, label, new, trips.n - new)
        return report

    def _upsert(
        self,
        p: Path,
        digest: str,
        label: str,
        trips: Trips,
        rows: list[tuple[Any, ...]],
        now: dt.datetime,
    ) -> int:
        """Record the ingest of ``p`` and upsert its ``rows`` in one transaction; returns how
        many trips are new."""
        c = self._conn
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                before = self.count()
                cur = c.execute(
                    "INSERT INTO ingests (path, file_sha256, label, rows_read, usable, new_trips,"
                    " merged_trips, dropped, ingested_at) VALUES (?, ?, ?, ?, ?, 0, 0, ?, ?)",
                    (
                        str(p),
                        digest,
                        label,
                        trips.rows_read[0],
                        trips.n,
                        _json({**trips.dropped[0], "exact_duplicate_row": trips.duplicates[0]}),
                        now.isoformat(),
                    ),
                )
                ingest_id = cur.lastrowid
                c.executemany(
                    "INSERT INTO trips (trip_key, label, pickup_local, pickup_lon, pickup_lat,"
                    " dropoff_lon, dropoff_lat, fare, distance_m, duration_s, first_ingest)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (trip_key) DO UPDATE SET"
                    " distance_m = coalesce(trips.distance_m, excluded.distance_m),"
                    " duration_s = coalesce(trips.duration_s, excluded.duration_s)",
                    [(*r, ingest_id) for r in rows],
                )
                new = self.count() - before
                c.execute(
                    "UPDATE ingests SET new_trips = ?, merged_trips = ? WHERE id = ?",
                    (new, trips.n - new, ingest_id),
                )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise IngestError(f"trips database {self.path}: {e}") from e
        return new

    def export_rows(self, labels: Sequence[str]) -> Iterable[tuple[Any, ...]]:
        q = (
            "SELECT pickup_local, duration_s, pickup_lon, pickup_lat, dropoff_lon, dropoff_lat,"
            " distance_m, fare FROM trips WHERE label IN ("
            + ", ".join("?" for _ in labels)
            + ") ORDER BY pickup_local, trip_key"
        )
        return self._conn.execute(q, list(labels))


def _json(v: Any) -> str:
    return json.dumps(v, sort_keys=True)


def _fmt(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def export_trips_csv(store: TripStore, labels: Sequence[str], out: str | os.PathLike[str]) -> int:
    """Write the trips of ``labels`` as a TLC-2015-schema CSV, atomically; returns the count."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EXPORT_HEADER)
    n = 0
    for pickup_local, dur, lon, lat, dlon, dlat, dist_m, fare in store.export_rows(labels):
        t = dt.datetime.fromisoformat(pickup_local)
        off = (
            (t + dt.timedelta(seconds=dur)).strftime("%Y-%m-%d %H:%M:%S") if dur is not None else ""
        )
        w.writerow(
            (
                pickup_local,
                off,
                _fmt(lon),
                _fmt(lat),
                _fmt(dlon),
                _fmt(dlat),
                "" if dist_m is None else repr(dist_m / _MILE_M),
                _fmt(fare),
            )
        )
        n += 1
    atomic_write_bytes(Path(out), buf.getvalue().encode("utf-8"))
    return n
