"""Server-side storage of trip logs and credentials, behind an interface.

:class:`LogStorage` is what the fleet server needs; :class:`SqliteLogStorage` is the embedded
default (one file, ``fleet.sqlite``, WAL). Idempotence is the primary key ``(vehicle_id, seq)``
with ``INSERT OR IGNORE``: a re-sent batch inserts nothing new.

Follow-up design for fleets that outgrow one machine (not implemented here):

* PostgreSQL: the same table with ``PRIMARY KEY (vehicle_id, seq)`` and
  ``INSERT … ON CONFLICT (vehicle_id, seq) DO NOTHING RETURNING seq`` (the returned rows are the
  inserted ones, the rest are duplicates); ``dropped_total`` kept with
  ``ON CONFLICT (vehicle_id) DO UPDATE SET value = GREATEST(value, EXCLUDED.value)``; reads by
  ``(vehicle_id, seq)`` index, partitioned by month of ``t_s``.
* S3-compatible object storage for the bulk: the ingest writes each accepted batch as one
  immutable object ``logs/<vehicle_id>/<first seq>-<last seq>.msgpack`` (a retried batch
  overwrites an object with identical content, so it stays idempotent) and records the seq
  ranges in PostgreSQL, which stays the index for "vehicle X since time T".
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sync.errors import SyncDataError, SyncStorageError
from sync.outbox import open_durable

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
)


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


class LogStorage(Protocol):
    """What the fleet server needs from log storage."""

    def insert_batch(
        self,
        vehicle_id: str,
        records: Sequence[tuple[int, float, bytes]],
        dropped_total: int,
        received_s: float,
    ) -> tuple[int, int]:
        """Store (seq, t_s, data) records once each; (inserted, duplicates)."""
        ...

    def read(
        self, vehicle_id: str, since_s: float, after_seq: int, limit: int
    ) -> list[StoredRecord]: ...

    def dropped_total(self, vehicle_id: str) -> int: ...

    def authenticate(self, token: str) -> Principal | None: ...


def _token_hash(token: str) -> str:
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
    ) -> tuple[int, int]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                before = self._conn.total_changes
                self._conn.executemany(
                    "INSERT OR IGNORE INTO logs (vehicle_id, seq, t_s, received_s, data) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(vehicle_id, s, t, received_s, d) for s, t, d in records],
                )
                inserted = self._conn.total_changes - before
                self._conn.execute(
                    "INSERT INTO dropped (vehicle_id, value) VALUES (?, ?) "
                    "ON CONFLICT (vehicle_id) DO UPDATE SET value = max(value, excluded.value)",
                    (vehicle_id, int(dropped_total)),
                )
                self._conn.execute("COMMIT")
            except sqlite3.Error as e:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise SyncStorageError(f"log storage: {e}") from e
        return inserted, len(records) - inserted

    def read(
        self, vehicle_id: str, since_s: float, after_seq: int, limit: int
    ) -> list[StoredRecord]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, t_s, received_s, data FROM logs "
                "WHERE vehicle_id = ? AND seq > ? AND t_s >= ? ORDER BY seq LIMIT ?",
                (vehicle_id, int(after_seq), float(since_s), int(limit)),
            ).fetchall()
        return [StoredRecord(int(s), float(t), float(r), bytes(d)) for s, t, r, d in rows]

    def count(self, vehicle_id: str) -> int:
        with self._lock:
            row = self._conn.execute(
                "SELECT count(*) FROM logs WHERE vehicle_id = ?", (vehicle_id,)
            ).fetchone()
        return int(row[0])

    def dropped_total(self, vehicle_id: str) -> int:
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM dropped WHERE vehicle_id = ?", (vehicle_id,)
            ).fetchone()
        return int(row[0]) if row else 0

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
                "INSERT INTO tokens VALUES (?, ?, ?, ?)", (_token_hash(token), kind, subject, now_s)
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
                "SELECT kind, subject FROM tokens WHERE token_sha256 = ?", (_token_hash(token),)
            ).fetchone()
        return Principal(str(row[0]), str(row[1])) if row else None
