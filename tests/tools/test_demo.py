"""The README's run command: ``nagashi demo`` builds the bundle once and replays a drive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.gps import read_csv_trace, write_csv_trace
from tests.conftest import DRIVE_CSV
from tools.cli import main


def test_demo_builds_once_and_replays(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = write_csv_trace(read_csv_trace(DRIVE_CSV)[:120], tmp_path / "short.csv")
    args = ["demo", "--work-dir", str(tmp_path / "w"), "--shared-data", str(shared_data)]
    args += ["--gps", str(short), "--speed", "0", "--no-api", "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert f"logs in {tmp_path / 'w' / 'agent' / 'trips'}" in captured.err  # where they are
    assert list((tmp_path / "w" / "agent" / "trips").glob("trip-*.msgpack"))
    lines = out.strip().splitlines()
    summary = json.loads("\n".join(lines[lines.index("{") :]))
    assert summary["fixes"] == 120 and summary["ticks"] >= 120 // 5
    assert any(" GUIDE " in ln for ln in lines)  # instructions shown in the terminal
    bundles = list((tmp_path / "w" / "bundles").iterdir())
    assert len(bundles) == 1 and (bundles[0] / "manifest.yaml").is_file()
    mtime = (bundles[0] / "manifest.yaml").stat().st_mtime_ns
    assert main([*args, "--quiet"]) == 0  # second run: the bundle is reused, not rebuilt
    assert (bundles[0] / "manifest.yaml").stat().st_mtime_ns == mtime
    assert main(["demo", "--shared-data", str(tmp_path / "nowhere")]) == 2


def test_the_demo_drive_is_called_what_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    """The drive is generated (tests/data/make_midtown_drive.py), never called recorded."""
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "generated, not recorded" in " ".join(capsys.readouterr().out.split())
    repo = Path(__file__).resolve().parents[2]
    for doc in [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]:
        text = " ".join(doc.read_text().split())
        assert "recorded Midtown drive" not in text and "recorded 25-minute" not in text, doc
        assert "recorded drive" not in text and "recorded demo drive" not in text, doc
