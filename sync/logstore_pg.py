"""The PostgreSQL :class:`~sync.logstore.LogStorage` (psycopg 3 with a connection pool; the
``server`` extra). ``nagashi fleet serve --database postgresql://…`` uses it.

The same records, identities and answers as :class:`~sync.logstore.SqliteLogStorage`:

* A record's identity is ``(vehicle_id, epoch, seq)`` (``UNIQUE``); a batch is one
  ``INSERT … SELECT FROM unnest(…) ON CONFLICT (vehicle_id, epoch, seq) DO NOTHING RETURNING
  seq`` (the returned rows are the inserted ones). The others are read back: the same bytes are
  a duplicate, other bytes (numbering went backwards without a new epoch) are kept under the
  conflict epoch and counted. Every acknowledgement is what the database holds after the insert,
  in the same transaction, so a failure rolls everything back and acknowledges nothing.
* Several server processes on one database: a transaction takes a per-vehicle advisory lock
  (``pg_advisory_xact_lock``) before it inserts, so one vehicle's batches are serialised and the
  read cursor ``id`` (an identity column) grows in commit order per vehicle: a reader paging with
  ``after_id`` never skips a row that commits later with a smaller id. Two processes receiving
  the same batch store it once and both acknowledge it.
* Tokens are stored only as their sha256; the vehicle registry is the vehicle tokens, as in
  SQLite.
* Migrations are named and ordered like SQLite's (:data:`PG_MIGRATIONS`); the applied count,
  SQLite's ``PRAGMA user_version``, is the row count of ``nagashi_schema`` (one row per applied
  migration, with its name). Each migration runs in one transaction with its row, under a
  transaction-level advisory lock, so several processes starting at once apply it once.
* The same database keeps the live layer's inputs (:meth:`PostgresLogStorage.live_inputs`,
  :mod:`sync._live_pg`) and the staged rollouts' state (:meth:`PostgresLogStorage.rollout_state`,
  :class:`PostgresRolloutState`), in the same pool.
* A lost connection (a database restart) is :class:`~sync.errors.SyncStorageError`: the server
  answers 503 and the cab retries; the pool checks a connection before lending it
  (``ConnectionPool.check_connection``), so the next request after a restart reconnects.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from sync._live_pg import LIVE_MIGRATION, PostgresLiveInputs
from sync.errors import SyncDataError, SyncStorageError
from sync.logstore import (
    MAX_INT,
    InsertResult,
    Principal,
    StoredRecord,
    check_batch,
    conflict_epoch,
    token_hash,
)

log = logging.getLogger(__name__)

#: named, ordered, each applied once (the same mechanism as the SQLite ``MIGRATIONS``)
PG_MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_logs_tokens",
        """
        CREATE TABLE logs (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            vehicle_id TEXT NOT NULL,
            epoch TEXT NOT NULL,
            seq BIGINT NOT NULL,
            t_s DOUBLE PRECISION NOT NULL,
            received_s DOUBLE PRECISION NOT NULL,
            data BYTEA NOT NULL,
            UNIQUE (vehicle_id, epoch, seq)
        );
        CREATE INDEX logs_vehicle_id ON logs (vehicle_id, id);
        CREATE INDEX logs_vehicle_time ON logs (vehicle_id, t_s);
        CREATE TABLE dropped (
            vehicle_id TEXT NOT NULL,
            epoch TEXT NOT NULL,
            value BIGINT NOT NULL,
            PRIMARY KEY (vehicle_id, epoch)
        );
        CREATE TABLE conflicts (vehicle_id TEXT PRIMARY KEY, value BIGINT NOT NULL);
        CREATE TABLE tokens (
            token_sha256 TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('vehicle', 'engineer')),
            subject TEXT NOT NULL,
            created_s DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX tokens_subject ON tokens (subject);
        """,
    ),
    (
        # staged rollouts: each cab's latest health verdict on each bundle it tried
        "0002_health",
        """
        CREATE TABLE health (
            vehicle_id TEXT NOT NULL,
            bundle_id TEXT NOT NULL,
            ok BOOLEAN NOT NULL,
            detail TEXT NOT NULL,
            reported_s DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (vehicle_id, bundle_id)
        );
        CREATE INDEX health_bundle ON health (bundle_id);
        """,
    ),
    # the live layer's inputs, shared by the server processes (sync/_live_pg.py)
    ("0003_live", LIVE_MIGRATION),
    (
        # staged rollouts: one row per rollout ("<area>/<cohort or _all>"), sync.rollout
        "0004_rollouts",
        """
        CREATE TABLE rollout_state (
            key TEXT PRIMARY KEY,
            doc JSONB NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        """,
    ),
)

# transaction-level advisory lock keys (any constants)
_ROLLOUT_LOCK = 0x726F6C6C  # "roll": rollout commands take turns, on any machine

# a transaction-level advisory lock key for the migration runner (any constant)
_MIGRATION_LOCK = 0x6E616761  # "naga"


def redact(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def migrate_postgres(conn: psycopg.Connection[Any], migrations: Sequence[tuple[str, str]]) -> int:
    """Apply the named, ordered ``migrations`` the database lacks; returns how many are applied
    in all. The count is the number of rows of ``nagashi_schema``; each migration runs in one
    transaction with its row, under an advisory lock, so a crash, a failing statement or a
    concurrent process never leaves it half applied or applied twice. A database with rows this
    code does not know (newer code migrated it), or other names in the same places, is refused."""
    names = [name for name, _ in migrations]
    while True:
        with conn.transaction():
            # the lock first: CREATE TABLE IF NOT EXISTS alone races with another process
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS nagashi_schema ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            applied = [
                str(r[0]) for r in conn.execute("SELECT name FROM nagashi_schema ORDER BY version")
            ]
            if applied != names[: len(applied)]:
                raise SyncStorageError(
                    f"database schema has migrations {applied} that this code does not know "
                    f"(it knows {names}): newer code migrated it"
                )
            i = len(applied)
            if i == len(migrations):
                return i
            with conn.cursor() as cur:
                cur.execute(migrations[i][1].encode())  # several statements: simple protocol
            conn.execute(
                "INSERT INTO nagashi_schema (version, name) VALUES (%s, %s)", (i + 1, names[i])
            )


class PostgresLogStorage:
    """:class:`~sync.logstore.LogStorage` in PostgreSQL (thread-safe, any number of processes)."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self._where = redact(url)
        try:
            # one direct connection first: an unreachable database or a bad URL is one clear
            # error at once (the pool would retry until its timeout), and the schema is migrated
            with psycopg.connect(url, connect_timeout=max(1, math.ceil(timeout_s))) as conn:
                migrate_postgres(conn, PG_MIGRATIONS)
        except psycopg.Error as e:
            raise SyncStorageError(f"log storage {self._where} is unusable: {_one_line(e)}") from e
        try:
            self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                url,
                min_size=min_size,
                max_size=max_size,
                timeout=timeout_s,
                check=ConnectionPool.check_connection,
                kwargs={"connect_timeout": max(1, math.ceil(timeout_s))},
                open=False,
                name="nagashi-logs",
            )
            self._pool.open(wait=True, timeout=timeout_s)
        except (psycopg.Error, PoolTimeout) as e:
            self._close_quietly()
            raise SyncStorageError(f"log storage {self._where} is unusable: {_one_line(e)}") from e
        except BaseException:
            self._close_quietly()
            raise

    def _close_quietly(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close(timeout=1.0)

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection in a transaction: committed at the end, rolled back on any error;
        database errors (a restart included) become SyncStorageError."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.Error, PoolTimeout) as e:
            raise SyncStorageError(f"log storage: {_one_line(e)}") from e

    def rollout_state(self) -> PostgresRolloutState:
        """The staged rollouts' state in this database (:class:`sync.rollout.RolloutState`)."""
        return PostgresRolloutState(self._tx)

    def live_inputs(self) -> PostgresLiveInputs:
        """The live layer's inputs in this database (same pool), shared by every server
        process on it."""
        return PostgresLiveInputs(self._tx)

    # ------------------------------------------------------------------------- records
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
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (vehicle_id,))
            new = self._insert_many(conn, vehicle_id, epoch, records, received_s)
            rest = [r for r in records if r[0] not in new]
            stored = self._stored(conn, vehicle_id, epoch, [r[0] for r in rest])
            for seq, t_s, data in records:
                if seq in new:
                    inserted += 1
                    acked.append(seq)
                    continue
                if seq not in stored:
                    raise SyncStorageError(f"record {seq} of {vehicle_id} was not stored")
                if stored[seq] != data:
                    alt = conflict_epoch(epoch, data)
                    kept = self._insert_many(conn, vehicle_id, alt, [(seq, t_s, data)], received_s)
                    again = self._stored(conn, vehicle_id, alt, [seq])
                    if again.get(seq) != data:  # not possible: alt is keyed by the bytes
                        raise SyncStorageError(f"record {seq} of {vehicle_id} not stored")
                    conflicts += 1
                    if kept:
                        inserted += 1
                        conn.execute(
                            "INSERT INTO conflicts VALUES (%s, 1) ON CONFLICT (vehicle_id) "
                            "DO UPDATE SET value = conflicts.value + 1",
                            (vehicle_id,),
                        )
                    else:
                        duplicates += 1
                else:
                    duplicates += 1
                acked.append(seq)
            conn.execute(
                "INSERT INTO dropped (vehicle_id, epoch, value) VALUES (%s, %s, %s) "
                "ON CONFLICT (vehicle_id, epoch) "
                "DO UPDATE SET value = GREATEST(dropped.value, EXCLUDED.value)",
                (vehicle_id, epoch, int(dropped_total)),
            )
        if conflicts:
            log.warning(
                "%s: %d record(s) reuse an (epoch, seq) with other content (numbering went "
                "backwards): kept under a conflict epoch",
                vehicle_id,
                conflicts,
            )
        return InsertResult(acked, inserted, duplicates, conflicts)

    @staticmethod
    def _insert_many(
        conn: psycopg.Connection[Any],
        vehicle_id: str,
        epoch: str,
        records: Sequence[tuple[int, float, bytes]],
        received_s: float,
    ) -> set[int]:
        """Insert in batch order; the seqs actually inserted (RETURNING)."""
        if not records:
            return set()
        cur = conn.execute(
            "INSERT INTO logs (vehicle_id, epoch, seq, t_s, received_s, data) "
            "SELECT %s, %s, u.seq, u.t_s, %s, u.data "
            "FROM unnest(%s::bigint[], %s::float8[], %s::bytea[]) WITH ORDINALITY "
            "AS u(seq, t_s, data, n) ORDER BY u.n "
            "ON CONFLICT (vehicle_id, epoch, seq) DO NOTHING RETURNING seq",
            (
                vehicle_id,
                epoch,
                float(received_s),
                [r[0] for r in records],
                [r[1] for r in records],
                [r[2] for r in records],
            ),
        )
        return {int(r[0]) for r in cur.fetchall()}

    @staticmethod
    def _stored(
        conn: psycopg.Connection[Any], vehicle_id: str, epoch: str, seqs: Sequence[int]
    ) -> dict[int, bytes]:
        if not seqs:
            return {}
        rows = conn.execute(
            "SELECT seq, data FROM logs WHERE vehicle_id = %s AND epoch = %s "
            "AND seq = ANY(%s::bigint[])",
            (vehicle_id, epoch, list(seqs)),
        ).fetchall()
        return {int(s): bytes(d) for s, d in rows}

    def read(
        self, vehicle_id: str, since_s: float, after_id: int, limit: int
    ) -> list[StoredRecord]:
        if not math.isfinite(since_s) or not 0 <= after_id <= MAX_INT or not 0 < limit <= MAX_INT:
            raise SyncDataError("since_s must be finite, after_id and limit in 0..2^63-1")
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT id, epoch, seq, t_s, received_s, data FROM logs "
                "WHERE vehicle_id = %s AND id > %s AND t_s >= %s ORDER BY id LIMIT %s",
                (vehicle_id, int(after_id), float(since_s), int(limit)),
            ).fetchall()
        return [
            StoredRecord(int(s), float(t), float(r), bytes(d), str(ep), int(i))
            for i, ep, s, t, r, d in rows
        ]

    def count(self, vehicle_id: str) -> int:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT count(*) FROM logs WHERE vehicle_id = %s", (vehicle_id,)
            ).fetchone()
        return int(row[0]) if row else 0

    def dropped_total(self, vehicle_id: str) -> int:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT coalesce(sum(value), 0) FROM dropped WHERE vehicle_id = %s", (vehicle_id,)
            ).fetchone()
        return int(row[0]) if row else 0

    def vehicle_summary(self) -> dict[str, dict[str, Any]]:
        with self._tx() as conn:
            rows = conn.execute(
                "WITH names AS ("
                " SELECT subject AS v FROM tokens WHERE kind = 'vehicle'"
                " UNION SELECT DISTINCT vehicle_id FROM logs"
                " UNION SELECT vehicle_id FROM dropped)"
                " SELECT n.v,"
                " (SELECT count(*) FROM logs l WHERE l.vehicle_id = n.v),"
                " (SELECT max(received_s) FROM logs l WHERE l.vehicle_id = n.v),"
                " (SELECT coalesce(sum(value), 0) FROM dropped d WHERE d.vehicle_id = n.v),"
                " (SELECT value FROM conflicts c WHERE c.vehicle_id = n.v)"
                " FROM names n ORDER BY 1"
            ).fetchall()
        out: dict[str, dict[str, Any]] = {}
        for v, n, last, dropped, conflicts in rows:
            out[str(v)] = {
                "records": int(n),
                "dropped_total": int(dropped),
                "last_received_s": None if last is None else float(last),
            }
            if conflicts is not None:
                out[str(v)]["conflicts"] = int(conflicts)
        return out

    # ------------------------------------------------------------------------- rollout health
    def vehicles(self) -> list[str]:
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT DISTINCT subject FROM tokens WHERE kind = 'vehicle' ORDER BY 1"
            ).fetchall()
        return [str(r[0]) for r in rows]

    def record_health(
        self, vehicle_id: str, bundle_id: str, ok: bool, detail: str, now_s: float
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO health VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (vehicle_id, bundle_id) DO UPDATE SET ok = EXCLUDED.ok, "
                "detail = EXCLUDED.detail, reported_s = EXCLUDED.reported_s",
                (vehicle_id, bundle_id, bool(ok), detail[:500], float(now_s)),
            )

    def health_reports(self, bundle_id: str) -> dict[str, tuple[bool, float]]:
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT vehicle_id, ok, reported_s FROM health WHERE bundle_id = %s",
                (bundle_id,),
            ).fetchall()
        return {str(v): (bool(ok), float(t)) for v, ok, t in rows}

    # ------------------------------------------------------------------------- credentials
    def add_token(self, kind: str, subject: str, now_s: float) -> str:
        """Create a credential; the token is returned once and stored only as its hash."""
        if kind not in ("vehicle", "engineer"):
            raise SyncDataError(f"token kind must be vehicle or engineer, got {kind!r}")
        if not subject or len(subject) > 128 or "/" in subject:
            raise SyncDataError(f"bad {kind} name {subject!r}")
        token = secrets.token_urlsafe(32)
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO tokens VALUES (%s, %s, %s, %s)",
                (token_hash(token), kind, subject, float(now_s)),
            )
        return token

    def revoke(self, subject: str) -> int:
        with self._tx() as conn:
            cur = conn.execute("DELETE FROM tokens WHERE subject = %s", (subject,))
        return int(cur.rowcount)

    def authenticate(self, token: str) -> Principal | None:
        if not token or len(token) > 256:
            return None
        with self._tx() as conn:
            row = conn.execute(
                "SELECT kind, subject FROM tokens WHERE token_sha256 = %s", (token_hash(token),)
            ).fetchone()
        return Principal(str(row[0]), str(row[1])) if row else None


