"""Server-side storage of trip logs and credentials, behind an interface.

:class:`LogStorage` is what the fleet server needs; :class:`SqliteLogStorage` is the embedded
default (one file, ``fleet.sqlite``, WAL). A record's identity is ``(vehicle_id, epoch, seq)``:
``epoch`` names one cab outbox (random, made when the outbox is created, so a wiped or replaced
data directory that numbers from 1 again is a new epoch), ``seq`` its number there. A re-sent
record with the same identity and the same bytes is a duplicate (stored once, acknowledged); the
same identity with *other* bytes means the cab's numbering went backwards without a new epoch (an
older cab, a restored backup): the record is kept under the conflict epoch
``<epoch>!<sha256 of its bytes, 16 hex>`` and counted, never dropped. Every acknowledgement is
read back from the database after the insert; any exception rolls the transaction back.

Back ends: :class:`SqliteLogStorage` (embedded, the default) and
:class:`sync.logstore_pg.PostgresLogStorage` (``--database postgresql://…``, several server
processes on one database); :func:`open_storage` picks one from the ``--database`` value.
Both keep the same tables (logs, dropped, conflicts, tokens) with named, ordered migrations.

Follow-up design (not implemented): S3-compatible object storage for the bulk — the ingest
writes each accepted batch as one immutable object
``logs/<vehicle_id>/<epoch>/<first seq>-<last seq>.msgpack`` (a retried batch overwrites an
object with identical content, so it stays idempotent) and PostgreSQL stays the index for
"vehicle X since time T".
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sync.errors import SyncDataError, SyncStorageError
from sync.outbox import open_durable

log = logging.getLogger(__name__)

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_logs_tokens",
        """
        CREATE TABLE logs (
            vehicle_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            t_s REAL NOT NULL,
            received_s REAL NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (vehicle_id, seq)
        ) WITHOUT ROWID;
        CREATE INDEX logs_vehicle_time ON logs (vehicle_id, t_s);
        CREATE TABLE dropped (vehicle_id TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE tokens (
            token_sha256 TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('vehicle', 'engineer')),
            subject TEXT NOT NULL,
            created_s REAL NOT NULL
        );
        """,
    ),
    (
        # records keyed by (vehicle, outbox epoch, seq); rows from before keep epoch '' (what
        # an outbox from before the epoch sends), so their re-sends stay duplicates.
        # ``id`` is the arrival order and the read cursor.
        "0002_outbox_epoch",
        """
        CREATE TABLE logs_v2 (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            vehicle_id TEXT NOT NULL,
            epoch TEXT NOT NULL,
            seq INTEGER NOT NULL,
            t_s REAL NOT NULL,
            received_s REAL NOT NULL,
            data BLOB NOT NULL,
            UNIQUE (vehicle_id, epoch, seq)
        );
        INSERT INTO logs_v2 (vehicle_id, epoch, seq, t_s, received_s, data)
            SELECT vehicle_id, '', seq, t_s, received_s, data FROM logs
            ORDER BY vehicle_id, seq;
        DROP TABLE logs;
        ALTER TABLE logs_v2 RENAME TO logs;
        CREATE INDEX logs_vehicle_time ON logs (vehicle_id, t_s);
        CREATE INDEX logs_vehicle_id ON logs (vehicle_id, id);
        CREATE TABLE dropped_v2 (
            vehicle_id TEXT NOT NULL,
            epoch TEXT NOT NULL,
            value INTEGER NOT NULL,
            PRIMARY KEY (vehicle_id, epoch)
        );
        INSERT INTO dropped_v2 SELECT vehicle_id, '', value FROM dropped;
        DROP TABLE dropped;
        ALTER TABLE dropped_v2 RENAME TO dropped;
        CREATE TABLE conflicts (vehicle_id TEXT PRIMARY KEY, value INTEGER NOT NULL);
        """,
    ),
    (
        # staged rollouts: each cab's latest health verdict on each bundle it tried
        "0003_health",
        """
        CREATE TABLE health (
            vehicle_id TEXT NOT NULL,
            bundle_id TEXT NOT NULL,
            ok INTEGER NOT NULL,
            detail TEXT NOT NULL,
            reported_s REAL NOT NULL,
            PRIMARY KEY (vehicle_id, bundle_id)
        );
        CREATE INDEX health_bundle ON health (bundle_id);
        """,
    ),
)

#: the largest integer SQLite stores (seq, dropped_total, cursors are checked against it)
MAX_INT = 2**63 - 1
EPOCH_CHARS = frozenset("0123456789abcdef")
MAX_EPOCH_CHARS = 64


def valid_epoch(epoch: object) -> bool:
    """'' (an outbox from before epochs) or up to 64 lowercase hex characters."""
    return isinstance(epoch, str) and len(epoch) <= MAX_EPOCH_CHARS and set(epoch) <= EPOCH_CHARS


@dataclass(frozen=True)
class Principal:
    kind: str  # "vehicle" or "engineer"
    subject: str  # vehicle id or engineer name


@dataclass(frozen=True)
class StoredRecord:
    seq: int
    t_s: float
    received_s: float
    data: bytes
    epoch: str = ""
    id: int = 0  # arrival order on the server (the read cursor)


@dataclass(frozen=True)
class InsertResult:
    """What one batch did; ``acked`` is read back from the database after the insert."""

    acked: list[int]
    inserted: int
    duplicates: int
    conflicts: int  # same (epoch, seq), other bytes: kept under a conflict epoch


class LogStorage(Protocol):
    """What the fleet server needs from log storage."""

    def insert_batch(
        self,
        vehicle_id: str,
        records: Sequence[tuple[int, float, bytes]],
        dropped_total: int,
        received_s: float,
        epoch: str = "",
    ) -> InsertResult:
        """Store (seq, t_s, data) records of one outbox epoch once each."""
        ...

    def read(
        self, vehicle_id: str, since_s: float, after_id: int, limit: int
    ) -> list[StoredRecord]:
        """Records with ``t_s >= since_s`` and ``id > after_id``, in arrival order."""
        ...

    def dropped_total(self, vehicle_id: str) -> int: ...

    def authenticate(self, token: str) -> Principal | None: ...

    def count(self, vehicle_id: str) -> int:
        """Records stored for the vehicle (all epochs)."""
        ...

    def vehicle_summary(self) -> dict[str, dict[str, Any]]: ...

    def add_token(self, kind: str, subject: str, now_s: float) -> str: ...

    def revoke(self, subject: str) -> int: ...

    def close(self) -> None: ...

    def vehicles(self) -> list[str]:
        """The vehicle registry: every vehicle with a token, sorted."""
        ...

    def record_health(
        self, vehicle_id: str, bundle_id: str, ok: bool, detail: str, now_s: float
    ) -> None:
        """A cab's health verdict on a bundle it tried (the latest one is kept)."""
        ...

    def health_reports(self, bundle_id: str) -> dict[str, tuple[bool, float]]:
        """vehicle -> (ok, reported_s) for ``bundle_id``."""
        ...


