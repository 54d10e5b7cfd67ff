"""MLIT people-flow: JIS X 0410 1 km mesh codes, the mesh file reader, and the shaping of the
transferred Shibuya demand (totals kept, busier meshes get more, sources named)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from models import DemandDataError, DemandTable
from models.peopleflow import (
    BAND_ALL_DAY,
    BAND_MIDDAY,
    BAND_NIGHT,
    COLUMNS,
    DAYFLAG_HOLIDAY,
    DAYFLAG_WEEKDAY,
    SLOT_BAND,
    PeopleFlow,
    ShapeConfig,
    mesh1km_box,
    mesh1km_of,
    read_people_flow,
    shape_by_people_flow,
    shape_rates,
    shape_weights,
)
from tests.conftest import REPO
from tiles import TileStore

DATA = REPO / "tests" / "data"
FLOW_CSV = DATA / "jp_peopleflow_shibuya_2019.csv"
MESH_GEOJSON = DATA / "jp_peopleflow_shibuya_mesh.geojson"


# --- mesh codes --------------------------------------------------------------------------------


def test_mesh_codes_decode_as_the_standard_defines_them() -> None:
    # JIS X 0410: 1st-level square 5339 has its south edge at 53 / 1.5 = 35 deg 20' N and its
    # west edge at 100 + 39 = 139 deg E; 2nd level "46": row 4, column 6 of its 8 x 8 (5' x
    # 7'30"), so 35 deg 40' N, 139 deg 45' E; 3rd level "11": row 1, column 1 of 10 x 10
    # (30" x 45"): 35 deg 40'30" N, 139 deg 45'45" E. That is 53394611, the mesh of Tokyo
    # Station (35.6812 N, 139.7671 E, Marunouchi, Chiyoda).
    lon0, lat0, lon1, lat1 = mesh1km_box(53394611)
    assert (lon0, lat0) == pytest.approx((139 + 45 / 60 + 45 / 3600, 35 + 40 / 60 + 30 / 3600))
    assert (lon1 - lon0, lat1 - lat0) == pytest.approx((45 / 3600, 30 / 3600))
    assert lon0 <= 139.7671 < lon1 and lat0 <= 35.6812 < lat1
    assert int(mesh1km_of(139.7671, 35.6812)) == 53394611
    # 53393599 (named as Tokyo Station's in the brief) is not: "35" + "99" puts it at
    # 35 deg 39'30" N .. 35 deg 40' N, 139 deg 44'15" .. 139 deg 45' E, Toranomon / Kamiyacho
    # (Minato; MLIT's rows give it citycode 13103), 2.4 km south-west of the station.
    lon0, lat0, lon1, lat1 = mesh1km_box(53393599)
    assert (lon0, lat0, lon1, lat1) == pytest.approx(
        (139 + 44.25 / 60, 35 + 39.5 / 60, 139.75, 35 + 40 / 60)
    )
    assert not (lon0 <= 139.7671 < lon1 and lat0 <= 35.6812 < lat1)
    # Shibuya Station (35.6580 N, 139.7016 E) and the scramble crossing just north of it
    assert int(mesh1km_of(139.7016, 35.6580)) == 53393586
    assert int(mesh1km_of(139.7005, 35.6595)) == 53393596
    # a point on a mesh's south-west corner belongs to that mesh
    assert int(mesh1km_of(*mesh1km_box(53393596)[:2])) == 53393596


def test_mesh_boxes_match_mlits_own_polygons() -> None:
    doc = json.loads(MESH_GEOJSON.read_text(encoding="utf-8"))
    assert len(doc["features"]) == 14
    for f in doc["features"]:
        ring = np.asarray(f["geometry"]["coordinates"][0], dtype=np.float64)
        box = mesh1km_box(f["properties"]["code"])
        expect = (ring[:, 0].min(), ring[:, 1].min(), ring[:, 0].max(), ring[:, 1].max())
        assert box == pytest.approx(expect, abs=1e-9), f["properties"]["code"]


@pytest.mark.parametrize("bad", ["5339359", "533935990", "53398599", "53393899", "5339x599", -1])
def test_a_malformed_mesh_code_is_refused(bad: str | int) -> None:
    with pytest.raises(ValueError, match="mesh code"):
        mesh1km_box(bad)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(min_value=122.0, max_value=153.9, allow_nan=False),
    st.floats(min_value=20.0, max_value=45.9, allow_nan=False),
)
def test_every_point_lies_in_the_box_of_its_mesh(lon: float, lat: float) -> None:
    code = int(mesh1km_of(lon, lat))
    lon0, lat0, lon1, lat1 = mesh1km_box(code)
    eps = 1e-9
    assert lon0 - eps <= lon < lon1 + eps and lat0 - eps <= lat < lat1 + eps
    assert int(mesh1km_of(0.5 * (lon0 + lon1), 0.5 * (lat0 + lat1))) == code


# --- the reader --------------------------------------------------------------------------------


def test_reader_reads_the_shibuya_cut_of_the_twelve_months() -> None:
    flow = read_people_flow([FLOW_CSV])
    assert len(flow.codes) == 12 and len(flow.months) == 12
    assert flow.files[0]["rows"] == flow.files[0]["rows_used"] == 12 * 12 * 3 * 3
    # MLIT's January 2019 figure for the scramble crossing's mesh, weekday midday: 119,611
    jan = read_people_flow([FLOW_CSV], months=[1])
    assert jan.months == ((2019, 1),)
    assert jan.people([53393596], DAYFLAG_WEEKDAY, BAND_MIDDAY)[0] == 119_611
    assert jan.people([53393596], DAYFLAG_HOLIDAY, BAND_NIGHT)[0] == 18_730
    assert np.isnan(jan.people([53394611], DAYFLAG_WEEKDAY, BAND_MIDDAY)[0])  # not in the cut
    # the year's mean lies within the months' range
    months = [
        read_people_flow([FLOW_CSV], months=[m]).people([53393596], 1, 0)[0] for m in range(1, 13)
    ]
    mean = flow.people([53393596], DAYFLAG_WEEKDAY, BAND_MIDDAY)[0]
    assert mean == pytest.approx(np.mean(months))


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join([",".join(COLUMNS), *lines]) + "\n", encoding="utf-8")
    return path


def test_reader_refuses_bad_files_in_one_line(tmp_path: Path) -> None:
    wrong = tmp_path / "trips.csv"
    wrong.write_text("Date/Time,Lat,Lon,Base\n4/1/2014 0:11:00,40.769,-73.9549,B02512\n")
    with pytest.raises(DemandDataError, match="not an MLIT people-flow mesh file"):
        read_people_flow([wrong])
    bad = _write(
        tmp_path / "bad.csv", ["53393596,13,13113,2019,01,1,0,100", "5339359,13,1,2019,01,1,0,5"]
    )
    with pytest.raises(DemandDataError, match=r"bad\.csv:3: bad people-flow row"):
        read_people_flow([bad])
    twice = _write(
        tmp_path / "twice.csv",
        ["53393596,13,13113,2019,01,1,0,100", "53393596,13,13113,2019,01,1,0,101"],
    )
    with pytest.raises(DemandDataError, match="given twice"):
        read_people_flow([twice])
    with pytest.raises(DemandDataError, match="no people-flow figure"):
        read_people_flow([FLOW_CSV], codes=[53394611])
    with pytest.raises(DemandDataError, match="cannot read"):
        read_people_flow([tmp_path / "missing.csv"])
    for err in (wrong, bad, twice):
        try:
            read_people_flow([err])
        except DemandDataError as e:
            assert "\n" not in str(e)


# --- shaping -----------------------------------------------------------------------------------


def test_slot_bands_follow_mlits_hours() -> None:
    assert [s for s in range(48) if SLOT_BAND[s] == BAND_MIDDAY] == list(range(22, 28))
    assert [s for s in range(48) if SLOT_BAND[s] == BAND_NIGHT] == list(range(2, 8))
    assert SLOT_BAND.count(BAND_ALL_DAY) == 36


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=30).flatmap(
        lambda n: st.tuples(
            st.lists(st.floats(0.0, 50.0), min_size=n, max_size=n),
            st.lists(st.one_of(st.just(float("nan")), st.floats(0.0, 2e5)), min_size=n, max_size=n),
        )
    ),
    st.floats(0.0, 2.0),
)
@example(([5e-324, 1.0], [1.0, 0.0]), 1.0)  # a subnormal weighted total: total / it overflows
def test_shaping_keeps_every_slots_total(pair: tuple[list[float], list[float]], exp: float) -> None:
    rates = np.asarray(pair[0]).reshape(1, 1, -1)
    people = np.asarray(pair[1]).reshape(1, 1, -1)
    weights, unknown = shape_weights(rates, people, exp)
    shaped = shape_rates(rates, weights)
    assert np.all(np.isfinite(shaped)) and np.all(shaped >= 0)
    assert shaped.sum() == pytest.approx(rates.sum(), rel=1e-9, abs=1e-9)
    assert np.array_equal(unknown, np.isnan(people))
    assert np.all(shaped[rates == 0] == 0)  # no demand where the transfer gives none


@pytest.fixture(scope="module")
def transferred(manhattan_tiles: Path, manhattan_demand: Path, shibuya_tiles: Path) -> DemandTable:
    """The Shibuya demand as pipelines/shibuya.yaml transfers it from the real Manhattan table."""
    from tools.pipeline.transfer import transfer_demand

    source = DemandTable.load(manhattan_demand)
    with TileStore(manhattan_tiles) as s, TileStore(shibuya_tiles) as t:
        table, _ = transfer_demand(source, s.all(), t.all(), t.meta["source_sha256"])
    return table


@pytest.fixture(scope="module")
def shaped(
    transferred: DemandTable, shibuya_tiles: Path
) -> tuple[DemandTable, dict[str, object], PeopleFlow]:
    flow = read_people_flow([FLOW_CSV])
    with TileStore(shibuya_tiles) as t:
        table, report = shape_by_people_flow(transferred, t.all(), flow)
    return table, report, flow


def test_shaping_keeps_the_area_total_of_every_slot(
    transferred: DemandTable, shaped: tuple[DemandTable, dict[str, object], PeopleFlow]
) -> None:
    table, report, _ = shaped
    before = transferred.pickups_per_h.astype(np.float64).sum(axis=2)
    after = table.pickups_per_h.astype(np.float64).sum(axis=2)
    assert before.min() > 0
    np.testing.assert_allclose(after, before, rtol=1e-5)
    # links without demand stay without (motorways, private roads); fares etc. are the input's
    assert np.array_equal(table.pickups_per_h > 0, transferred.pickups_per_h > 0)
    for name in ("fare_mean", "trip_duration_s", "trip_distance_m", "dropoff", "edge_cell"):
        assert np.array_equal(getattr(table, name), getattr(transferred, name)), name
    assert report["links_without_people_figure"] == 0
    assert not np.array_equal(table.pickups_per_h, transferred.pickups_per_h)


def test_a_link_in_a_busier_mesh_gets_more(
    transferred: DemandTable,
    shaped: tuple[DemandTable, dict[str, object], PeopleFlow],
    shibuya_tiles: Path,
) -> None:
    table, _, flow = shaped
    with TileStore(shibuya_tiles) as t:
        g = t.all()
    mesh = mesh1km_of(0.5 * (g.u_lon + g.v_lon), 0.5 * (g.u_lat + g.v_lat))
    ids = g.edge_id.astype(np.int64)
    busy, quiet = 53393596, 53393585  # the scramble crossing's mesh; Yoyogi-Uehara side
    for d, s, dayflag, band in (
        (0, 24, DAYFLAG_WEEKDAY, BAND_MIDDAY),
        (2, 4, DAYFLAG_HOLIDAY, BAND_NIGHT),
    ):
        p_busy = flow.people([busy], dayflag, band)[0]
        p_quiet = flow.people([quiet], dayflag, band)[0]
        old = transferred.pickups_per_h[d, s].astype(np.float64)
        new = table.pickups_per_h[d, s].astype(np.float64)
        gain = np.where(old > 0, new / np.where(old > 0, old, 1.0), np.nan)
        g_busy = gain[ids[(mesh == busy) & (old[ids] > 0)]]
        g_quiet = gain[ids[(mesh == quiet) & (old[ids] > 0)]]
        assert g_busy.size > 50 and g_quiet.size > 50
        # every link of a mesh is scaled alike, by its mesh's people present
        np.testing.assert_allclose(g_busy, g_busy[0], rtol=1e-4)
        np.testing.assert_allclose(g_quiet, g_quiet[0], rtol=1e-4)
        assert g_busy[0] / g_quiet[0] == pytest.approx(p_busy / p_quiet, rel=1e-4)
    # weekday midday: the scramble crossing's mesh has 1.6 times the people: its links gain
    assert flow.people([busy], 1, 0)[0] > 1.5 * flow.people([quiet], 1, 0)[0]
    d_old = transferred.pickups_per_h[0, 24].astype(np.float64)
    d_new = table.pickups_per_h[0, 24].astype(np.float64)
    in_busy = ids[mesh == busy]
    in_quiet = ids[mesh == quiet]
    assert d_new[in_busy].sum() > d_old[in_busy].sum()
    assert d_new[in_quiet].sum() < d_old[in_quiet].sum()


def test_exponent_zero_leaves_the_transfer_as_it_was(
    transferred: DemandTable, shibuya_tiles: Path
) -> None:
    flow = read_people_flow([FLOW_CSV], months=[4])
    with TileStore(shibuya_tiles) as t:
        table, report = shape_by_people_flow(transferred, t.all(), flow, ShapeConfig(exponent=0))
    np.testing.assert_allclose(table.pickups_per_h, transferred.pickups_per_h, rtol=1e-6)
    assert report["share_moved_between_meshes_week"] == 0.0
    assert report["months_read"] == ["2019-04"]


def test_the_shaped_table_names_its_sources_per_column(
    transferred: DemandTable,
    shaped: tuple[DemandTable, dict[str, object], PeopleFlow],
    tmp_path: Path,
) -> None:
    table, _, _ = shaped
    table.save(tmp_path)
    back = DemandTable.load(tmp_path)
    assert back.version.startswith("transfer-peopleflow-") and back.version != transferred.version
    assert back.meta["source"] == "transferred"
    src = back.sources
    assert src is not None
    rate_kinds = [e["kind"] for e in src["pickup_rate"]]
    assert rate_kinds[0].startswith("transferred demand") and "MLIT" in rate_kinds[1]
    flow_entry = src["pickup_rate"][1]
    assert flow_entry["path"] == str(FLOW_CSV) and flow_entry["licence"] == "CC BY 4.0"
    assert flow_entry["attribution"] == "「全国の人流オープンデータ」（国土交通省）"
    for col in ("fare", "trip_time", "trip_distance", "dropoff"):
        assert [e["version"] for e in src[col]] == [transferred.version]
    assert "MLIT people-flow" in back.meta["note"]
    assert back.meta["people_flow"]["config"] == {"months": [], "exponent": 1.0}


def test_a_network_the_people_flow_does_not_cover_is_refused(
    manhattan_tiles: Path, manhattan_demand: Path
) -> None:
    table = DemandTable.load(manhattan_demand)
    with TileStore(manhattan_tiles) as t:
        g = t.all()
    with pytest.raises(DemandDataError, match="no figure for any mesh"):
        shape_by_people_flow(table, g, read_people_flow([FLOW_CSV]))