class PostgresRolloutState:
    """:class:`sync.rollout.RolloutState` in the table ``rollout_state``, the commands
    serialised by a transaction-level advisory lock (machines and processes take turns). What
    the targets role signed (``signed()``, ROOT/rollouts.json) wins when the two differ: it is
    what the cabs see (a crash between signing and the commit, or a command run without
    ``--database``); the table gets it back at the end of the command."""

    def __init__(
        self, transaction: Callable[[], AbstractContextManager[psycopg.Connection[Any]]]
    ) -> None:
        self._tx = transaction

    @staticmethod
    def _rows(conn: psycopg.Connection[Any]) -> dict[str, Any]:
        rows = conn.execute("SELECT key, doc FROM rollout_state ORDER BY key").fetchall()
        return {str(k): d for k, d in rows}

    @staticmethod
    def _reconciled(stored: dict[str, Any], signed: dict[str, Any]) -> dict[str, Any]:
        if stored != signed:
            log.warning(
                "rollout state in the database differs from the signed rollouts.json "
                "(%d vs %d rollouts): the signed one is taken",
                len(stored),
                len(signed),
            )
        return signed

    @contextmanager
    def locked(self, signed: Callable[[], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ROLLOUT_LOCK,))
            stored = self._rows(conn)
            state = self._reconciled(stored, signed())
            yield state
            for key in sorted(set(stored) - set(state)):
                conn.execute("DELETE FROM rollout_state WHERE key = %s", (key,))
            for key, doc in sorted(state.items()):
                if stored.get(key) != doc:
                    conn.execute(
                        "INSERT INTO rollout_state (key, doc) VALUES (%s, %s) "
                        "ON CONFLICT (key) DO UPDATE SET doc = EXCLUDED.doc, updated_at = now()",
                        (key, Jsonb(doc)),
                    )

    def load(self, signed: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        with self._tx() as conn:
            stored = self._rows(conn)
        return self._reconciled(stored, signed())


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
