"""The live layer's inputs in PostgreSQL (:class:`~sync._live_server.LiveInputs`; ``fleet serve
--database postgresql://…``), in the log storage's database and connection pool (tables of
the migration ``0003_live`` in :data:`sync.logstore_pg.PG_MIGRATIONS`).

* ``live_latest``: one row per (area, cab), its latest heartbeat (the wire encoding without
  its events); an upsert keeps the later one, whichever process receives it.
* ``live_pickups``: the meter pickups of the last hour, one row per (area, cab, time): a
  re-sent event, to this process or another, is kept once (``ON CONFLICT DO NOTHING``).
* ``live_versions``: per area, the last snapshot version handed out; the next is
  ``GREATEST(last + 1, now)`` from ``INSERT … ON CONFLICT DO UPDATE … RETURNING``, so
  versions only grow across processes and restarts and none is handed out twice.
* ``live_snapshots``: per area, the newest signed snapshot any process built (a write with an
  older version is ignored); every process serves it.

Reads filter by time, so what a build takes does not depend on which process last removed
the stale rows (one at a time removes them, under a try-lock).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sync.errors import LiveInputError
from sync.live import (
    EVENT_MAX_AGE_S,
    PICKUP,
    Heartbeat,
    MeterEvent,
    decode_heartbeat,
    encode_heartbeat,
)

if TYPE_CHECKING:
    import psycopg

    from sync._live_server import LiveConfig

Transaction = Callable[[], AbstractContextManager["psycopg.Connection[Any]"]]

#: the tables (appended to the log storage's migrations as ``0003_live``)
LIVE_MIGRATION = """
CREATE TABLE live_latest (
    area TEXT NOT NULL,
    vehicle_id TEXT NOT NULL,
    t_s BIGINT NOT NULL,
    heartbeat BYTEA NOT NULL,
    PRIMARY KEY (area, vehicle_id)
);
CREATE INDEX live_latest_time ON live_latest (area, t_s);
CREATE TABLE live_pickups (
    area TEXT NOT NULL,
    vehicle_id TEXT NOT NULL,
    t_s BIGINT NOT NULL,
    lon DOUBLE PRECISION NOT NULL,
    lat DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (area, vehicle_id, t_s)
);
CREATE INDEX live_pickups_time ON live_pickups (area, t_s);
CREATE TABLE live_versions (area TEXT PRIMARY KEY, version BIGINT NOT NULL);
CREATE TABLE live_snapshots (
    area TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    signed BYTEA NOT NULL
);
"""


class PostgresLiveInputs:
    """:class:`~sync._live_server.LiveInputs` in PostgreSQL; ``transaction()`` is the log
    storage's (a pooled connection in a transaction; database errors become
    :class:`~sync.errors.SyncStorageError`)."""

    def __init__(self, transaction: Transaction) -> None:
        self._tx = transaction

    def accept(self, vehicle: str, hb: Heartbeat, now: float, config: LiveConfig) -> None:
        latest = encode_heartbeat(replace(hb, events=()))
        pickups = [e for e in hb.events if e.kind == PICKUP and now - e.t_s <= EVENT_MAX_AGE_S]
        with self._tx() as conn:
            row = conn.execute(
                "INSERT INTO live_latest AS l (area, vehicle_id, t_s, heartbeat) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (area, vehicle_id) DO UPDATE "
                "SET t_s = EXCLUDED.t_s, heartbeat = EXCLUDED.heartbeat "
                "WHERE l.t_s <= EXCLUDED.t_s RETURNING (xmax = 0)",
                (hb.area, vehicle, int(hb.t_s), latest),
            ).fetchone()
            if row is not None and row[0]:  # a cab new to the area: within the bound?
                count = conn.execute(
                    "SELECT count(*) FROM live_latest WHERE area = %s", (hb.area,)
                ).fetchone()
                if count is not None and int(count[0]) > config.max_cabs_per_area:
                    raise LiveInputError(  # rolls the insert back
                        f"more than {config.max_cabs_per_area} cabs in {hb.area}"
                    )
            if pickups:
                conn.execute(
                    "INSERT INTO live_pickups (area, vehicle_id, t_s, lon, lat) "
                    "SELECT %s, %s, u.t, u.lon, u.lat "
                    "FROM unnest(%s::bigint[], %s::float8[], %s::float8[]) AS u(t, lon, lat) "
                    "ON CONFLICT (area, vehicle_id, t_s) DO NOTHING",
                    (
                        hb.area,
                        vehicle,
                        [int(e.t_s) for e in pickups],
                        [float(e.lon) for e in pickups],
                        [float(e.lat) for e in pickups],
                    ),
                )

    def take(
        self, area: str, now: float, config: LiveConfig
    ) -> tuple[list[Heartbeat], list[MeterEvent]]:
        oldest_hb = now - config.max_age_s
        oldest_pickup = now - EVENT_MAX_AGE_S
        with self._tx() as conn:
            lock = conn.execute(
                "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"nagashi-live-prune:{area}",),
            ).fetchone()
            if lock is not None and lock[0]:
                conn.execute(
                    "DELETE FROM live_latest WHERE area = %s AND t_s < %s", (area, oldest_hb)
                )
                conn.execute(
                    "DELETE FROM live_pickups WHERE area = %s AND t_s < %s", (area, oldest_pickup)
                )
            rows = conn.execute(
                "SELECT heartbeat FROM live_latest WHERE area = %s AND t_s >= %s "
                "ORDER BY vehicle_id",
                (area, oldest_hb),
            ).fetchall()
            picks = conn.execute(
                "SELECT t_s, lon, lat FROM live_pickups WHERE area = %s AND t_s >= %s "
                "ORDER BY t_s DESC, vehicle_id DESC LIMIT %s",
                (area, oldest_pickup, int(config.max_pickups_per_area)),
            ).fetchall()
        hbs = [decode_heartbeat(bytes(r[0])) for r in rows]
        pickups = [MeterEvent(PICKUP, int(t), float(lo), float(la)) for t, lo, la in picks]
        pickups.reverse()  # oldest first, as they arrived
        return hbs, pickups

    def next_version(self, area: str, now: float) -> int:
        with self._tx() as conn:
            row = conn.execute(
                "INSERT INTO live_versions AS v (area, version) VALUES (%s, %s) "
                "ON CONFLICT (area) DO UPDATE SET version = GREATEST(v.version + 1, "
                "EXCLUDED.version) RETURNING version",
                (area, int(now)),
            ).fetchone()
        assert row is not None  # INSERT … RETURNING returns the row it wrote
        return int(row[0])

    def put_snapshot(self, area: str, version: int, signed: bytes) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO live_snapshots AS s (area, version, signed) VALUES (%s, %s, %s) "
                "ON CONFLICT (area) DO UPDATE SET version = EXCLUDED.version, "
                "signed = EXCLUDED.signed WHERE s.version < EXCLUDED.version",
                (area, int(version), signed),
            )

    def newer_snapshot(self, area: str, version: int) -> tuple[int, bytes] | None:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT version, signed FROM live_snapshots WHERE area = %s AND version > %s",
                (area, int(version)),
            ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))
