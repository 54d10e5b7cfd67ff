"""Where staged rollouts keep their state (issue 19): the signed ``ROOT/rollouts.json`` and,
with ``--database postgresql://…``, the table ``rollout_state``; commands that change a
rollout take turns (a file lock on SQLite, an advisory lock on PostgreSQL).

Real components: a throwaway PostgreSQL cluster on a loopback port (tests/pgcluster.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sync.rollout import Rollouts
from tests.sync.conftest import Fleet, utcnow
from tools.cli import main

CABS = [f"cab-{i}" for i in range(10)]


def _signed(root: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((root / "rollouts.json").read_text())
    return doc


def _stored(database: str) -> dict[str, Any]:
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT key, doc FROM rollout_state ORDER BY key").fetchall()
    return {str(k): d for k, d in rows}


def test_concurrent_commands_take_turns(fleet: Fleet, log_backend: Callable[[Path], Any]) -> None:
    """Four operators promote the same rollout at once (force): every promotion is applied,
    one after the other, never two from the same stage."""
    storage = log_backend(fleet.root)
    for c in CABS:
        storage.add_token("vehicle", c, 0.0)
    ro = Rollouts(fleet.repo, storage)
    now = utcnow()
    ro.start(str(fleet.bundles["v2"].path), "monaco", [10.0, 30.0, 50.0, 70.0, 90.0, 100.0], now)
    errors: list[BaseException] = []
    go = threading.Barrier(4)

    def promote() -> None:
        go.wait()  # all four at once
        try:
            Rollouts(fleet.repo, storage).promote("monaco", None, now, force=True)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=promote) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and not any(t.is_alive() for t in threads)
    (status,) = ro.status(now.timestamp())
    assert status["stage"] == 5 and status["percent"] == 90.0
    events = [h["event"] for h in status["history"]]
    assert events == ["started at 10%", *(f"promoted to {p}%" for p in (30, 50, 70, 90))]
    if log_backend.backend == "postgresql":  # type: ignore[attr-defined]  # conftest sets .backend on the factory
        assert _stored(storage.database) == _signed(fleet.root)


def test_postgresql_keeps_the_state_and_the_signed_file_wins(
    fleet: Fleet, pg_cluster: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    database = pg_cluster.database()
    root = ["--root", str(fleet.root)]
    db = ["--database", database]
    for c in CABS:
        assert main(["fleet", "token", "add", *root, *db, "--vehicle", c]) == 0
    start = ["fleet", "rollout", "start", *root, *db, "--bundle", str(fleet.bundles["v2"].path),
             "--area", "monaco", "--stages", "20%,100%"]  # fmt: skip
    assert main(start) == 0
    stored = _stored(database)
    assert list(stored) == ["monaco/_all"] and stored["monaco/_all"]["state"] == "running"
    assert stored == _signed(fleet.root)
    # halted by a command without --database: the file (signed) moves, the table does not
    assert main(["fleet", "rollout", "halt", *root, "--area", "monaco"]) == 0
    assert _stored(database)["monaco/_all"]["state"] == "running"
    capsys.readouterr()
    assert main(["fleet", "rollout", "status", *root, *db]) == 0
    (shown,) = json.loads(capsys.readouterr().out)["rollouts"]
    assert shown["state"] == "halted"  # what the cabs see
    later = utcnow() + timedelta(seconds=5)
    storage = _open(fleet.root, database)
    Rollouts(fleet.repo, storage).evaluate(later)  # the next command
    storage.close()
    assert _stored(database)["monaco/_all"]["state"] == "halted"  # written back
    assert _stored(database) == _signed(fleet.root)


def _open(root: Path, database: str) -> Any:
    from sync.logstore import open_storage

    return open_storage(root, database)
