"""Idempotent trip ingest on the real TLC files: same file twice, overlapping files, MERGE."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from models.trips import Trips, read_trips
from tests.conftest import TRIPS
from tools.pipeline import IngestError, TripStore, export_trips_csv
from tools.pipeline.ingest import WORLD_BBOX

NOW = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)


def _in_order(t: Trips) -> Trips:
    """The trips sorted by pickup time, place and fare (NaN-safe), to compare two readings."""
    fare = np.nan_to_num(t.fare, nan=-1.0)
    dlon = np.nan_to_num(t.dropoff_lon, nan=0.0)
    order = np.lexsort((fare, dlon, t.lat, t.lon, t.pickup_s))
    fields = {f: _take(getattr(t, f), order, t.n) for f in Trips.__dataclass_fields__}
    return Trips(**fields)  # type: ignore[arg-type]  # each field keeps its own type


def _take(v: object, order: np.ndarray, n: int) -> object:
    return v[order] if isinstance(v, np.ndarray) and v.shape[:1] == (n,) else v


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_same_file_twice_does_not_duplicate(tmp_path: Path) -> None:
    with TripStore(tmp_path / "trips.sqlite") as store:
        first = store.ingest(TRIPS["gcp_train"], "train", now=NOW)
        n = store.count()
        second = store.ingest(TRIPS["gcp_train"], "train", now=NOW)
        assert store.count() == n
    usable = read_trips([TRIPS["gcp_train"]], WORLD_BBOX).n
    assert first.usable == usable == first.new_trips + first.merged_trips
    assert n == first.new_trips > 7000
    assert second.new_trips == 0 and second.merged_trips == second.usable == usable


def test_overlapping_file_adds_only_new_trips(tmp_path: Path) -> None:
    train = _lines(TRIPS["gcp_train"])
    valid = _lines(TRIPS["gcp_valid"])
    a = tmp_path / "a.csv"
    b = tmp_path / "b.csv"
    a.write_text("\n".join(train[:4000]) + "\n")
    # b overlaps a on 1000 rows (re-ordered) and brings 500 rows of another real file
    b.write_text("\n".join(train[3000:4000][::-1] + valid[:500]) + "\n")
    with TripStore(tmp_path / "trips.sqlite") as store:
        ra = store.ingest(a, "train", now=NOW)
        rb = store.ingest(b, "train", now=NOW)
        total = store.count()
    both = read_trips([a, b], WORLD_BBOX)
    assert rb.merged_trips == 1000 and rb.new_trips == 500
    assert total == ra.new_trips + 500
    # the set of distinct pickups (time, place) agrees with the reader's own view of the union
    distinct = {
        (t, round(x, 6), round(y, 6))
        for t, x, y in zip(both.pickup_s, both.lon, both.lat, strict=True)
    }
    assert len(distinct) <= total <= both.n - 1000


def test_merge_fills_missing_fields_and_keeps_the_first_label(tmp_path: Path) -> None:
    rows = _lines(TRIPS["reuven_2015_06"])
    header, body = rows[0], rows[1:301]
    cols = header.split(",")
    dist = cols.index("trip_distance")
    stripped = []
    for line in body:
        f = line.split(",")
        f[dist] = ""
        stripped.append(",".join(f))
    a = tmp_path / "no_distance.csv"
    a.write_text("\n".join([header, *stripped]) + "\n")
    full = tmp_path / "full.csv"
    full.write_text("\n".join([header, *body]) + "\n")
    with TripStore(tmp_path / "trips.sqlite") as store:
        ra = store.ingest(a, "eval", now=NOW)
        rb = store.ingest(full, "train", now=NOW)
        assert rb.new_trips == 0 and rb.merged_trips == ra.usable
        assert store.counts_by_label() == {"eval": ra.usable}
        out = tmp_path / "eval.csv"
        assert export_trips_csv(store, ["eval"], out) == ra.usable
    exported = _in_order(read_trips([out], WORLD_BBOX))
    original = _in_order(read_trips([full], WORLD_BBOX))
    assert np.isnan(read_trips([a], WORLD_BBOX).distance_m).all()
    # distances came from the second file (the MERGE filled them), matching the original
    np.testing.assert_allclose(exported.distance_m, original.distance_m, rtol=1e-12)
    assert np.isfinite(exported.distance_m).sum() > 250


def test_export_round_trips_through_the_models_reader(tmp_path: Path) -> None:
    with TripStore(tmp_path / "trips.sqlite") as store:
        store.ingest(TRIPS["reuven_2015_06"], "eval", now=NOW)
        export_trips_csv(store, ["eval"], tmp_path / "a.csv")
        export_trips_csv(store, ["eval"], tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    src = read_trips([TRIPS["reuven_2015_06"]], WORLD_BBOX)
    got = read_trips([tmp_path / "a.csv"], WORLD_BBOX)
    assert got.n == src.n
    a, b = _in_order(src), _in_order(got)
    for field in ("pickup_s", "lon", "lat", "dropoff_lon", "dropoff_lat", "fare", "duration_s"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert got.mode == src.mode == ("windows",)


def test_unreadable_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with TripStore(tmp_path / "trips.sqlite") as store:
        with pytest.raises(IngestError, match="neither the TLC 2015 header"):
            store.ingest(bad, "train", now=NOW)
        with pytest.raises(IngestError, match=r"cannot read trip file"):
            store.ingest(tmp_path / "absent.csv", "train", now=NOW)
        with pytest.raises(IngestError, match="label"):
            store.ingest(TRIPS["gcp_valid"], "Bad Label", now=NOW)
        assert store.count() == 0


def test_uber_zip_ingests_with_its_duplicates_counted(tmp_path: Path) -> None:
    import json
    import zipfile

    rows = [
        '"Date/Time","Lat","Lon","Base"',
        '"4/1/2014 0:11:00",40.769,-73.9549,"B02512"',
        '"4/1/2014 0:11:00",40.769,-73.9549,"B02512"',  # exact duplicate: read once, counted
        '"4/1/2014 0:11:00",40.769,-73.9549,"B02598"',  # same time and place, other base
        '"4/30/2014 23:59:00",40.7588,-73.9776,"B02764"',
    ]
    path = tmp_path / "uber.csv.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("uber-raw-data-apr14.csv", "\n".join(rows) + "\n")
        z.writestr("__MACOSX/._uber-raw-data-apr14.csv", "stub")
    with TripStore(tmp_path / "trips.sqlite") as store:
        r = store.ingest(path, "train", now=NOW)
        assert store.count() == 2
        dropped = json.loads(store._conn.execute("SELECT dropped FROM ingests").fetchone()[0])
    assert (r.rows_read, r.duplicates_removed, r.usable) == (4, 1, 3)
    # the trip identity (time, places, fare) cannot tell the two bases apart: one merge
    assert (r.new_trips, r.merged_trips) == (2, 1)
    assert r.to_json()["duplicates_removed"] == 1 and dropped["exact_duplicate_row"] == 1