def is_postgres_url(database: str) -> bool:
    return database.startswith(("postgresql://", "postgres://"))


def open_storage(root: str | os.PathLike[str], database: str | None = None) -> LogStorage:
    """The log storage of a fleet: ``database`` None or empty is ``ROOT/fleet.sqlite``; a
    ``postgresql://`` URL is PostgreSQL (the ``server`` extra: psycopg, psycopg-pool); anything
    else is the path of a SQLite file. SyncStorageError when it cannot be opened."""
    if not database:
        return SqliteLogStorage(Path(root) / "fleet.sqlite")
    if is_postgres_url(database):
        try:
            from sync.logstore_pg import PostgresLogStorage
        except ImportError as e:
            raise SyncStorageError(
                f"a PostgreSQL database needs the server extra (pip install 'nagashi[server]'): {e}"
            ) from e
        return PostgresLogStorage(database)
    if "://" in database:
        raise SyncStorageError(
            f"unsupported database {database.split('://')[0]}:// (postgresql:// or a file path)"
        )
    return SqliteLogStorage(database)


def check_batch(
    records: Sequence[tuple[int, float, bytes]], dropped_total: int, epoch: str
) -> None:
    """SyncDataError naming the first field SQLite could not store exactly."""
    if not valid_epoch(epoch):
        raise SyncDataError("epoch must be '' or up to 64 lowercase hex characters")
    if type(dropped_total) is not int or not 0 <= dropped_total <= MAX_INT:
        raise SyncDataError("dropped_total must be an integer in 0..2^63-1")
    seen: set[int] = set()
    for seq, t_s, data in records:
        if type(seq) is not int or not 1 <= seq <= MAX_INT:
            raise SyncDataError(f"seq must be an integer in 1..2^63-1, got {seq!r:.40}")
        if seq in seen:
            raise SyncDataError(f"seq {seq} appears twice in one batch")
        seen.add(seq)
        if type(t_s) is not float or not math.isfinite(t_s):
            raise SyncDataError(f"record {seq}: t_s must be a finite number, got {t_s!r:.40}")
        if type(data) is not bytes:
            raise SyncDataError(f"record {seq}: data must be bytes")


