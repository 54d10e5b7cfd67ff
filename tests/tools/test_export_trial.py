"""Exports (GeoJSON, offline HTML) and the trial report, on the logs of the recorded drive."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from shapely.geometry import shape

from tests.agent.test_page import dom, screenshot, share
from tests.components import require
from tiles.geo import haversine_m
from tools.cli import main
from tools.field.export import export_geojson, export_html
from tools.field.trial import report_trial


def test_geojson_has_drive_recommendations_and_fallbacks(
    drive_run: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "drive.geojson"
    counts = export_geojson([drive_run["data"] / "trips"], out)
    doc = json.loads(out.read_text())
    assert doc["type"] == "FeatureCollection"
    kinds = Counter(f["properties"]["kind"] for f in doc["features"])
    assert kinds == Counter(counts)
    s = drive_run["summary"]
    assert kinds["drive"] == 1
    assert kinds["guidance"] == s.by_kind["route"] and kinds["fallback"] == s.by_kind["fallback"]
    assert 1 <= kinds["recommendation"] <= kinds["guidance"]
    assert kinds["meter"] == 2
    for f in doc["features"]:
        g = shape(f["geometry"])
        assert g.is_valid and not g.is_empty
        x, y = g.centroid.x, g.centroid.y
        assert -74.02 < x < -73.96 and 40.73 < y < 40.76  # lon, lat order (RFC 7946)
        json.dumps(f["properties"])  # flat, serialisable attributes for QGIS / kepler.gl
    fb = next(f for f in doc["features"] if f["properties"]["kind"] == "fallback")
    assert fb["properties"]["reason_codes"] and fb["properties"]["message"]


def test_html_opens_offline(drive_run: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "drive.html"
    export_html([drive_run["data"] / "trips"], out, "Midtown <test>")
    html = out.read_text()
    assert "Midtown &lt;test&gt;" in html
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html)
    assert "fetch(" not in html and "@import" not in html
    require("chromium")  # a developer's machine may skip; CI=true fails without it
    img = screenshot(out.as_uri(), tmp_path / "export.png", tmp_path / "profile")
    mapped = img[:, :900]
    assert share(mapped, (0x1E, 0x88, 0xE5), tol=40) > 0.002  # routes and guidance ticks
    assert share(mapped, (0xFF, 0xB3, 0x00), tol=20) > 0.0002  # fallback ticks


def test_html_draws_the_roads_their_names_and_a_scale(
    drive_run: dict[str, Any], manhattan_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "drive.html"
    assert main(["export", "html", "--log", str(drive_run["data"]), "--out", str(out),
                 "--tiles", str(manhattan_bundle)]) == 0  # fmt: skip
    html = out.read_text()
    found = re.search(r'<script id="roads"[^>]*>(.*?)</script>', html, re.S)
    assert found is not None
    roads = json.loads(found[1])
    names = {f["properties"]["name"] for f in roads["features"]}
    assert len(roads["features"]) > 500 and {"7th Avenue", "Broadway"} <= names
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html)  # still offline
    require("chromium")
    page = dom(out.as_uri(), tmp_path / "profile")
    streets = re.findall(r'<text class="street"[^>]*>([^<]+)</text>', page)
    assert len(streets) > 20 and "Broadway" in streets
    assert re.search(r'id="scale".*?<span>\d+ k?m</span>', page, re.S)
    img = screenshot(out.as_uri(), tmp_path / "roads.png", tmp_path / "profile2")
    assert share(img[:, :900], (0xC9, 0xCE, 0xD6), tol=12) > 0.01  # the network under the drive


def test_trial_report_per_shift(drive_run: dict[str, Any], tmp_path: Path) -> None:
    doc = report_trial([drive_run["data"] / "trips"], tmp_path / "plots")
    (s,) = doc["shifts"]
    summary = drive_run["summary"]
    assert s["run_id"] == summary.run_id and s["ticks"] == summary.ticks
    assert s["guidance_share"] == pytest.approx(summary.by_kind["route"] / summary.ticks, abs=1e-4)
    assert (
        sum(s["fallbacks_by_reason"].values()) >= s["fallback_ticks"] == summary.by_kind["fallback"]
    )
    # distance: the moving steps of the 1 Hz track (the drive is ~6-7 km of Midtown streets)
    assert 5.0 < s["distance_km"] < 8.0
    # occupied share: the meter was on between two logged events
    recs = drive_run["records"]
    on, off = [r["time_s"] for r in recs if r["kind"] == "meter"]
    track = np.array([p[:3] for r in recs for p in r.get("track", [])])
    speeds = np.array([p[3] for r in recs for p in r.get("track", [])], dtype=float)
    step = haversine_m(track[:-1, 1], track[:-1, 2], track[1:, 1], track[1:, 2])
    step = np.where(speeds[1:] >= 0.5, step, 0.0)
    inside = (track[1:, 0] >= on) & (track[1:, 0] < off)
    assert s["occupied_share"] == pytest.approx(step[inside].sum() / step.sum(), abs=1e-3)
    assert 0.1 < s["occupied_share"] < 0.9
    assert Path(s["plot"]).is_file() and Path(s["plot"]).stat().st_size > 10_000


def test_cli_export_and_report(
    drive_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = str(drive_run["data"] / "trips")
    out = tmp_path / "x.geojson"
    assert main(["export", "geojson", "--log", logs, "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["features"]["drive"] == 1
    assert main(["report", "trial", "--logs", logs, "--no-plots", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["shifts"]) == 1
    assert main(["report", "trial", "--logs", str(tmp_path / "none")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content",
    [b"garbage\n", b"", b"\x93\x01\x02\x03"],  # text, empty, msgpack that is not a trip log
    ids=["text", "empty", "msgpack-array"],
)
def test_a_file_that_is_not_a_trip_log_is_one_clear_error(
    content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "notes.msgpack"
    bad.write_bytes(content)
    out = tmp_path / "drive.html"
    for argv in (
        ["export", "html", "--log", str(bad), "--out", str(out)],
        ["export", "geojson", "--log", str(bad), "--out", str(out)],
        ["report", "trial", "--logs", str(bad), "--no-plots"],
        ["report", "slo", "--logs", str(bad)],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "trip log" in err, err
    assert not out.exists()  # nothing written for a wrong input


def test_commands_accept_the_agent_data_folder(
    drive_run: dict[str, Any],
    manhattan_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``nagashi demo`` and ``agent run --data-dir D`` log to ``D/trips/``; ``D`` itself works."""
    data = str(drive_run["data"])
    out = tmp_path / "x.geojson"
    assert main(["export", "geojson", "--log", data, "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["features"]["drive"] == 1
    assert main(["report", "trial", "--logs", data, "--no-plots", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["shifts"]) == 1
    assert main(["report", "slo", "--logs", data, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ticks"] == drive_run["summary"].ticks
    seq = next(r["seq"] for r in drive_run["records"] if r["kind"] == "tick")
    argv = ["replay", "--log", data, "--bundle-dir", str(manhattan_bundle), "--tick", str(seq)]
    assert main(argv) == 0
    assert "byte-identical" in capsys.readouterr().out


def test_trial_plot_counts_in_whole_numbers() -> None:
    """A shift with 1-3 fallback ticks per reason: the count axis has no 0.5 or 2.5 ticks."""
    import matplotlib.pyplot as plt

    from tools.field.shifts import Shift
    from tools.field.trial import draw_shift, summarize

    def tick(i: int, reasons: list[str]) -> dict[str, Any]:
        kind = "fallback" if reasons else "route"
        return {
            "kind": "tick",
            "seq": i,
            "time_s": 1000.0 + i,
            "fix": {"lon": -73.98 + i * 1e-4, "lat": 40.75},
            "instruction": {"kind": kind, "reason_codes": reasons},
            "safety": {"ok": not reasons, "reasons": reasons},
        }

    reasons = [["GPS_STALE"], ["GPS_STALE"], ["GPS_STALE"], ["MATCH_AMBIGUOUS"], [], []]
    s = Shift(run_id="r" * 16, ticks=[tick(i, r) for i, r in enumerate(reasons)])
    s.track = [(1000.0 + i, -73.98 + i * 1e-4, 40.75, 5.0) for i in range(6)]
    fig = draw_shift(s, summarize(s))
    try:
        ticks = fig.axes[1].get_xticks()
        assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
        assert fig.axes[1].get_xlabel() == "ticks (count)"
    finally:
        plt.close(fig)
