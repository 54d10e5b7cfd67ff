"""The one SQLite migration runner (tiles.fileio.migrate_sqlite), on real SQLite files."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from tiles.fileio import migrate_sqlite, sql_statements

TRIGGER = """
CREATE TABLE a (x INTEGER);
CREATE TABLE log (msg TEXT);
-- a comment; with a semicolon
CREATE TRIGGER a_ins AFTER INSERT ON a BEGIN
  INSERT INTO log VALUES ('x;' || new.x);
  INSERT INTO log VALUES ('second');
END;
"""
MIGRATIONS = (("0001_a", TRIGGER), ("0002_b", "ALTER TABLE a ADD COLUMN y TEXT DEFAULT 'z;'"))


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def test_statements_split_on_complete_sql_only() -> None:
    stmts = sql_statements(TRIGGER)
    assert len(stmts) == 3 and stmts[2].startswith("-- a comment") and stmts[2].endswith("END;")
    with pytest.raises(sqlite3.ProgrammingError, match="incomplete"):
        sql_statements("CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1;")


def test_migrations_apply_once_in_order_with_triggers(tmp_path: Path) -> None:
    # the old runners split on ';' and broke this trigger in the middle
    conn = connect(tmp_path / "db.sqlite")
    assert migrate_sqlite(conn, MIGRATIONS[:1]) == 1
    assert migrate_sqlite(conn, MIGRATIONS) == 2
    assert migrate_sqlite(conn, MIGRATIONS) == 2  # nothing twice
    conn.execute("INSERT INTO a (x) VALUES (7)")
    assert [r[0] for r in conn.execute("SELECT msg FROM log")] == ["x;7", "second"]
    assert conn.execute("SELECT y FROM a").fetchone()[0] == "z;"


def test_a_failing_migration_leaves_nothing_half_applied(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db.sqlite")
    bad = (*MIGRATIONS, ("0003_bad", "CREATE TABLE c (x); INSERT INTO nowhere VALUES (1)"))
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        migrate_sqlite(conn, bad)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "c" not in tables and {"a", "log"} <= tables


def test_an_older_runners_database_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = connect(path)
    conn.executescript(
        "CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT);"
        + TRIGGER
        + "INSERT INTO migrations VALUES ('0001_a', '2026-11-01');"
    )
    assert migrate_sqlite(conn, MIGRATIONS) == 2  # 0001 not re-run (its tables exist), 0002 run
    assert conn.execute("SELECT y FROM a").fetchall() == []


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db.sqlite")
    migrate_sqlite(conn, MIGRATIONS)
    with pytest.raises(sqlite3.DatabaseError, match="newer than this code"):
        migrate_sqlite(conn, MIGRATIONS[:1])


def test_concurrent_openers_apply_each_migration_once(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    connect(path).execute("PRAGMA journal_mode=WAL")
    errors: list[BaseException] = []

    def open_and_migrate() -> None:
        try:
            c = connect(path)
            c.execute("PRAGMA busy_timeout=10000")
            migrate_sqlite(c, MIGRATIONS)
        except BaseException as e:  # collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=open_and_migrate) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    conn = connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    triggers = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='trigger'").fetchone()
    assert triggers[0] == 1
