"""Statistical demand from the real TLC trips over the real Manhattan tiles."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from models import DemandDataError, DemandTable, tick_demand_from_table
from models.snap import snap_pickups, twin_edges
from models.statistics import StatsConfig, build_demand_table
from models.trips import read_trips
from tests.conftest import TRIPS
from tiles import MatchConfig, NoMatchError, TileStore, match_fix


@pytest.fixture(scope="module")
def store(manhattan_tiles: Path) -> TileStore:
    return TileStore(manhattan_tiles)


def test_fixture_table_loads_and_is_realistic(manhattan_demand: Path, store: TileStore) -> None:
    table = DemandTable.load(manhattan_demand)
    g = store.all()
    assert table.n_edges == g.n_edges_total
    assert table.network_sha256 == store.meta["source_sha256"]
    assert table.pickups_per_h.shape == (3, 48, g.n)
    forbidden = ~g.cruise_allowed()
    assert forbidden.any()
    assert np.all(table.pickups_per_h[:, :, g.local(g.edge_id)[forbidden]] == 0)
    allowed_rates = table.pickups_per_h[:, :, g.cruise_allowed()]
    # every cruisable link gets some demand (shrinkage toward its area), none is absurd
    assert np.all(allowed_rates > 0)
    assert float(np.percentile(allowed_rates, 99)) < 120.0
    # weekday 18:00 in Midtown is busier than weekday 04:00
    assert allowed_rates[0, 36].sum() > 2 * allowed_rates[0, 8].sum()
    assert table.scale_factor > 1000
    assert table.meta["inputs"][0]["dropped"]["outside_area"] > 0
    assert np.allclose(table.dropoff.sum(axis=1), 1.0, atol=1e-4)
    q = table.fare_quantiles
    assert np.all(q[:, 0] <= q[:, 1]) and np.all(q[:, 1] <= q[:, 2])


def test_scale_matches_tlc_daily_total(store: TileStore) -> None:
    """With one span sample, the area's daily total is 485,000 x its share of the sample."""
    table, report = build_demand_table(store, [TRIPS["gcp_train"]])
    share = report["pickups_snapped"] / report["inputs"][0]["citywide_valid"]
    expected = 485_000.0 * share
    got = report["network_area_pickups_per_day"]
    assert got == pytest.approx(expected, rel=0.1)
    assert report["inputs"][0]["mode"] == "span"
    assert table.scale_factor == pytest.approx(
        report["inputs"][0]["real_trips_per_sample_trip"], rel=1e-9
    )


def test_windows_only_is_rejected(store: TileStore) -> None:
    with pytest.raises(DemandDataError, match="do not cover every"):
        build_demand_table(store, [TRIPS["reuven_2015_06"]])


def test_bad_rows_are_dropped_by_reason(tmp_path: Path, store: TileStore) -> None:
    rows = list(csv.reader(TRIPS["reuven_2015_06"].open()))
    header = rows[0]
    i_t = header.index("tpep_pickup_datetime")
    i_lon = header.index("pickup_longitude")
    i_lat = header.index("pickup_latitude")
    g = store.all()
    pts = g.geom_lonlat
    bbox = (pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())

    def inside(r: list[str]) -> bool:
        lon, lat = float(r[i_lon]), float(r[i_lat])
        return bool(bbox[0] <= lon <= bbox[2] and bbox[1] <= lat <= bbox[3])

    body = [r for r in rows[1:] if inside(r)][:40]
    body[0][i_t] = "yesterday"
    body[1][i_lon] = "abc"
    body[2][i_lon], body[2][i_lat] = "0", "0"
    body[3][i_lon] = ""
    body[4][i_lon], body[4][i_lat] = "-73.70", "40.60"  # JFK-ish, outside Manhattan
    bad = tmp_path / "bad.csv"
    with bad.open("w", newline="") as fh:
        csv.writer(fh).writerows([header, *body])
    trips = read_trips([bad], bbox)
    dropped = trips.dropped[0]
    assert dropped["unparsable_pickup_time"] == 1
    assert dropped["unparsable_coordinates"] == 1
    assert dropped["missing_coordinates"] == 2
    assert dropped["outside_area"] == 1
    assert trips.n == 35
    assert trips.rows_read == (40,)


def test_unknown_format_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DemandDataError, match="neither"):
        read_trips([p], (-75, 40, -73, 41))
    with pytest.raises(DemandDataError, match="cannot read"):
        read_trips([tmp_path / "missing.csv"], (-75, 40, -73, 41))


