"""Shared fixtures: the real data (the repository's ``data/``) and tiles built from it (once per
session)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

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


#: Tuesday 17:00, the evening peak: the minute of :func:`evening_tables`
EVENING_MINUTE = 1440 + 17 * 60 + 0.5


@pytest.fixture(scope="session")
def evening_tables(manhattan_tiles: Path, manhattan_demand: Path) -> tuple[Any, Any]:
    """The Manhattan value table of Tuesday 17:00 (:data:`EVENING_MINUTE`, 46 minutes of
    statistical demand), without passes and with the passes of 300 links (some fresh), solved
    once per session for the read-out's tests (read-only: no test changes them)."""
    import math

    import numpy as np

    from agent.planner import PlannerParams, solve, speed_factor_from_demand
    from models import DemandTable, tick_demand_from_table
    from tiles import TileStore

    demand_table = DemandTable.load(manhattan_demand)
    with TileStore(manhattan_tiles) as store:
        g = store.all()
    params = PlannerParams(speed_factor=speed_factor_from_demand(demand_table, g))
    demand = tick_demand_from_table(demand_table, g.edge_id, math.floor(EVENING_MINUTE), 46)
    plain = solve(g, demand, EVENING_MINUTE, params)
    rng = np.random.default_rng(5)
    passed = rng.choice(g.n, 300, replace=False)
    ages = {int(e): float(a) for e, a in zip(passed, rng.uniform(0, 900, 300), strict=True)}
    return plain, solve(g, demand, EVENING_MINUTE, params, last_pass_age_s=ages)


@pytest.fixture(scope="session")
def uber_april_trips(shared_data: Path) -> Trips:
    """Every pickup of the real Uber April 2014 file, read once per session (whole world box:
    filter with masks, do not read the 564,516 rows again)."""
    from models.trips import read_trips

    return read_trips([TRIPS["uber_2014_04"]], (-180.0, -90.0, 180.0, 90.0))


# --- agent/: the Manhattan bundle and one recorded drive through the real agent (once per session)

DRIVE_CSV = REPO / "tests" / "data" / "midtown_drive.csv"


@pytest.fixture(scope="session")
def manhattan_bundle(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A real bundle (tiles, TLC demand, params, area) built by the demo's builder."""
    from tools.field.demo import build_manhattan_bundle

    return build_manhattan_bundle(shared_data, tmp_path_factory.mktemp("bundle-work"))


@pytest.fixture(scope="session")
def drive_run(manhattan_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The whole recorded drive through the agent, paced on a manual clock (no waiting), with
    the meter switched on at the 60th tick and off at the 150th."""
    from agent.api import AgentState
    from agent.clock import ManualClock
    from agent.gps import TraceReplay, read_csv_trace
    from agent.instruction import Instruction
    from agent.runtime import Agent, AgentConfig
    from agent.triplog import read_records

    data = tmp_path_factory.mktemp("agent-data")
    clock = ManualClock()
    source = TraceReplay(read_csv_trace(DRIVE_CSV), clock, speed=1.0)
    state = AgentState()
    shown: list[Instruction] = []
    agent: Agent

    def on_instruction(ins: Instruction) -> None:
        shown.append(ins)
        if len(shown) in (60, 150):
            agent.meter(len(shown) == 60)

    agent = Agent(
        AgentConfig(bundle_dir=manhattan_bundle, data_dir=data),
        source,
        clock,
        state,
        on_instruction=on_instruction,
    )
    summary = agent.run()
    return {
        "data": data,
        "summary": summary,
        "shown": shown,
        "state": state,
        "records": list(read_records(data / "trips")),
    }


# -- the small recent-demand cell model (tests/models/test_recent_demand.py and the modules that
# -- plan or simulate with it): the Uber month inside the Manhattan extract, binned, and one model
# -- trained on 2014-04-01..23 with the GLM alone at 30-minute slots, once per session


@pytest.fixture(scope="session")
def month_trips(manhattan_tiles: Path, uber_april_trips: Trips) -> Trips:
    from models.statistics import full_graph, make_grid, network_bbox
    from tiles import TileStore

    with TileStore(manhattan_tiles) as store:
        g = full_graph(store)
    lo_lon, lo_lat, hi_lon, hi_lat = network_bbox(make_grid(g, 500.0))
    t = uber_april_trips
    inside = (t.lon >= lo_lon) & (t.lon < hi_lon) & (t.lat >= lo_lat) & (t.lat < hi_lat)
    return t.subset(inside)


@pytest.fixture(scope="session")
def month(manhattan_tiles: Path, month_trips: Trips) -> Any:
    from models.rolling import prepare_month
    from tiles import TileStore

    with TileStore(manhattan_tiles) as store:
        return prepare_month(store, month_trips)


@pytest.fixture(scope="session")
def recent_model_dir(
    tmp_path_factory: pytest.TempPathFactory,
    manhattan_tiles: Path,
    month: Any,
    month_trips: Trips,
) -> Path:
    import datetime as dt

    from models.rolling import RecentConfig, train_recent_model
    from tiles import TileStore

    out = tmp_path_factory.mktemp("demand-recent")
    train_days = frozenset(dt.date(2014, 4, 1) + dt.timedelta(days=i) for i in range(23))
    with TileStore(manhattan_tiles) as store:
        train_recent_model(
            store,
            [TRIPS["uber_2014_04"]],
            [TRIPS["reuven_2015_06"]],
            out,
            train_days,
            RecentConfig(slot_minutes=30, kinds=("poisson",), folds=2),
            month=month,
            trips=month_trips,
        )
    return out
