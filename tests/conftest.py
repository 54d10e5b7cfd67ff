"""Shared fixtures: the real data (the repository's ``data/``) and tiles built from it (once per
session)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tiles.fileio import real_data_dir

if TYPE_CHECKING:
    from models.trips import Trips

REPO = Path(__file__).resolve().parent.parent
#: the repository's own data/ (``$NAGASHI_DATA`` overrides it; see data/README.md)
SHARED_DATA = real_data_dir()
OSM = {
    "manhattan": SHARED_DATA / "osm" / "nyc_manhattan_midtown.osm.pbf",
    "shibuya": SHARED_DATA / "osm" / "tokyo_shibuya_roads.osm.pbf",
    "monaco": SHARED_DATA / "osm" / "monaco_osrm.osm.pbf",
}
TRIPS = {
    "reuven_2015_06": SHARED_DATA / "trips" / "nyc_tlc_yellow_2015-06_reuven.csv",
    "gcp_train": SHARED_DATA / "trips" / "nyc_tlc_yellow_2009-2015_gcp_taxi-train.csv",
    "gcp_valid": SHARED_DATA / "trips" / "nyc_tlc_yellow_2009-2015_gcp_taxi-valid.csv",
    "uber_2014_04": SHARED_DATA / "trips" / "nyc_uber_2014-04_fivethirtyeight.csv.zip",
}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real data not found at {SHARED_DATA} (python data/fetch.py fetches it)")
    return SHARED_DATA


def _build(tmp_path_factory: pytest.TempPathFactory, area: str) -> Path:
    from tiles import build_tiles

    out = tmp_path_factory.mktemp(f"tiles-{area}")
    path, _ = build_tiles(OSM[area], out)
    return path


@pytest.fixture(scope="session")
def manhattan_tiles(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Path of a tile database built from the real Manhattan extract."""
    return _build(tmp_path_factory, "manhattan")


@pytest.fixture(scope="session")
def shibuya_tiles(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return _build(tmp_path_factory, "shibuya")


@pytest.fixture(scope="session")
def monaco_tiles(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return _build(tmp_path_factory, "monaco")


# --- models/ (demand): a statistical DemandTable for Manhattan, built once per session --------


@pytest.fixture(scope="session")
def manhattan_demand(tmp_path_factory: pytest.TempPathFactory, manhattan_tiles: Path) -> Path:
    """Directory (demand.npz + demand.json) of statistical demand built from the real trips
    (2009-2015 train sample + the 2015-06 windows) over the Manhattan tiles."""
    from models.statistics import build_demand_table
    from tiles import TileStore

    out = tmp_path_factory.mktemp("demand-manhattan")
    with TileStore(manhattan_tiles) as store:
        table, _ = build_demand_table(store, [TRIPS["gcp_train"], TRIPS["reuven_2015_06"]])
    table.save(out)
    return out


@pytest.fixture(scope="session")
def uber_april_trips(shared_data: Path) -> Trips:
    """Every pickup of the real Uber April 2014 file, read once per session (whole world box:
    filter with masks, do not read the 564,516 rows again)."""
    from models.trips import read_trips

    return read_trips([TRIPS["uber_2014_04"]], (-180.0, -90.0, 180.0, 90.0))
