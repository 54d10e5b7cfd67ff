"""Issue 19, the PostgreSQL back end: several server processes on one database, a database
restart in the middle of uploads, migrations under concurrency, tokens hashed at rest.

Real components: a throwaway PostgreSQL cluster on a loopback port (tests/pgcluster.py), real
``nagashi fleet serve`` processes and in-process uvicorn servers, real outboxes and uploaders.
(The storage tests shared with SQLite are parametrised in test_logs.py, test_log_integrity.py
and test_flaky_network.py through the ``log_backend`` fixture.)"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import msgpack
import psycopg
import pytest

from sync import (
    FleetRepository,
    LogClient,
    LogUploader,
    Outbox,
    OutboxConfig,
    RetryConfig,
    fetch_logs,
)
from sync.errors import SyncStorageError
from sync.logstore_pg import PG_MIGRATIONS, PostgresLogStorage
from sync.server import create_app
from tests.sync.conftest import fleet_serve, run_server, utcnow
from tools.cli import main


def _batch(vehicle: str, epoch: str, seqs: range) -> bytes:
    doc = {
        "schema_version": 1,
        "vehicle_id": vehicle,
        "epoch": epoch,
        "dropped_total": 0,
        "records": [{"seq": s, "t_s": 1000.0 + s, "data": b"%s-%d" % (vehicle.encode(), s)}
                    for s in seqs],
    }  # fmt: skip
    packed: bytes = msgpack.packb(doc, use_bin_type=True)
    return packed


def test_two_server_processes_give_the_same_answers_as_one(
    tmp_path: Path, pg_cluster: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every batch is sent to both processes at once (a cab retrying through another
    process): each record is stored once, both acknowledge all of it, and both serve the
    same pages."""
    root = tmp_path / "fleet"
    FleetRepository(root).init(utcnow())
    database = pg_cluster.database()
    cabs = [f"cab-{i}" for i in range(6)]
    tokens = {}
    for who in [*cabs, "ana"]:
        kind = "--engineer" if who == "ana" else "--vehicle"
        assert main(["fleet", "token", "add", "--root", str(root), "--database", database,
                     kind, who]) == 0  # fmt: skip
        tokens[who] = capsys.readouterr().out.strip()
    with (
        fleet_serve(root, "--database", database) as (a, _),
        fleet_serve(root, "--database", database) as (b, _),
    ):
        jobs = []
        for cab in cabs:
            for first in range(1, 301, 30):
                body = _batch(cab, "e" * 8, range(first, first + 30))
                jobs += [(url, cab, body) for url in (a, b)]

        def post(job: tuple[str, str, bytes]) -> dict[str, Any]:
            url, cab, body = job
            headers = {"Authorization": f"Bearer {tokens[cab]}"}
            r = httpx.post(f"{url}/v1/logs", content=body, headers=headers, timeout=30)
            assert r.status_code == 200, r.text
            doc: dict[str, Any] = msgpack.unpackb(r.content)
            return doc

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(post, jobs))
        for job, ans in zip(jobs, answers, strict=True):
            want = list(msgpack.unpackb(job[2])["records"])
            assert ans["acked"] == [r["seq"] for r in want]
        assert sum(x["inserted"] for x in answers) == len(cabs) * 300
        assert sum(x["duplicates"] for x in answers) == len(cabs) * 300
        for cab in cabs:
            auth = {"Authorization": f"Bearer {tokens['ana']}"}
            raw = [
                httpx.get(f"{url}/v1/vehicles/{cab}/logs", headers=auth, timeout=30).content
                for url in (a, b)
            ]
            assert raw[0] == raw[1]  # the same answer, byte for byte (ids, received_s, data)
            got = fetch_logs(a, tokens["ana"], cab, since_s=0.0)
            assert sorted(r.seq for r in got) == list(range(1, 301))  # each once (any order)
    assert main(["fleet", "status", "--root", str(root), "--database", database]) == 0
    assert '"records": 300' in capsys.readouterr().out


