"""The Uber April 2014 pickups: read as they are (zip, M/D/YYYY times, duplicates), and the
demand table's sources (rates from every pickup, fares / trip times / drop-offs only from the
records that have them) and ``--days`` filter."""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models import DemandDataError, DemandTable
from models.demand import TABLE_JSON
from models.trips import Trips, parse_days, read_trips
from tests.conftest import TRIPS
from tiles.fileio import sha256_file
from tools.cli import main

WORLD = (-180.0, -90.0, 180.0, 90.0)
#: the Manhattan extract's box (data/README.md)
EXTRACT = (-74.014, 40.736, -73.963, 40.759)
#: Midtown points on or beside cruisable streets (Times Sq, Penn Station, Grand Central, 23rd St)
SPOTS = ((-73.9855, 40.7580), (-73.9935, 40.7506), (-73.9772, 40.7527), (-73.9925, 40.7424))
HEADER = '"Date/Time","Lat","Lon","Base"\n'


def _uber_line(t: dt.datetime, lon: float, lat: float, base: str = "B02512") -> str:
    stamp = f"{t.month}/{t.day}/{t.year} {t.hour}:{t.minute:02d}:{t.second:02d}"
    return f'"{stamp}",{lat:.4f},{lon:.4f},"{base}"\n'


def _week_of_pickups(every_min: int = 5, shift: int = 0) -> list[str]:
    """A pickup every few minutes for the week 2014-04-07 (Mon) .. 04-13 (Sun), Midtown."""
    start = dt.datetime(2014, 4, 7)
    lines = []
    for k in range(7 * 1440 // every_min):
        lon, lat = SPOTS[(k + shift) % len(SPOTS)]
        lines.append(_uber_line(start + dt.timedelta(minutes=every_min * k), lon, lat))
    return lines


def _zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in members.items():
            z.writestr(name, text)
    return path


def _crafted(tmp_path: Path, name: str = "uber.csv.zip", shift: int = 0) -> tuple[Path, int]:
    """A week of pickups + 30 exact duplicates + 3 rows on 04-25 + 1 at JFK, zipped with a
    ``__MACOSX/`` stub and a dot-file; returns the zip and its row count."""
    week = _week_of_pickups(shift=shift)
    late = [_uber_line(dt.datetime(2014, 4, 25, 9, m), *SPOTS[0]) for m in (0, 10, 20)]
    jfk = [_uber_line(dt.datetime(2014, 4, 8, 12, 0, 30), -73.7781, 40.6413)]
    body = week + week[100:130] + late + jfk
    _zip(
        tmp_path / name,
        {
            "uber-raw-data-apr14.csv": HEADER + "".join(body),
            "__MACOSX/._uber-raw-data-apr14.csv": "\x00\x05\x16\x07 resource fork",
            ".hidden.csv": "not,a,trip\n",
        },
    )
    return tmp_path / name, len(body)


# --- the real month ---------------------------------------------------------------------------


def test_the_real_month_reads_as_it_is(uber_april_trips: Trips) -> None:
    t = uber_april_trips
    assert t.formats == ("uber2014",)
    assert t.rows_read == (564_516,)
    assert t.duplicates == (7_749,)  # 1.37 % of the rows: exact repeats, read once
    assert t.n == t.citywide[0] == 564_516 - 7_749
    assert t.dropped[0] == {
        "unparsable_pickup_time": 0,
        "unparsable_coordinates": 0,
        "missing_coordinates": 0,
        "outside_area": 0,
    }
    inside = (
        (t.lon >= EXTRACT[0])
        & (t.lon <= EXTRACT[2])
        & (t.lat >= EXTRACT[1])
        & (t.lat <= EXTRACT[3])
    )
    assert int(inside.sum()) == 163_752  # 166,118 as filed, before removing duplicates
    days, per_day = np.unique(t.pickup_date_ord[inside], return_counts=True)
    assert [dt.date.fromordinal(int(d)) for d in days[[0, -1]]] == [
        dt.date(2014, 4, 1),
        dt.date(2014, 4, 30),
    ]
    assert len(days) == 30 and (int(per_day.min()), int(per_day.max())) == (2_520, 12_646)
    # local wall clock: the first pickup is 2014-04-01 00:00, the last 04-30 23:59
    assert dt.datetime(1970, 1, 1) + dt.timedelta(seconds=float(t.pickup_s.min())) == dt.datetime(
        2014, 4, 1, 0, 0
    )
    assert dt.datetime(1970, 1, 1) + dt.timedelta(seconds=float(t.pickup_s.max())) == dt.datetime(
        2014, 4, 30, 23, 59
    )
    # pickups only
    for col in (t.fare, t.dropoff_lon, t.dropoff_lat, t.duration_s, t.distance_m):
        assert np.isnan(col).all()
    # a census of the month: covered but for four citywide gaps of 11-18 minutes
    assert t.mode == ("windows",) and len(t.windows[0]) == 5
    assert float(t.covered_h[0].sum()) == pytest.approx(719.1, abs=1e-6)


# --- crafted zips -----------------------------------------------------------------------------


def test_crafted_zip_macosx_stub_ignored_duplicates_counted(tmp_path: Path) -> None:
    path, rows = _crafted(tmp_path)
    t = read_trips([path], EXTRACT)
    assert t.rows_read == (rows,) and t.duplicates == (30,)
    assert t.dropped[0]["outside_area"] == 1  # JFK
    assert t.n == rows - 30 - 1
    assert t.citywide == (rows - 30,)
    first = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=float(t.pickup_s[0]))
    assert first == dt.datetime(2014, 4, 7, 0, 0)
    assert int(t.pickup_minute_of_week[0]) == 0  # Monday 00:00
    assert np.allclose((t.lon[0], t.lat[0]), SPOTS[0])
    # the same rows, uncompressed, read the same
    plain = tmp_path / "uber.csv"
    with zipfile.ZipFile(path) as z:
        plain.write_bytes(z.read("uber-raw-data-apr14.csv"))
    again = read_trips([plain], EXTRACT)
    assert np.array_equal(again.pickup_s, t.pickup_s) and again.duplicates == t.duplicates


