"""The trip-log outbox on the device: durable until the server acknowledges, bounded in size.

SQLite in WAL mode with ``synchronous=FULL``: a record returned from :meth:`Outbox.append` is on
disk. Every record gets a sequence number that is never reused in this outbox
(``AUTOINCREMENT``), and the outbox has an ``epoch``, 32 random hex characters made when its
database is created: ``(vehicle id, epoch, seq)`` names a record on the server, so a wiped or
replaced outbox (numbering from 1 again) never collides with the records of an earlier one, and
re-sending is idempotent. (An outbox created before epochs existed keeps epoch ``''``, the
identity its records already have on the server.)

Records are deleted only by :meth:`Outbox.ack`, with one exception, the bound: when the outbox
exceeds ``max_records`` or ``max_bytes`` the *oldest* records are dropped, a persistent
``dropped_total`` counter grows (it travels with every upload, so the fleet sees what was lost),
and a warning is logged at most once per ``warn_interval_s`` with the count since the last one.

A record may name its *source* (``sources=`` of :meth:`Outbox.append_many`, e.g. the trip-log
sequence number it copies): :attr:`Outbox.source_high` is then the highest source enqueued, in
the same transaction as the record, so a caller can tell after a crash which of its records
never reached the outbox.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from sync.errors import SyncDataError, SyncStorageError
from tiles.fileio import migrate_sqlite

log = logging.getLogger(__name__)

#: named, ordered migrations (house style 7)
MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_records",
        """
        CREATE TABLE records (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            t_s REAL NOT NULL,
            data BLOB NOT NULL
        );
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO counters VALUES ('n_records', 0), ('n_bytes', 0), ('dropped_total', 0);
        """,
    ),
    (
        # the outbox's identity on the server: random for a new outbox, '' for one that already
        # numbered records before epochs existed (the server keeps its records under ''), and
        # the highest source number enqueued (NULL: not known)
        "0002_epoch_source",
        """
        CREATE TABLE meta (name TEXT PRIMARY KEY, value);
        INSERT INTO meta SELECT 'epoch', CASE
            WHEN EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'records') THEN ''
            ELSE lower(hex(randomblob(16))) END;
        INSERT INTO meta VALUES ('source_high', NULL);
        ALTER TABLE records ADD COLUMN source_seq INTEGER;
        """,
    ),
)


@dataclass(frozen=True)
class OutboxConfig:
    max_records: int = 1_000_000
    max_bytes: int = 256 << 20  # payload bytes kept while offline
    max_record_bytes: int = 1 << 20  # one record larger than this is refused
    batch_max_records: int = 500
    batch_max_bytes: int = 512 << 10  # keep well under the server's request cap
    warn_interval_s: float = 60.0  # "outbox full" is logged at most this often, with a count


@dataclass(frozen=True)
class OutboxRecord:
    seq: int
    t_s: float
    data: bytes  # msgpack of the payload

    def payload(self) -> Any:
        return msgpack.unpackb(self.data, raw=False)


def migrate(conn: sqlite3.Connection, migrations: Sequence[tuple[str, str]]) -> None:
    migrate_sqlite(conn, migrations)  # the project's one runner (tiles.fileio)


def open_durable(
    path: Path, migrations: Sequence[tuple[str, str]], what: str, busy_timeout_ms: int = 0
) -> sqlite3.Connection:
    """A SQLite database in WAL mode with ``synchronous=FULL`` (a committed record survives a
    power cut), migrated; SyncStorageError naming ``what`` when it cannot be used."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        if busy_timeout_ms:
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        migrate(conn, migrations)
    except (OSError, sqlite3.Error) as e:
        raise SyncStorageError(f"{what} {path} is unusable: {e}") from e
    return conn


