"""The agent against a real fleet server on loopback: uploads, SIGTERM flush, logs pull."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from agent.triplog import read_records
from sync import Outbox
from sync.logstore import SqliteLogStorage
from sync.server import create_app
from tests.conftest import DRIVE_CSV
from tools.cli import main
from tools.field.replay import replay_log

REPO = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[dict[str, object]]:
    root = tmp_path / "fleet"
    root.mkdir()
    storage = SqliteLogStorage(root / "fleet.sqlite")
    tokens = {
        "vehicle": storage.add_token("vehicle", "cab-7", time.time()),
        "engineer": storage.add_token("engineer", "alice", time.time()),
    }
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(root, storage=storage),
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(1000):
        if server.started:
            break
        thread.join(0.01)
    assert server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield {"url": f"http://127.0.0.1:{port}", "storage": storage, "tokens": tokens}
    finally:
        server.should_exit = True
        thread.join(10)
        storage.close()


def test_sigterm_flushes_the_outbox_and_engineers_pull_and_replay(
    fleet: dict[str, object], manhattan_bundle: Path, tmp_path: Path
) -> None:
    tokens = fleet["tokens"]
    assert isinstance(tokens, dict)
    token_file = tmp_path / "vehicle.token"
    token_file.write_text(tokens["vehicle"])
    data = tmp_path / "cab"
    cmd = [
        sys.executable, "-m", "tools.cli", "agent", "run",
        "--bundle-dir", str(manhattan_bundle), "--gps", str(DRIVE_CSV), "--speed", "20",
        "--api", "127.0.0.1:0", "--data-dir", str(data), "--vehicle", "cab-7", "--quiet",
        "--sync-server", str(fleet["url"]), "--token-file", str(token_file),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    killer = threading.Timer(120, proc.kill)
    killer.start()
    try:
        url = None
        assert proc.stderr is not None
        for line in proc.stderr:
            m = re.search(r"tablet page: (http://127\.0\.0\.1:\d+)/", line)
            if m:
                url = m.group(1)
                break
        assert url is not None, "the agent did not start its API"
        while True:  # until a few ticks are logged (the drive takes 75 s at 20x)
            status = httpx.get(url + "/v1/status", timeout=5).json()
            if status["ticks"] >= 4:
                break
            assert proc.poll() is None
            time.sleep(0.2)
        assert httpx.get(url + "/healthz", timeout=5).json()["status"] == "ok"
        meter = httpx.post(url + "/v1/meter", json={"occupied": True}, timeout=5)
        assert meter.status_code == 200  # from the API thread, into the log and the outbox
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, proc.stderr.read() if proc.stderr else ""
    local = list(read_records(data / "trips"))
    assert local[-1]["kind"] == "stop"  # ended by the signal, before the drive's end
    assert local[-1]["time_s"] < local[0]["time_s"] + 1400
    storage = fleet["storage"]
    assert isinstance(storage, SqliteLogStorage)
    assert storage.count("cab-7") == len(local)  # every record, exactly once
    with Outbox(data / "outbox.sqlite") as ob:
        assert ob.stats()["records"] == 0

    # the engineer pulls them and replays every decision bit for bit
    eng = tmp_path / "engineer.token"
    eng.write_text(tokens["engineer"])
    out = tmp_path / "pulled.msgpack"
    args = ["logs", "pull", "--server", str(fleet["url"]), "--vehicle", "cab-7"]
    assert main([*args, "--since", "2015-06-01T00:00:00Z", "--token-file", str(eng),
                 "--out", str(out)]) == 0  # fmt: skip
    *pulled, pull = list(read_records(out))
    assert pull["kind"] == "pull" and pull["dropped_total"] == 0  # what the pull could not bring
    assert [r["seq"] for r in pulled] == [r["seq"] for r in local]
    assert [r["occupied"] for r in pulled if r["kind"] == "meter"] == [True]
    results = list(replay_log(out, manhattan_bundle))
    assert results and all(r.identical for r in results)
    # a vehicle's token cannot read logs
    assert main([*args, "--since", "0", "--token-file", str(token_file),
                 "--out", str(tmp_path / "x.msgpack")]) == 2  # fmt: skip