def test_a_zip_must_hold_exactly_one_csv(tmp_path: Path) -> None:
    two = _zip(tmp_path / "two.zip", {"a.csv": HEADER, "b/b.csv": HEADER, "__MACOSX/._a.csv": "x"})
    with pytest.raises(DemandDataError) as e:
        read_trips([two], WORLD)
    assert str(e.value) == (
        f"trip file {two}: the zip holds 2 CSV files (a.csv, b/b.csv), expected exactly one"
    )
    none = _zip(tmp_path / "none.zip", {"__MACOSX/._a.csv": "x", "notes.txt": "x"})
    with pytest.raises(DemandDataError, match="holds 0 CSV files, expected exactly one"):
        read_trips([none], WORLD)
    fake = tmp_path / "fake.zip"
    fake.write_text("not a zip")
    with pytest.raises(DemandDataError, match="not a readable zip"):
        read_trips([fake], WORLD)


def test_cli_two_csv_zip_is_one_line_exit_2(
    tmp_path: Path, manhattan_tiles: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two = _zip(tmp_path / "two.zip", {"a.csv": HEADER, "b.csv": HEADER})
    rc = main(
        ["demand", "build", "--tiles", str(manhattan_tiles), "--trips", str(two), "--out",
         str(tmp_path / "out")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "holds 2 CSV files" in err
    assert not (tmp_path / "out").exists()


def test_parse_days() -> None:
    d = parse_days("2014-04-01..2014-04-03, 2014-04-25")
    assert sorted(d) == [dt.date(2014, 4, k) for k in (1, 2, 3, 25)]
    for bad, msg in (
        ("2014-04-31", "expected YYYY-MM-DD"),
        ("2014-04-05..2014-04-01", "ends before it starts"),
        ("", "no day given"),
    ):
        with pytest.raises(DemandDataError, match=msg):
            parse_days(bad)


# --- the demand table: sources and days -------------------------------------------------------


def _build(tiles: Path, out: Path, trips: list[Path], *extra: str) -> dict[str, Any]:
    """The table's JSON document (any JSON value under its keys)."""
    args = ["demand", "build", "--tiles", str(tiles), "--trips", *map(str, trips)]
    assert main([*args, "--out", str(out), "--json", *extra]) == 0
    doc: dict[str, Any] = json.loads((out / TABLE_JSON).read_text())
    return doc


def test_sources_rates_from_all_pickups_fares_only_from_yellow(
    tmp_path: Path, manhattan_tiles: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uber, _ = _crafted(tmp_path)
    yellow = TRIPS["reuven_2015_06"]
    doc = _build(manhattan_tiles, tmp_path / "a", [uber, yellow])
    printed = json.loads(capsys.readouterr().out)
    assert printed["inputs"][0]["duplicates_removed"] == 30
    assert printed["inputs"][0]["dropped"]["outside_area"] == 1
    assert doc["schema_version"] == 2
    src = doc["sources"]
    assert isinstance(src, dict)
    assert [s["format"] for s in src["pickup_rate"]] == ["uber2014", "tlc2015"]
    for col in ("fare", "trip_time", "trip_distance", "dropoff"):
        assert [s["path"] for s in src[col]] == [str(yellow)], col
    assert src["pickup_rate"][0]["sha256"] == sha256_file(uber)
    assert src["fare"][0]["sha256"] == sha256_file(yellow)
    n_uber_snapped = src["pickup_rate"][0]["records"]
    assert 0 < n_uber_snapped <= 7 * 288  # the week's distinct pickups that snapped
    # other app pickups (shifted between the spots): other rates, the very same fares,
    # trip times and drop-offs
    uber_b, _ = _crafted(tmp_path, "uber-b.csv.zip", shift=1)
    doc_b = _build(manhattan_tiles, tmp_path / "b", [uber_b, yellow])
    capsys.readouterr()
    a, b = DemandTable.load(tmp_path / "a"), DemandTable.load(tmp_path / "b")
    assert not np.array_equal(a.pickups_per_h, b.pickups_per_h)
    for name in ("fare_mean", "fare_quantiles", "trip_duration_s", "trip_distance_m", "dropoff"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert doc_b["sources"]["fare"] == src["fare"]
    assert a.sources == src


def test_pickups_only_cannot_make_a_table(
    tmp_path: Path, manhattan_tiles: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uber, _ = _crafted(tmp_path)
    rc = main(
        ["demand", "build", "--tiles", str(manhattan_tiles), "--trips", str(uber), "--out",
         str(tmp_path / "out")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert "no input file gives fare, trip_time, dropoff" in err
    assert not (tmp_path / "out").exists()


def test_days_filter_keeps_those_days_for_rates_and_records_them(
    tmp_path: Path, manhattan_tiles: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uber, _ = _crafted(tmp_path)
    files = [uber, TRIPS["reuven_2015_06"], TRIPS["gcp_train"]]
    doc = _build(manhattan_tiles, tmp_path / "d", files, "--days", "2014-04-07..2014-04-13")
    printed = json.loads(capsys.readouterr().out)
    # the 3 app pickups of 04-25, every 2015-06 trip, all but 17 trips of the 2009-2015 sample
    assert [f["outside_days"] for f in printed["inputs"]] == [3, 9_999, 7_333 - 17]
    days = doc["days"]
    assert days == {
        "filter": [["2014-04-07", "2014-04-13"]],
        "first": "2014-04-07",
        "last": "2014-04-13",
        "dates_with_pickups": 7,
        "ranges": [["2014-04-07", "2014-04-13"]],
    }
    # rates from those days only; fares etc. from every yellow-cab record, whatever its date
    src = doc["sources"]
    assert isinstance(src, dict)
    assert src["pickup_rate"][0]["format"] == "uber2014"
    assert {s["format"] for s in src["fare"]} == {"tlc2015", "gcp8"}
    assert sum(s["records"] for s in src["fare"]) > 5_000
    # without the filter: another table (the 04-25 pickups count), every date recorded
    whole = _build(manhattan_tiles, tmp_path / "w", files)
    capsys.readouterr()
    assert whole["version"] != doc["version"]
    assert whole["days"]["filter"] is None
    assert whole["days"]["last"] == "2015-06-29"  # the sample's last
    assert whole["days"]["ranges"] is None  # too many to list


def test_old_demand_json_without_sources_still_loads(
    manhattan_demand: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / "demand.npz").write_bytes((manhattan_demand / "demand.npz").read_bytes())
    doc = json.loads((manhattan_demand / TABLE_JSON).read_text())
    assert doc["schema_version"] == 2 and "sources" in doc
    for k in ("sources", "days"):
        del doc[k]
    doc["schema_version"] = 1
    (old / TABLE_JSON).write_text(json.dumps(doc))
    table = DemandTable.load(old)
    assert table.sources is None
    assert np.array_equal(table.pickups_per_h, DemandTable.load(manhattan_demand).pickups_per_h)
    doc["schema_version"] = 3
    (old / TABLE_JSON).write_text(json.dumps(doc))
    with pytest.raises(DemandDataError, match="schema 3"):
        DemandTable.load(old)


def test_a_model_says_when_it_learnt_app_demand() -> None:
    from models.train import _target_text

    assert "app pickups" in _target_text(("uber2014", "tlc2015"))
    assert _target_text(("gcp8", "tlc2015")).startswith("street hails per hour")
