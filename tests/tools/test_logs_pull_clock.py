"""``nagashi logs pull --since``: says which clock it filters on, and lets the engineer choose.

A drive replayed from an old trace logs the trace's GPS time (1970 here, 2015 for the demo
drive): ``--since 6h`` on the GPS clock finds nothing, on the server's receive clock all of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.triplog import read_records
from sync import LogClient, LogUploader, Outbox
from sync.logstore import SqliteLogStorage
from sync.server import create_app
from tests.sync.conftest import run_server
from tools.cli import main


@pytest.fixture
def pulled_setup(tmp_path: Path) -> Iterator[tuple[list[str], Path]]:
    root = tmp_path / "fleet"
    storage = SqliteLogStorage(root / "fleet.sqlite")
    cab = storage.add_token("vehicle", "cab-1", 0.0)
    eng = tmp_path / "ana.token"
    eng.write_text(storage.add_token("engineer", "ana", 0.0))
    with run_server(create_app(root, storage=storage)) as url:
        with Outbox(tmp_path / "cab" / "o.sqlite") as ob:
            records: list[tuple[Any, float]] = [
                ({"kind": "tick", "seq": i, "time_s": 1000.0 + i}, 1000.0 + i) for i in range(5)
            ]
            ob.append_many(records)
            client = LogClient(url, cab)
            try:
                LogUploader(ob, client, "cab-1", sleep=lambda s: None).flush()
            finally:
                client.close()
        args = ["logs", "pull", "--server", url, "--vehicle", "cab-1", "--token-file", str(eng)]
        yield args, tmp_path
        storage.close()


def test_since_is_read_on_the_clock_chosen(
    pulled_setup: tuple[list[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args, tmp = pulled_setup
    out = tmp / "p.msgpack"
    assert main([*args, "--since", "6h", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "0 record(s) of cab-1 with logged (GPS) time >= " in captured.out
    assert "--clock received" in captured.err  # the way out, said
    assert main([*args, "--since", "6h", "--clock", "received", "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["records"] == 5 and doc["clock"] == "received"
    *pulled, pull = list(read_records(out))
    assert [r["seq"] for r in pulled] == list(range(5)) and pull["clock"] == "received"
    assert main([*args, "--since", "1002", "--out", str(out), "--json"]) == 0  # GPS clock
    assert json.loads(capsys.readouterr().out)["records"] == 3
    with pytest.raises(SystemExit) as e:  # argparse: one usage line, status 2
        main([*args, "--since", "6h", "--clock", "wall", "--out", str(out)])
    assert e.value.code == 2
