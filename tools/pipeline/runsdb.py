"""The runs database: every pipeline run, what went in, what came out, and the step cache.

One SQLite file (WAL), named and ordered migrations. Tables:

* ``runs``: one row per ``pipeline run``: the pipeline file's text and hash, workdir, git
  commit and dirty flag, options, status (running, ok, failed, refused, interrupted), the
  composed manifest and bundle id, the error.
* ``run_steps``: one row per step of a run: ran / skipped / failed / blocked, why, the cache key,
  parameters, input hashes, code version, output hashes, metrics and gate verdict. A skipped
  step carries the metrics of the run that produced its outputs, so every run is complete.
* ``step_cache``: per (workdir, step) the key and output hashes of the last successful
  execution: the build-system memory that lets an unchanged step be skipped.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiles.fileio import migrate_sqlite
from tools.pipeline.errors import RunsDatabaseError
from tools.pipeline.status import RECORDED_STEP_STATUSES

BUSY_TIMEOUT_S = 30.0

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_runs",
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            pipeline TEXT NOT NULL,
            pipeline_path TEXT NOT NULL,
            pipeline_sha256 TEXT NOT NULL,
            pipeline_text TEXT NOT NULL,
            workdir TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL,
            git_commit TEXT,
            git_dirty INTEGER,
            options TEXT NOT NULL,
            manifest TEXT,
            manifest_sha256 TEXT,
            bundle_id TEXT,
            error TEXT
        );
        CREATE TABLE run_steps (
            run_id INTEGER NOT NULL REFERENCES runs(id),
            step TEXT NOT NULL,
            position INTEGER NOT NULL,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            reason TEXT NOT NULL,
            cache_key TEXT,
            params TEXT NOT NULL,
            input_hashes TEXT NOT NULL,
            code_version TEXT,
            code_sources TEXT,
            outputs TEXT NOT NULL,
            output_hashes TEXT,
            metrics TEXT,
            verdict TEXT,
            produced_by_run INTEGER,
            duration_s REAL,
            error TEXT,
            PRIMARY KEY (run_id, step)
        );
        CREATE TABLE step_cache (
            workdir TEXT NOT NULL,
            step TEXT NOT NULL,
            cache_key TEXT NOT NULL,
            output_hashes TEXT NOT NULL,
            metrics TEXT NOT NULL,
            verdict TEXT,
            run_id INTEGER NOT NULL,
            finished_at TEXT NOT NULL,
            PRIMARY KEY (workdir, step)
        );
        """,
    ),
)

STEP_STATUSES = tuple(str(s) for s in RECORDED_STEP_STATUSES)


@dataclass(frozen=True)
class CacheEntry:
    cache_key: str
    output_hashes: dict[str, str]
    metrics: dict[str, Any]
    verdict: dict[str, Any] | None
    run_id: int


def _dumps(v: Any) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=False)


def _loads(s: str | None) -> Any:
    return None if s is None else json.loads(s)


