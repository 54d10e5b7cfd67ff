"""Issue 13, items 3, 5, 6: no trip-log record is lost or acknowledged without being stored.

A real fleet server (uvicorn on 127.0.0.1) over a real SQLite database; cabs are real outboxes
and uploaders."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest

from safety.verdict import Verdict
from sync import FleetRepository, LogClient, LogUploader, Outbox, OutboxConfig, fetch_logs
from sync.logstore import SqliteLogStorage
from sync.server import create_app
from tests.sync.conftest import run_server, utcnow
from tools.cli import main


@pytest.fixture
def fleet_logs(tmp_path: Path, log_backend: Any) -> Any:
    """The fleet app on loopback over each log storage back end (SQLite, PostgreSQL)."""
    root = tmp_path / "fleet"
    storage = log_backend(root)
    tokens = {
        "cab-1": storage.add_token("vehicle", "cab-1", 0.0),
        "cab-2": storage.add_token("vehicle", "cab-2", 0.0),
        "ana": storage.add_token("engineer", "ana", 0.0),
    }
    app = create_app(root, storage=storage)
    with run_server(app) as url:
        yield url, tokens, storage, root


def _upload_all(url: str, token: str, vehicle: str, outbox: Outbox) -> None:
    client = LogClient(url, token)
    try:
        LogUploader(outbox, client, vehicle, sleep=lambda s: None).flush()
    finally:
        client.close()


def _post(url: str, token: str, doc: dict[str, Any]) -> httpx.Response:
    body = msgpack.packb(doc, use_bin_type=True)
    return httpx.post(f"{url}/v1/logs", content=body, headers={"Authorization": f"Bearer {token}"})


def _doc(vehicle: str, records: list[dict[str, Any]], dropped: int = 0) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "vehicle_id": vehicle,
        "dropped_total": dropped,
        "records": records,
    }


# ---------------------------------------------------------------------------------- item 3
def test_a_recreated_outbox_loses_no_record(fleet_logs: Any, tmp_path: Path) -> None:
    """A wiped data directory (new SD card): the new outbox numbers from 1 again, and the
    server must store its records, not acknowledge them as duplicates of the old ones."""
    url, tokens, storage, _ = fleet_logs
    for card in ("sd-1", "sd-2"):
        with Outbox(tmp_path / card / "outbox.sqlite") as ob:
            ob.append_many(({"card": card, "i": i}, 1000.0 + i) for i in range(50))
            _upload_all(url, tokens["cab-1"], "cab-1", ob)
            assert ob.stats()["records"] == 0
    got = fetch_logs(url, tokens["ana"], "cab-1", since_s=0.0)
    payloads = sorted((r.payload()["card"], r.payload()["i"]) for r in got)
    assert payloads == sorted((c, i) for c in ("sd-1", "sd-2") for i in range(50))
    assert storage.count("cab-1") == 100


def test_a_cab_whose_numbering_restarts_keeps_its_records(fleet_logs: Any) -> None:
    """A client that sends no outbox epoch (an older cab) and whose seq goes backwards with
    different content: the server keeps the new records (a re-sent identical record stays a
    duplicate)."""
    url, tokens, storage, _ = fleet_logs
    first = [{"seq": s, "t_s": float(s), "data": b"old-%d" % s} for s in (1, 2, 3)]
    assert _post(url, tokens["cab-1"], _doc("cab-1", first)).status_code == 200
    again = _post(url, tokens["cab-1"], _doc("cab-1", first))
    assert msgpack.unpackb(again.content)["acked"] == [1, 2, 3]
    assert storage.count("cab-1") == 3
    restarted = [{"seq": s, "t_s": 100.0 + s, "data": b"new-%d" % s} for s in (1, 2)]
    r = _post(url, tokens["cab-1"], _doc("cab-1", restarted))
    assert r.status_code == 200 and msgpack.unpackb(r.content)["acked"] == [1, 2]
    datas = sorted(x.data for x in fetch_logs(url, tokens["ana"], "cab-1", since_s=0.0))
    assert datas == sorted([b"old-1", b"old-2", b"old-3", b"new-1", b"new-2"])


OLD_SERVER_SCHEMA = """
CREATE TABLE _migrations (name TEXT PRIMARY KEY);
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
INSERT INTO _migrations VALUES ('0001_logs_tokens');
"""

OLD_OUTBOX_SCHEMA = """
CREATE TABLE _migrations (name TEXT PRIMARY KEY);
CREATE TABLE records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    t_s REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters VALUES ('n_records', 0), ('n_bytes', 0), ('dropped_total', 0);
INSERT INTO _migrations VALUES ('0001_records');
"""


def test_databases_from_before_the_epoch_migrate_cleanly(tmp_path: Path) -> None:
    """A fleet.sqlite and a cab outbox written by the previous release: the server keeps its
    records and tokens; the old outbox's pending records keep their identity (a record the
    server already stored is a duplicate, not a second copy) and its numbering continues."""
    root = tmp_path / "fleet"
    root.mkdir()
    db = sqlite3.connect(root / "fleet.sqlite")
    db.executescript(OLD_SERVER_SCHEMA)
    db.executemany(
        "INSERT INTO logs VALUES ('cab-1', ?, ?, 5.0, ?)",
        [(s, float(s), msgpack.packb({"i": s})) for s in (1, 2, 3)],
    )
    db.execute("INSERT INTO dropped VALUES ('cab-1', 4)")
    db.commit()
    db.close()
    ob_path = tmp_path / "cab" / "outbox.sqlite"
    ob_path.parent.mkdir()
    ob_db = sqlite3.connect(ob_path)
    ob_db.executescript(OLD_OUTBOX_SCHEMA)
    # records 1..3 were uploaded (but 3's ack was lost), 4 never was
    ob_db.executemany(
        "INSERT INTO records (seq, t_s, data) VALUES (?, ?, ?)",
        [(s, float(s), msgpack.packb({"i": s})) for s in (1, 2, 3, 4)],
    )
    ob_db.execute("DELETE FROM records WHERE seq < 3")
    ob_db.execute("UPDATE counters SET value = 2 WHERE name = 'n_records'")
    ob_db.commit()
    ob_db.close()

    storage = SqliteLogStorage(root / "fleet.sqlite")
    tokens = {
        "cab-1": storage.add_token("vehicle", "cab-1", 0.0),
        "ana": storage.add_token("engineer", "ana", 0.0),
    }
    assert storage.count("cab-1") == 3 and storage.dropped_total("cab-1") == 4
    with run_server(create_app(root, storage=storage)) as url, Outbox(ob_path) as ob:
        assert ob.append({"i": 5}, 5.0) == 5
        _upload_all(url, tokens["cab-1"], "cab-1", ob)
        got = fetch_logs(url, tokens["ana"], "cab-1", since_s=0.0)
    assert [r.payload()["i"] for r in got] == [1, 2, 3, 4, 5]
    assert storage.count("cab-1") == 5
    storage.close()
    from sync.logstore import MIGRATIONS as LOG_MIGRATIONS

    (version,) = sqlite3.connect(root / "fleet.sqlite").execute("PRAGMA user_version").fetchone()
    assert version == len(LOG_MIGRATIONS) >= 2  # taken over from the old runner, then migrated


# ---------------------------------------------------------------------------------- item 5
@pytest.mark.parametrize(
    ("record", "dropped"),
    [
        ({"seq": 2**63, "t_s": 1.0, "data": b"x"}, 0),
        ({"seq": 1, "t_s": 1.0, "data": b"x"}, 2**63),
        ({"seq": 1, "t_s": math.nan, "data": b"x"}, 0),
        ({"seq": 1, "t_s": math.inf, "data": b"x"}, 0),
        ({"seq": 1, "t_s": -math.inf, "data": b"x"}, 0),
        ({"seq": 2**64 - 1, "t_s": 1.0, "data": b"x"}, 0),
        ({"seq": -5, "t_s": 1.0, "data": b"x"}, 0),
        ({"seq": True, "t_s": 1.0, "data": b"x"}, 0),
        ({"seq": 1, "t_s": 1.0, "data": "text"}, 0),
    ],
)
def test_a_bad_field_is_refused_and_breaks_no_other_cab(
    fleet_logs: Any, record: dict[str, Any], dropped: int
) -> None:
    """400 with the reason, nothing stored, nothing acknowledged; the next upload of any
    vehicle still works (the transaction was never left open)."""
    url, tokens, storage, _ = fleet_logs
    good = {"seq": 7, "t_s": 2.0, "data": b"good"}
    r = _post(url, tokens["cab-1"], _doc("cab-1", [good, record], dropped))
    assert r.status_code == 400, r.text
    assert "error" in r.json() and r.json()["error"]
    assert storage.count("cab-1") == 0 and storage.dropped_total("cab-1") == 0
    other = _post(url, tokens["cab-2"], _doc("cab-2", [good]))
    assert other.status_code == 200 and msgpack.unpackb(other.content)["acked"] == [7]
    assert storage.count("cab-2") == 1


def test_a_failing_insert_is_rolled_back(tmp_path: Path, log_backend: Any) -> None:
    """Whatever the storage raises inside the transaction, the next batch goes in."""
    storage = log_backend(tmp_path)
    bad: list[tuple[list[tuple[int, float, bytes]], int]] = [
        ([(2**63, 1.0, b"x")], 0),
        ([(1, 1.0, b"x")], 2**64),
    ]
    for n, (records, dropped) in enumerate(bad, start=1):
        with pytest.raises(Exception):  # noqa: B017 (any error; the point is what follows)
            storage.insert_batch("cab-1", records, dropped, 5.0)
        storage.insert_batch("cab-2", [(n, 1.0, b"y")], 0, 5.0)  # the very next batch
        assert storage.count("cab-2") == n
    assert storage.count("cab-1") == 0 and storage.dropped_total("cab-1") == 0
    storage.close()


@pytest.mark.parametrize(
    "query",
    [
        {"after_seq": str(10**30)},
        {"after_id": str(10**30)},
        {"after_id": "-1"},
        {"since_s": "nan"},
        {"since_s": "inf"},
        {"limit": str(10**30)},
        {"limit": "0"},
    ],
)
def test_bad_read_parameters_are_refused(fleet_logs: Any, query: dict[str, str]) -> None:
    url, tokens, _, _ = fleet_logs
    r = httpx.get(
        f"{url}/v1/vehicles/cab-1/logs",
        params=query,
        headers={"Authorization": f"Bearer {tokens['ana']}"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]


# ---------------------------------------------------------------------------------- item 6
def test_an_outbox_that_stays_full_warns_once_a_minute_with_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="sync.outbox"),
        Outbox(tmp_path / "o.sqlite", OutboxConfig(max_records=5)) as ob,
    ):
        for i in range(105):
            ob.append({"i": i}, float(i))
        assert ob.dropped_total == 100
    warnings = [r.getMessage() for r in caplog.records if r.name == "sync.outbox"]
    assert len(warnings) == 1, warnings
    assert "dropped" in warnings[0] and "oldest" in warnings[0]


def _tick(i: int) -> dict[str, Any]:
    verdict = Verdict(
        ok=False, route=(), reasons=(), message="no fix", locale="en", continuation=(),
        time_s=1000.0 + i, minute_of_week=0.0,
    )  # fmt: skip
    return {"kind": "tick", "seq": i, "time_s": 1000.0 + i, "safety": verdict.to_record()}


def test_drops_are_reported_by_logs_pull_and_report_slo_and_fleet_status(
    fleet_logs: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, tokens, storage, root = fleet_logs
    with Outbox(tmp_path / "cab" / "o.sqlite", OutboxConfig(max_records=20)) as ob:
        ob.append_many((_tick(i), 1000.0 + i) for i in range(32))
        _upload_all(url, tokens["cab-1"], "cab-1", ob)
    assert storage.dropped_total("cab-1") == 12
    eng = tmp_path / "ana.token"
    eng.write_text(tokens["ana"])
    out = tmp_path / "pulled.msgpack"
    args = ["logs", "pull", "--server", url, "--vehicle", "cab-1", "--since", "0"]
    capsys.readouterr()
    assert main([*args, "--token-file", str(eng), "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["records"] == 20 and doc["dropped_total"] == 12
    assert main([*args, "--token-file", str(eng), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "12 record(s) dropped" in text

    # report slo on the pulled file says what is missing from it
    assert main(["report", "slo", "--logs", str(out), "--json"]) == 0
    slo_doc = json.loads(capsys.readouterr().out)
    assert slo_doc["ticks"] == 20 and slo_doc["outbox_dropped"] == {"cab-1": 12}
    assert main(["report", "slo", "--logs", str(out)]) == 0
    assert "12 record(s) dropped" in capsys.readouterr().out

    # fleet status: per vehicle, the records stored and those its outbox dropped
    FleetRepository(root).init(utcnow())
    database = getattr(storage, "database", None)
    db_args = ["--database", database] if database else []
    assert main(["fleet", "status", "--root", str(root), *db_args]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["logs"]["cab-1"]["records"] == 20
    assert status["logs"]["cab-1"]["dropped_total"] == 12
    assert status["logs"]["cab-2"] == {"records": 0, "dropped_total": 0, "last_received_s": None}