class Outbox:
    """A durable FIFO of log records (thread-safe; one process at a time)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: OutboxConfig | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.config = config or OutboxConfig()
        self._lock = threading.Lock()
        self._monotonic = monotonic
        self._unwarned_drops = 0
        self._last_warning: float | None = None
        self._conn = open_durable(self.path, MIGRATIONS, "outbox")
        self.epoch: str = str(self._meta("epoch"))

    def _meta(self, name: str) -> object:
        row = self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _counter(self, name: str) -> int:
        row = self._conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    def append(self, payload: Any, t_s: float) -> int:
        """Store one record (any msgpack-able value); its sequence number."""
        return self.append_many([(payload, t_s)])[0]

    def append_many(
        self, items: Iterable[tuple[Any, float]], *, sources: Sequence[int] | None = None
    ) -> list[int]:
        """Store records in one transaction (one fsync); their sequence numbers. ``sources``:
        each record's source number (raises :attr:`source_high` in the same transaction)."""
        packed: list[tuple[float, bytes]] = []
        for payload, t_s in items:
            try:
                data = msgpack.packb(payload, use_bin_type=True)
            except (TypeError, ValueError, OverflowError) as e:
                raise SyncDataError(f"log record is not msgpack-able: {e}") from e
            if len(data) > self.config.max_record_bytes:
                raise SyncDataError(
                    f"log record of {len(data)} bytes exceeds {self.config.max_record_bytes}"
                )
            t = float(t_s)
            if not math.isfinite(t):
                raise SyncDataError(f"log record time {t} is not finite")
            packed.append((t, data))
        src: list[int | None] = [None] * len(packed)
        if sources is not None:
            src = [int(x) for x in sources]
            if len(src) != len(packed):
                raise SyncDataError("one source number per record")
        seqs: list[int] = []
        dropped = 0
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                for (t_s, data), source in zip(packed, src, strict=True):
                    cur = self._conn.execute(
                        "INSERT INTO records (t_s, data, source_seq) VALUES (?, ?, ?)",
                        (t_s, data, source),
                    )
                    seqs.append(int(cur.lastrowid or 0))
                if sources is not None and src:
                    self._conn.execute(
                        "UPDATE meta SET value = max(coalesce(value, -1), ?) "
                        "WHERE name = 'source_high'",
                        (max(x for x in src if x is not None),),
                    )
                added = sum(len(d) for _, d in packed)
                self._conn.execute(
                    "UPDATE counters SET value = value + ? WHERE name = 'n_records'", (len(packed),)
                )
                self._conn.execute(
                    "UPDATE counters SET value = value + ? WHERE name = 'n_bytes'", (added,)
                )
                dropped = self._enforce_bounds()
                self._conn.execute("COMMIT")
            except BaseException as e:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error | OverflowError):
                    raise SyncStorageError(f"outbox {self.path}: {e}") from e
                raise
            if dropped:
                self._warn_drops(dropped)
        return seqs

    def _warn_drops(self, dropped: int) -> None:
        """Once per ``warn_interval_s`` at most, with the count since the last warning."""
        self._unwarned_drops += dropped
        now = self._monotonic()
        if self._last_warning is not None and now - self._last_warning < (
            self.config.warn_interval_s
        ):
            return
        log.warning(
            "outbox full (%d records or %d bytes): dropped the %d oldest log record(s) "
            "since the last warning, %d in all",
            self.config.max_records,
            self.config.max_bytes,
            self._unwarned_drops,
            self._counter("dropped_total"),
        )
        self._unwarned_drops = 0
        self._last_warning = now

    @property
    def source_high(self) -> int | None:
        """The highest source number enqueued (None: not known, e.g. a new outbox)."""
        with self._lock:
            v = self._meta("source_high")
        return None if v is None else int(str(v))

    def set_source_high(self, value: int | None) -> None:
        """Set :attr:`source_high` (a caller's decision after a restart; see the module)."""
        with self._lock:
            try:
                self._conn.execute(
                    "UPDATE meta SET value = ? WHERE name = 'source_high'",
                    (None if value is None else int(value),),
                )
            except (sqlite3.Error, OverflowError) as e:
                raise SyncStorageError(f"outbox {self.path}: {e}") from e

    def _enforce_bounds(self) -> int:
        n, nbytes = self._counter("n_records"), self._counter("n_bytes")
        cfg = self.config
        if n <= cfg.max_records and nbytes <= cfg.max_bytes:
            return 0
        dropped = dropped_bytes = 0
        for seq, size in self._conn.execute(
            "SELECT seq, length(data) FROM records ORDER BY seq"
        ).fetchall():
            if n - dropped <= cfg.max_records and nbytes - dropped_bytes <= cfg.max_bytes:
                break
            last = seq
            dropped += 1
            dropped_bytes += int(size)
        if dropped:
            self._conn.execute("DELETE FROM records WHERE seq <= ?", (last,))
            self._conn.execute(
                "UPDATE counters SET value = value - ? WHERE name = 'n_records'", (dropped,)
            )
            self._conn.execute(
                "UPDATE counters SET value = value - ? WHERE name = 'n_bytes'", (dropped_bytes,)
            )
            self._conn.execute(
                "UPDATE counters SET value = value + ? WHERE name = 'dropped_total'", (dropped,)
            )
        return dropped

    def pending(
        self, max_records: int | None = None, max_bytes: int | None = None
    ) -> list[OutboxRecord]:
        """The oldest records, at most ``max_records`` and about ``max_bytes`` (always ≥ 1)."""
        lim_n = max_records or self.config.batch_max_records
        lim_b = max_bytes or self.config.batch_max_bytes
        out: list[OutboxRecord] = []
        total = 0
        with self._lock:
            try:
                cur = self._conn.execute(
                    "SELECT seq, t_s, data FROM records ORDER BY seq LIMIT ?", (lim_n,)
                )
                for seq, t_s, data in cur:
                    if out and total + len(data) > lim_b:
                        break
                    out.append(OutboxRecord(int(seq), float(t_s), bytes(data)))
                    total += len(data)
            except sqlite3.Error as e:
                raise SyncStorageError(f"outbox {self.path}: {e}") from e
        return out

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete acknowledged records; how many were deleted."""
        ids = sorted({int(s) for s in seqs})
        if not ids:
            return 0
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                n = nbytes = 0
                for i in range(0, len(ids), 500):
                    part = ids[i : i + 500]
                    marks = ",".join("?" * len(part))
                    row = self._conn.execute(
                        f"SELECT count(*), coalesce(sum(length(data)), 0) FROM records "
                        f"WHERE seq IN ({marks})",
                        part,
                    ).fetchone()
                    n += int(row[0])
                    nbytes += int(row[1])
                    self._conn.execute(f"DELETE FROM records WHERE seq IN ({marks})", part)
                self._conn.execute(
                    "UPDATE counters SET value = value - ? WHERE name = 'n_records'", (n,)
                )
                self._conn.execute(
                    "UPDATE counters SET value = value - ? WHERE name = 'n_bytes'", (nbytes,)
                )
                self._conn.execute("COMMIT")
            except BaseException as e:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error | OverflowError):
                    raise SyncStorageError(f"outbox {self.path}: {e}") from e
                raise
        return n

    @property
    def dropped_total(self) -> int:
        with self._lock:
            return self._counter("dropped_total")

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "records": self._counter("n_records"),
                "bytes": self._counter("n_bytes"),
                "dropped_total": self._counter("dropped_total"),
            }
