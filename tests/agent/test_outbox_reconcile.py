"""Issue 13, item 4: a record that reached the trip log but not the outbox is sent after all.

The trip log is fsynced before the record is handed to the outbox; a crash between the two, or
an outbox error, used to leave the record unsent for ever."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx

from agent.outbox_feed import OutboxFeed
from agent.triplog import TripLog, TripLogConfig, read_records, unpack
from sync import Outbox, SyncStorageError
from sync.logstore import SqliteLogStorage
from tests.agent.test_fleet import fleet  # noqa: F401 (the fixture)
from tests.conftest import DRIVE_CSV

REPO = Path(__file__).resolve().parent.parent.parent


def _run_agent(
    bundle: Path, data: Path, url: str, token_file: Path, ticks: int
) -> subprocess.CompletedProcess[str]:
    """``agent run`` with sync until ``ticks`` ticks are logged, then SIGTERM."""
    cmd = [
        sys.executable, "-m", "tools.cli", "agent", "run",
        "--bundle-dir", str(bundle), "--gps", str(DRIVE_CSV), "--speed", "20",
        "--api", "127.0.0.1:0", "--data-dir", str(data), "--vehicle", "cab-7", "--quiet",
        "--sync-server", url, "--token-file", str(token_file),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    killer = threading.Timer(120, proc.kill)
    killer.start()
    try:
        api = None
        assert proc.stderr is not None
        for line in proc.stderr:
            m = re.search(r"tablet page: (http://127\.0\.0\.1:\d+)/", line)
            if m:
                api = m.group(1)
                break
        assert api is not None, "the agent did not start its API"
        while httpx.get(api + "/v1/status", timeout=5).json()["ticks"] < ticks:
            assert proc.poll() is None
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_a_record_logged_but_never_enqueued_is_uploaded_after_a_restart(
    fleet: dict[str, object],  # noqa: F811
    manhattan_bundle: Path,
    tmp_path: Path,
) -> None:
    tokens = fleet["tokens"]
    storage = fleet["storage"]
    assert isinstance(tokens, dict) and isinstance(storage, SqliteLogStorage)
    token_file = tmp_path / "vehicle.token"
    token_file.write_text(tokens["vehicle"])
    data = tmp_path / "cab"
    _run_agent(manhattan_bundle, data, str(fleet["url"]), token_file, ticks=2)
    first = list(read_records(data / "trips"))
    assert storage.count("cab-7") == len(first)
    # the crash between the two writes: in the trip log (fsynced), never in the outbox
    tl = TripLog(TripLogConfig(data / "trips"))
    for i in range(2):
        tl.append({"kind": "meter", "time_s": first[-1]["time_s"] + i, "run_id": "x",
                   "occupied": bool(i), "lon": None, "lat": None})  # fmt: skip
    tl.close()
    _run_agent(manhattan_bundle, data, str(fleet["url"]), token_file, ticks=2)
    local = list(read_records(data / "trips"))
    assert len(local) > len(first) + 2
    stored = [unpack(r.data)["seq"] for r in storage.read("cab-7", -1e18, 0, 10_000)]
    dupes = {s: n for s, n in Counter(stored).items() if n > 1}
    assert not dupes, f"stored twice: {dupes}"
    assert sorted(stored) == [r["seq"] for r in local]  # every record, once


class FailingOnce:
    """An outbox whose next append fails (a full disk, a locked database), then recovers."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.fail_next = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.outbox, name)

    def append_many(
        self, items: Iterable[tuple[Any, float]], *, sources: Sequence[int] | None = None
    ) -> list[int]:
        if self.fail_next:
            self.fail_next = False
            raise SyncStorageError("outbox: database or disk is full")
        return self.outbox.append_many(items, sources=sources)


def test_an_outbox_error_is_made_good_by_the_next_record(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite") as ob:
        flaky = FailingOnce(ob)
        feed = OutboxFeed(flaky, tmp_path / "trips")  # type: ignore[arg-type]  # a fake Outbox
        tl = TripLog(TripLogConfig(tmp_path / "trips", max_file_bytes=300), sink=feed)
        assert feed.start(tl.next_seq) == 0
        for i in range(12):
            flaky.fail_next = i in (3, 7, 11)
            tl.append({"kind": "meter", "time_s": 100.0 + i, "occupied": True})
        assert tl.sink_errors == 3
        # the last one failed with no record after it: the next start-up makes it good
        tl.close()
        tl = TripLog(TripLogConfig(tmp_path / "trips", max_file_bytes=300), sink=feed)
        assert feed.start(tl.next_seq) == 1
        seqs = [r.payload()["seq"] for r in ob.pending(max_records=100)]
        assert seqs == list(range(12))
        assert feed.start(tl.next_seq) == 0  # nothing twice
        tl.close()