def conflict_epoch(epoch: str, data: bytes) -> str:
    return f"{epoch}!{hashlib.sha256(data).hexdigest()[:16]}"


def token_hash(token: str) -> str:
    """What is stored of a token (both back ends)."""
    return hashlib.sha256(token.encode()).hexdigest()


class SqliteLogStorage:
    """The embedded default :class:`LogStorage` (thread-safe)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = open_durable(self.path, MIGRATIONS, "log storage", busy_timeout_ms=5000)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def insert_batch(
        self,
        vehicle_id: str,
        records: Sequence[tuple[int, float, bytes]],
        dropped_total: int,
        received_s: float,
        epoch: str = "",
    ) -> InsertResult:
        check_batch(records, dropped_total, epoch)
        acked: list[int] = []
        inserted = duplicates = conflicts = 0
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                for seq, t_s, data in records:
                    kept = self._insert_one(vehicle_id, epoch, seq, t_s, received_s, data)
                    if kept == "conflict":
                        alt = conflict_epoch(epoch, data)
                        kept = self._insert_one(vehicle_id, alt, seq, t_s, received_s, data)
                        if kept == "conflict":  # not possible: alt is keyed by the bytes
                            raise SyncStorageError(f"record {seq} of {vehicle_id} not stored")
                        conflicts += 1
                        if kept == "inserted":
                            conn.execute(
                                "INSERT INTO conflicts VALUES (?, 1) ON CONFLICT (vehicle_id) "
                                "DO UPDATE SET value = value + 1",
                                (vehicle_id,),
                            )
                    if kept == "inserted":
                        inserted += 1
                    else:
                        duplicates += 1
                    acked.append(seq)
                conn.execute(
                    "INSERT INTO dropped (vehicle_id, epoch, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (vehicle_id, epoch) "
                    "DO UPDATE SET value = max(value, excluded.value)",
                    (vehicle_id, epoch, int(dropped_total)),
                )
                conn.execute("COMMIT")
            except BaseException as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise SyncStorageError(f"log storage: {e}") from e
                raise
        if conflicts:
            log.warning(
                "%s: %d record(s) reuse an (epoch, seq) with other content (numbering went "
                "backwards): kept under a conflict epoch",
                vehicle_id,
                conflicts,
            )
        return InsertResult(acked, inserted, duplicates, conflicts)

    def _insert_one(
        self, vehicle_id: str, epoch: str, seq: int, t_s: float, received_s: float, data: bytes
    ) -> str:
        """'inserted', 'duplicate' (the same bytes are stored) or 'conflict' (other bytes),
        from what the database holds after the insert."""
        cur = self._conn.execute(
            "INSERT INTO logs (vehicle_id, epoch, seq, t_s, received_s, data) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (vehicle_id, epoch, seq) DO NOTHING",
            (vehicle_id, epoch, seq, t_s, received_s, data),
        )
        row = self._conn.execute(
            "SELECT data FROM logs WHERE vehicle_id = ? AND epoch = ? AND seq = ?",
            (vehicle_id, epoch, seq),
        ).fetchone()
        if row is None:
            raise SyncStorageError(f"record {seq} of {vehicle_id} was not stored")
        if bytes(row[0]) != data:
            return "conflict"
        return "inserted" if cur.rowcount == 1 else "duplicate"

    def read(
        self, vehicle_id: str, since_s: float, after_id: int, limit: int
    ) -> list[StoredRecord]:
        if not math.isfinite(since_s) or not 0 <= after_id <= MAX_INT or not 0 < limit <= MAX_INT:
            raise SyncDataError("since_s must be finite, after_id and limit in 0..2^63-1")
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT id, epoch, seq, t_s, received_s, data FROM logs "
                    "WHERE vehicle_id = ? AND id > ? AND t_s >= ? ORDER BY id LIMIT ?",
                    (vehicle_id, int(after_id), float(since_s), int(limit)),
                ).fetchall()
            except sqlite3.Error as e:
                raise SyncStorageError(f"log storage: {e}") from e
        return [
            StoredRecord(int(s), float(t), float(r), bytes(d), str(ep), int(i))
            for i, ep, s, t, r, d in rows
        ]

    def count(self, vehicle_id: str) -> int:
        with self._lock:
            row = self._conn.execute(
                "SELECT count(*) FROM logs WHERE vehicle_id = ?", (vehicle_id,)
            ).fetchone()
        return int(row[0])

    def dropped_total(self, vehicle_id: str) -> int:
        """Records the vehicle's outboxes dropped at their bound (summed over its epochs)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT coalesce(sum(value), 0) FROM dropped WHERE vehicle_id = ?", (vehicle_id,)
            ).fetchone()
        return int(row[0])

    def vehicle_summary(self) -> dict[str, dict[str, Any]]:
        """Per vehicle with a token or records: records stored, records its outboxes
        dropped at their bound, conflicts kept, time of the last record received."""
        with self._lock:
            names = [
                r[0]
                for r in self._conn.execute(
                    "SELECT subject FROM tokens WHERE kind = 'vehicle' "
                    "UNION SELECT DISTINCT vehicle_id FROM logs "
                    "UNION SELECT vehicle_id FROM dropped ORDER BY 1"
                )
            ]
            out: dict[str, dict[str, Any]] = {}
            for v in names:
                n, last = self._conn.execute(
                    "SELECT count(*), max(received_s) FROM logs WHERE vehicle_id = ?", (v,)
                ).fetchone()
                (dropped,) = self._conn.execute(
                    "SELECT coalesce(sum(value), 0) FROM dropped WHERE vehicle_id = ?", (v,)
                ).fetchone()
                row = self._conn.execute(
                    "SELECT value FROM conflicts WHERE vehicle_id = ?", (v,)
                ).fetchone()
                out[v] = {
                    "records": int(n),
                    "dropped_total": int(dropped),
                    "last_received_s": None if last is None else float(last),
                }
                if row:
                    out[v]["conflicts"] = int(row[0])
        return out

    # ------------------------------------------------------------------ rollout health
    def vehicles(self) -> list[str]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT DISTINCT subject FROM tokens WHERE kind = 'vehicle' ORDER BY 1"
            ).fetchall()
        return [str(r[0]) for r in rows]

    def record_health(
        self, vehicle_id: str, bundle_id: str, ok: bool, detail: str, now_s: float
    ) -> None:
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO health VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (vehicle_id, bundle_id) DO UPDATE SET ok = excluded.ok, "
                    "detail = excluded.detail, reported_s = excluded.reported_s",
                    (vehicle_id, bundle_id, int(bool(ok)), detail[:500], float(now_s)),
                )
            except sqlite3.Error as e:
                raise SyncStorageError(f"log storage: {e}") from e

    def health_reports(self, bundle_id: str) -> dict[str, tuple[bool, float]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT vehicle_id, ok, reported_s FROM health WHERE bundle_id = ?", (bundle_id,)
            ).fetchall()
        return {str(v): (bool(ok), float(t)) for v, ok, t in rows}

    # ------------------------------------------------------------------ credentials
    def add_token(self, kind: str, subject: str, now_s: float) -> str:
        """Create a credential; the token is returned once and stored only as its hash."""
        if kind not in ("vehicle", "engineer"):
            raise SyncDataError(f"token kind must be vehicle or engineer, got {kind!r}")
        if not subject or len(subject) > 128 or "/" in subject:
            raise SyncDataError(f"bad {kind} name {subject!r}")
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._conn.execute(
                "INSERT INTO tokens VALUES (?, ?, ?, ?)", (token_hash(token), kind, subject, now_s)
            )
        return token

    def revoke(self, subject: str) -> int:
        with self._lock:
            cur = self._conn.execute("DELETE FROM tokens WHERE subject = ?", (subject,))
        return cur.rowcount

    def authenticate(self, token: str) -> Principal | None:
        if not token or len(token) > 256:
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT kind, subject FROM tokens WHERE token_sha256 = ?", (token_hash(token),)
            ).fetchone()
        return Principal(str(row[0]), str(row[1])) if row else None
