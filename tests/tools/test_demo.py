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


def _fake_bundle(work: Path, planner: dict[str, float], version: str) -> Path:
    import yaml

    b = work / "bundles" / "old"
    b.mkdir(parents=True)
    (b / "manifest.yaml").write_text("schema_version: 1\n")
    (b / "params.yaml").write_text(yaml.safe_dump({"version": version, "planner": planner}))
    return b


def test_a_demo_bundle_built_by_an_older_nagashi_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo reuses its bundle only while it is what this nagashi builds (the planner version,
    the read-out margin and the layer length it ships); otherwise it builds a new one."""
    from agent.planner import ROUTE_SPREAD_EPS, SHIPPED_STEP_S
    from sync.manifest import load_yaml
    from tools.field import demo

    version = load_yaml(demo.BASE_MANIFEST)["planner_parameters"]["version"]
    built: list[Path] = []

    def build(shared: Path, work: Path) -> Path:
        built.append(work)
        return work / "bundles" / "new"

    monkeypatch.setattr(demo, "build_manhattan_bundle", build)
    current = {"speed_factor": 0.37, "route_spread_eps": ROUTE_SPREAD_EPS, "step_s": SHIPPED_STEP_S}
    ok = _fake_bundle(tmp_path / "ok", current, version)
    assert demo.ensure_manhattan_bundle(tmp_path, tmp_path / "ok") == ok and built == []
    stale = [
        ({"speed_factor": 0.37}, version),  # before the spread and the 20 s layers
        ({**current, "step_s": 10.0}, version),
        (current, "planner-2026.11.1"),
    ]
    for i, (planner, v) in enumerate(stale):
        work = tmp_path / f"stale-{i}"
        old = _fake_bundle(work, planner, v)
        assert demo.ensure_manhattan_bundle(tmp_path, work) == work / "bundles" / "new"
        assert built[-1] == work and not old.exists()
    unreadable = tmp_path / "unreadable"
    _fake_bundle(unreadable, current, version)
    (unreadable / "bundles" / "old" / "params.yaml").write_text("[")
    demo.ensure_manhattan_bundle(tmp_path, unreadable)
    assert built[-1] == unreadable and len(built) == 4
