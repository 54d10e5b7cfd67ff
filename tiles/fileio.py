"""Durable file helpers shared by every layer (tiles is the one package all may import).

* :func:`atomic_write_bytes`: temp file in the same folder, fsync, ``os.replace``, fsync of the
  folder: a reader (or a power cut) sees the old file or the new one, never a part.
* :func:`sha256_file`: the one file hash of the project (bundles, manifests, pipeline inputs).
* :func:`migrate_sqlite`: the one migration runner of every SQLite database the project writes
  (outbox, fleet log store, trips database, runs database), on ``PRAGMA user_version``.
* :func:`real_data_dir`: where the real data (OSM extracts, trip records) lives: the demo, the
  benchmarks and the tests all find it here.
* :func:`one_line_error`: an exception (a YAML syntax error, say) as one line for the user.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path

HASH_BLOCK_BYTES = 1 << 20
#: the checkout this package was imported from (an editable install or a source tree)
REPO_DIR = Path(__file__).resolve().parent.parent


def sqlite_readonly_uri(path: str | os.PathLike[str]) -> str:
    """The SQLite URI that opens ``path`` read-only and immutable (for files never written while
    open: bundle tiles). Built with ``Path.as_uri()``, so a ``?``, ``#`` or ``%`` in the path is
    escaped instead of being read as the start of the URI's query."""
    return Path(path).resolve().as_uri() + "?mode=ro&immutable=1"


def real_data_dir() -> Path:
    """The folder of real data: ``$NAGASHI_DATA`` if set, else the repository's own ``data/``;
    a ``../shared/data`` beside the checkout only when the repository has no ``data/``."""
    env = os.environ.get("NAGASHI_DATA")
    if env:
        return Path(env).resolve()
    own = REPO_DIR / "data"
    if (own / "osm").is_dir():
        return own
    shared = REPO_DIR.parent / "shared" / "data"
    return shared if shared.is_dir() else own


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` atomically and durably (see the module docstring); returns
    the path. OSError (disk full, permissions) is the caller's to wrap."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(p.parent)
    return p


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = HASH_BLOCK_BYTES) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


#: tables in which the project's older databases recorded the names of applied migrations
_LEGACY_MIGRATION_TABLES = ("_migrations", "migrations")


def sql_statements(script: str) -> list[str]:
    """Split ``script`` into complete SQL statements (a ``;`` inside a string, a comment or a
    trigger's ``BEGIN ... END`` does not end one; ``sqlite3.complete_statement`` decides)."""
    out: list[str] = []
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\r\n;"):
                out.append(buf.strip())
            buf = ""
    if buf.strip(" \t\r\n;"):
        raise sqlite3.ProgrammingError(f"incomplete SQL statement: {buf.strip()[:80]!r}")
    return out


def migrate_sqlite(conn: sqlite3.Connection, migrations: Sequence[tuple[str, str]]) -> int:
    """Apply the named, ordered ``migrations`` that ``conn``'s database lacks; returns how many
    are applied in all. The count is ``PRAGMA user_version`` (0 for a new file); each migration
    runs in one ``BEGIN IMMEDIATE`` transaction with the version bump, so a crash, a failing
    statement or a concurrent process never leaves it half applied or applied twice. A database
    of the project's earlier runners (names in a ``_migrations``/``migrations`` table) is taken
    over at the count of its leading applied names. ``conn`` must be in autocommit mode
    (``isolation_level=None``)."""
    names = [name for name, _ in migrations]
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version == 0 and _legacy_count(conn, names):
        conn.execute("BEGIN IMMEDIATE")  # take an older runner's database over, once
        try:
            if int(conn.execute("PRAGMA user_version").fetchone()[0]) == 0:
                conn.execute(f"PRAGMA user_version = {_legacy_count(conn, names)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    for i in range(version, len(migrations)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # another process may have applied it since we looked
            if int(conn.execute("PRAGMA user_version").fetchone()[0]) == i:
                for stmt in sql_statements(migrations[i][1]):
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version = {i + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    final = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if final > len(migrations):
        raise sqlite3.DatabaseError(
            f"database schema version {final} is newer than this code's {len(migrations)}"
        )
    return final


def _legacy_count(conn: sqlite3.Connection, names: Sequence[str]) -> int:
    for table in _LEGACY_MIGRATION_TABLES:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if found:
            done = {r[0] for r in conn.execute(f'SELECT name FROM "{table}"')}
            n = 0
            while n < len(names) and names[n] in done:
                n += 1
            return n
    return 0


def one_line_error(e: BaseException) -> str:
    """``e`` as one line: a YAML error (PyYAML's are several lines, with a source excerpt)
    becomes ``line L, column C: problem (context)``; any other message has its lines joined.
    Duck-typed on PyYAML's ``problem``/``problem_mark`` so that tiles needs no YAML."""
    problem = getattr(e, "problem", None)
    mark = getattr(e, "problem_mark", None)
    if isinstance(problem, str) and mark is not None:
        where = f"line {getattr(mark, 'line', 0) + 1}, column {getattr(mark, 'column', 0) + 1}"
        context = getattr(e, "context", None)
        return f"{where}: {problem}" + (f" ({context})" if isinstance(context, str) else "")
    reason, position = getattr(e, "reason", None), getattr(e, "position", None)
    if isinstance(reason, str) and isinstance(position, int):  # yaml.reader.ReaderError
        return f"character {position}: {reason}"
    return "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