def test_a_database_restart_during_uploads_loses_and_duplicates_nothing(
    tmp_path: Path, pg_cluster: Any
) -> None:
    """The database goes away (stopped while a cab uploads, then restarted while it
    uploads): the server answers 503, the cab keeps its records and retries; in the end every
    record is stored exactly once."""
    storage = PostgresLogStorage(pg_cluster.database(), timeout_s=2.0)
    token = storage.add_token("vehicle", "cab-9", 0.0)
    eng = storage.add_token("engineer", "ana", 0.0)
    outbox = Outbox(tmp_path / "outbox.sqlite", OutboxConfig(batch_max_records=20))
    outbox.append_many(({"i": i}, 1000.0 + i) for i in range(100))
    try:
        with run_server(create_app(tmp_path / "fleet", storage=storage)) as url:
            client = LogClient(url, token)
            retry = RetryConfig(base_delay_s=0.05, max_delay_s=0.5, max_attempts=200)
            assert LogUploader(outbox, client, "cab-9", retry).flush().remaining == 0

            # 1. stopped: the next upload fails; the database comes back during the backoff
            outbox.append_many(({"i": i}, 1000.0 + i) for i in range(100, 200))
            pg_cluster.stop("fast")
            started: list[bool] = []

            def sleep_then_start(delay: float) -> None:
                if not started:
                    started.append(True)
                    pg_cluster.start()

            first = LogUploader(outbox, client, "cab-9", retry, sleep=sleep_then_start).flush()
            assert started and first.failures >= 1 and first.remaining == 0

            # 2. restarted (connections cut, transactions rolled back) in the middle of uploads
            outbox.append_many(({"i": i}, 1000.0 + i) for i in range(200, 2200))
            results: list[Any] = []
            uploader = threading.Thread(
                target=lambda: results.append(LogUploader(outbox, client, "cab-9", retry).flush())
            )
            uploader.start()
            for _ in range(10_000):  # until the upload is under way (bounded)
                if storage.count("cab-9") > 400 or not uploader.is_alive():
                    break
                uploader.join(0.01)
            pg_cluster.restart()
            uploader.join(120)
            assert not uploader.is_alive() and results and results[0].remaining == 0
            client.close()
            got = fetch_logs(url, eng, "cab-9", since_s=0.0)
        assert outbox.stats()["records"] == 0
        assert [r.payload()["i"] for r in got] == list(range(2200))  # none lost, none twice
        assert storage.count("cab-9") == 2200
    finally:
        outbox.close()
        storage.close()


def test_migrations_apply_once_under_concurrency_and_refuse_a_newer_schema(
    pg_cluster: Any,
) -> None:
    url = pg_cluster.database()
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: PostgresLogStorage(url), range(4)))
    token = stores[0].add_token("vehicle", "cab-1", 0.0)
    for s in stores:
        assert s.authenticate(token) is not None
        s.close()
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version, name FROM nagashi_schema ORDER BY 1").fetchall()
        assert rows == [(i + 1, name) for i, (name, _) in enumerate(PG_MIGRATIONS)]
        (stored,) = conn.execute("SELECT token_sha256 FROM tokens").fetchone() or ("",)
        assert stored != token and len(stored) == 64  # only the hash is kept
        conn.execute("INSERT INTO nagashi_schema (version, name) VALUES (99, '0099_future')")
    with pytest.raises(SyncStorageError, match="newer code migrated it"):
        PostgresLogStorage(url)


def test_an_unreachable_database_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "fleet"
    FleetRepository(root).init(utcnow())
    url = "postgresql://ops:s3cret@127.0.0.1:1/fleet"
    assert main(["fleet", "serve", "--root", str(root), "--database", url, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unusable" in err and "s3cret" not in err
    assert main(["fleet", "token", "add", "--root", str(root), "--database", url,
                 "--vehicle", "cab-1"]) == 2  # fmt: skip
    assert main(["fleet", "serve", "--root", str(root), "--database", "mysql://x/y"]) == 2
    assert "unsupported database mysql://" in capsys.readouterr().err