class RunsDB:
    """The runs database at ``path`` (created on first use)."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise RunsDatabaseError(f"no runs database at {self.path}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except (sqlite3.Error, OSError) as e:
            raise RunsDatabaseError(f"runs database {self.path} is unusable: {e}") from e

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RunsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise RunsDatabaseError(f"runs database {self.path}: {e}") from e

    def _migrate(self) -> None:
        migrate_sqlite(self._conn, MIGRATIONS)

    # ------------------------------------------------------------------ runs

    def start_run(
        self,
        *,
        pipeline: str,
        pipeline_path: str,
        pipeline_sha256: str,
        pipeline_text: str,
        workdir: str,
        started_at: str,
        git_commit: str | None,
        git_dirty: bool | None,
        options: dict[str, Any],
    ) -> int:
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO runs (pipeline, pipeline_path, pipeline_sha256, pipeline_text,"
                " workdir, started_at, status, git_commit, git_dirty, options)"
                " VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                (
                    pipeline,
                    pipeline_path,
                    pipeline_sha256,
                    pipeline_text,
                    workdir,
                    started_at,
                    git_commit,
                    None if git_dirty is None else int(git_dirty),
                    _dumps(options),
                ),
            )
            run_id = cur.lastrowid
        assert run_id is not None
        return int(run_id)

    def finish_run(
        self,
        run_id: int,
        *,
        finished_at: str,
        status: str,
        manifest: dict[str, Any] | None,
        manifest_sha256: str | None,
        bundle_id: str | None,
        error: str | None,
    ) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET finished_at = ?, status = ?, manifest = ?, manifest_sha256 = ?,"
                " bundle_id = ?, error = ? WHERE id = ?",
                (
                    finished_at,
                    status,
                    None if manifest is None else _dumps(manifest),
                    manifest_sha256,
                    bundle_id,
                    error,
                    run_id,
                ),
            )

    def record_step(self, run_id: int, row: dict[str, Any]) -> None:
        cols = (
            "step",
            "position",
            "kind",
            "status",
            "reason",
            "cache_key",
            "params",
            "input_hashes",
            "code_version",
            "code_sources",
            "outputs",
            "output_hashes",
            "metrics",
            "verdict",
            "produced_by_run",
            "duration_s",
            "error",
        )
        json_cols = {
            "params",
            "input_hashes",
            "code_sources",
            "outputs",
            "output_hashes",
            "metrics",
            "verdict",
        }
        values = [
            (_dumps(row.get(k)) if row.get(k) is not None else None)
            if k in json_cols
            else row.get(k)
            for k in cols
        ]
        with self._tx() as c:
            c.execute(
                f"INSERT OR REPLACE INTO run_steps (run_id, {', '.join(cols)})"
                f" VALUES (?, {', '.join('?' for _ in cols)})",
                (run_id, *values),
            )

    # ------------------------------------------------------------------ cache

    def cached(self, workdir: str, step: str) -> CacheEntry | None:
        try:
            r = self._conn.execute(
                "SELECT * FROM step_cache WHERE workdir = ? AND step = ?", (workdir, step)
            ).fetchone()
        except sqlite3.Error as e:
            raise RunsDatabaseError(f"runs database {self.path}: {e}") from e
        if r is None:
            return None
        return CacheEntry(
            cache_key=r["cache_key"],
            output_hashes=json.loads(r["output_hashes"]),
            metrics=json.loads(r["metrics"]),
            verdict=_loads(r["verdict"]),
            run_id=int(r["run_id"]),
        )

    def store_cache(
        self,
        workdir: str,
        step: str,
        entry: CacheEntry,
        finished_at: str,
    ) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO step_cache VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (workdir, step) DO UPDATE SET cache_key = excluded.cache_key,"
                " output_hashes = excluded.output_hashes, metrics = excluded.metrics,"
                " verdict = excluded.verdict, run_id = excluded.run_id,"
                " finished_at = excluded.finished_at",
                (
                    workdir,
                    step,
                    entry.cache_key,
                    _dumps(entry.output_hashes),
                    _dumps(entry.metrics),
                    None if entry.verdict is None else _dumps(entry.verdict),
                    entry.run_id,
                    finished_at,
                ),
            )

    # ------------------------------------------------------------------ reading

    def list_runs(self, limit: int = 50, pipeline: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT * FROM runs"
        args: list[Any] = []
        if pipeline:
            q += " WHERE pipeline = ?"
            args.append(pipeline)
        q += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        out = []
        for r in self._conn.execute(q, args):
            d = self._run_dict(r)
            d["steps"] = self._step_statuses(int(r["id"]))
            out.append(d)
        return out

    def _step_statuses(self, run_id: int) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self._conn.execute(
            "SELECT status, count(*) FROM run_steps WHERE run_id = ? GROUP BY status", (run_id,)
        ):
            counts[r[0]] = int(r[1])
        return counts

    @staticmethod
    def _run_dict(r: sqlite3.Row) -> dict[str, Any]:
        return {
            "id": int(r["id"]),
            "pipeline": r["pipeline"],
            "pipeline_path": r["pipeline_path"],
            "pipeline_sha256": r["pipeline_sha256"],
            "workdir": r["workdir"],
            "started_at": r["started_at"],
            "finished_at": r["finished_at"],
            "status": r["status"],
            "git_commit": r["git_commit"],
            "git_dirty": None if r["git_dirty"] is None else bool(r["git_dirty"]),
            "options": json.loads(r["options"]),
            "manifest_sha256": r["manifest_sha256"],
            "bundle_id": r["bundle_id"],
            "error": r["error"],
        }

    def get_run(self, run_id: int) -> dict[str, Any]:
        """The full record of one run, with its steps in pipeline order."""
        r = self._conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if r is None:
            raise RunsDatabaseError(f"no run {run_id} in {self.path}")
        d = self._run_dict(r)
        d["pipeline_text"] = r["pipeline_text"]
        d["manifest"] = _loads(r["manifest"])
        steps = []
        for s in self._conn.execute(
            "SELECT * FROM run_steps WHERE run_id = ? ORDER BY position", (run_id,)
        ):
            steps.append(
                {
                    "step": s["step"],
                    "kind": s["kind"],
                    "status": s["status"],
                    "reason": s["reason"],
                    "cache_key": s["cache_key"],
                    "params": _loads(s["params"]),
                    "input_hashes": _loads(s["input_hashes"]),
                    "code_version": s["code_version"],
                    "code_sources": _loads(s["code_sources"]),
                    "outputs": _loads(s["outputs"]),
                    "output_hashes": _loads(s["output_hashes"]),
                    "metrics": _loads(s["metrics"]),
                    "verdict": _loads(s["verdict"]),
                    "produced_by_run": s["produced_by_run"],
                    "duration_s": s["duration_s"],
                    "error": s["error"],
                }
            )
        d["steps"] = steps
        return d

    def step_record(self, run_id: int, step: str) -> dict[str, Any] | None:
        """One step's row of one run (None when absent), JSON columns decoded."""
        r = self._conn.execute(
            "SELECT params, input_hashes, code_version, code_sources FROM run_steps"
            " WHERE run_id = ? AND step = ?",
            (run_id, step),
        ).fetchone()
        if r is None:
            return None
        return {
            "params": _loads(r["params"]),
            "input_hashes": _loads(r["input_hashes"]),
            "code_version": r["code_version"],
            "code_sources": _loads(r["code_sources"]),
        }