def test_vectorised_snap_agrees_with_match_fix(store: TileStore) -> None:
    g = store.all()
    pts = g.geom_lonlat
    bbox = (pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())
    trips = read_trips([TRIPS["gcp_train"], TRIPS["reuven_2015_06"]], bbox)
    assert trips.n > 5000
    snapped = snap_pickups(g, trips.lon, trips.lat, trips.dropoff_lon, trips.dropoff_lat)
    allowed = g.cruise_allowed()
    assert np.all(allowed[snapped.edge_a[snapped.ok]])
    rng = np.random.default_rng(3)
    agree = checked = 0
    for i in rng.choice(trips.n, 400, replace=False):
        try:
            m = match_fix(
                g, trips.lon[i], trips.lat[i], config=MatchConfig(radius_m=60.0), allowed=allowed
            )
        except NoMatchError:
            assert not snapped.ok[i]
            continue
        checked += 1
        e = int(g.local([m.edge_id])[0])
        agree += int(e in (snapped.edge_a[i], snapped.edge_b[i]))
    assert checked > 350
    assert agree >= checked - 2  # exact ties between parallel links may differ


def test_direction_follows_the_dropoff_on_two_way_streets(store: TileStore) -> None:
    g = store.all()
    twin = twin_edges(g)
    allowed = g.cruise_allowed()
    e = int(
        np.flatnonzero((twin >= 0) & allowed & allowed[np.maximum(twin, 0)] & (g.length_m > 80))[0]
    )
    lon = np.array([0.5 * (g.u_lon[e] + g.v_lon[e])] * 3)
    lat = np.array([0.5 * (g.u_lat[e] + g.v_lat[e])] * 3)
    dx, dy = g.v_lon[e] - g.u_lon[e], g.v_lat[e] - g.u_lat[e]
    scale = 0.01 / float(np.hypot(dx, dy))  # ~1 km along the street
    dlon = np.array([lon[0] + dx * scale, lon[0] - dx * scale, np.nan])
    dlat = np.array([lat[0] + dy * scale, lat[0] - dy * scale, np.nan])
    s = snap_pickups(g, lon, lat, dlon, dlat)
    assert set(s.rule.tolist()) == {2, 3}

    def share_on(i: int, edge: int) -> float:
        return float(s.weight_a[i] if s.edge_a[i] == edge else 1.0 - s.weight_a[i])

    assert share_on(0, e) == 1.0
    assert share_on(1, int(twin[e])) == 1.0
    assert share_on(2, e) == 0.5


def test_tick_demand_from_built_table(manhattan_demand: Path, store: TileStore) -> None:
    table = DemandTable.load(manhattan_demand)
    g = store.radius_graph(-73.9855, 40.7580, 1000.0)
    tick = tick_demand_from_table(
        table, g.edge_id, minute_of_week=1 * 1440 + 18 * 60, horizon_min=60
    )
    assert tick.pickups_per_h.shape == (3, g.n)
    assert tick.source == f"statistical:{table.version}"
    assert np.allclose(tick.dropoff.sum(axis=1), 1.0, atol=1e-4)
    # the tick's cells as np.unique numbers them (sorted, the inverse per link) and their
    # drop-off rows: what tick_demand_from_table computes without sorting, bit for bit
    uniq, local = np.unique(table.edge_cell[g.edge_id], return_inverse=True)
    assert np.array_equal(tick.cell, local.astype(np.int32))
    inside = table.dropoff[uniq][:, uniq]
    outside = np.clip(1.0 - inside.sum(axis=1, keepdims=True), 0.0, 1.0)
    want = np.concatenate([inside, outside], axis=1).astype(np.float32)
    assert tick.dropoff.tobytes() == want.tobytes()


@pytest.mark.parametrize("bad", [-1, 10**6])
def test_a_table_with_a_cell_outside_its_grid_is_refused(
    manhattan_demand: Path, tmp_path: Path, bad: int
) -> None:
    table = DemandTable.load(manhattan_demand)
    table.edge_cell[7] = bad
    table.save(tmp_path / "bad")
    with pytest.raises(DemandDataError, match="edge_cell has cells outside the grid"):
        DemandTable.load(tmp_path / "bad")


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        StatsConfig().k_cell = 1.0  # type: ignore[misc]  # the assignment must fail
