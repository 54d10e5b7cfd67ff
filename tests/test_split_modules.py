"""Modules split into packages or several files (issue 14) keep their public names where other
code imports them, and the reader of the tile database stays free of its writer."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

#: the old modules and names that other code or users imported from them
SPLIT = {
    "models.trips": ["Trips", "read_trips", "parse_days", "coverage", "Window", "day_ranges",
                     "day_type_of_date", "us_holidays", "FORMAT_RECORDS", "FORMAT_DESCRIPTIONS",
                     "MAX_TRIP_FILE_BYTES", "DROP_REASONS"],
    "models.rolling": ["MonthData", "RecentConfig", "fit", "make_rows", "prepare_month",
                       "rolling_origin", "train_recent_model", "cell_sum", "exp_cum_of",
                       "stats_rates", "beats", "evaluate_days", "ratios", "cached_month"],
    "models.train": ["C_FLOOR", "INPUT_NAME", "OUTPUT_NAME", "TrainConfig", "train_model",
                     "poisson_deviance", "static_features"],
    "tiles._osm": ["RawGraph", "RawWay", "RawRestriction", "ProgressFn", "read_osm"],
    "tiles.store": ["TileStore", "open_tiles", "write_tiles", "tile_of", "resolve_tiles_path",
                    "ATTRIBUTION", "EDGE_DTYPE", "WINDOW_DTYPE", "SCHEMA_VERSION",
                    "DEFAULT_TILE_DEG", "TILES_FILENAME"],
    "agent.api.app": ["AgentState", "create_app", "network_geojson", "route_labels",
                      "openapi_document", "API_SCHEMA_VERSION", "STATIC_DIR"],
    "tools.pipeline.runner": ["RunOptions", "RunReport", "StepEvent", "StepOutcome",
                              "run_pipeline", "REPO_ROOT", "utc_now"],
    "tools.sim.experiment": ["Experiment", "run_experiment", "run_seeds", "calibrate",
                             "Calibration", "size_fleet", "Sizing", "mean_ci", "summarise",
                             "paired_gain", "gate", "json_finite", "METRICS", "GATE_RULE",
                             "GATE_POLICY", "BASELINES", "OCCUPANCY_BAND", "SIZING_ROUNDS",
                             "CALIBRATION_SEED_BASE"],
    "models.peopleflow": ["PeopleFlow", "ShapeConfig", "read_people_flow",
                          "shape_by_people_flow", "shape_rates", "shape_weights", "mesh1km_of",
                          "mesh1km_box", "COLUMNS", "SLOT_BAND", "BAND_ALL_DAY", "BAND_MIDDAY",
                          "BAND_NIGHT", "DAYFLAG_HOLIDAY", "DAYFLAG_WEEKDAY"],
    "agent.decide": ["decide", "TickInputs", "TickResult", "RECORD_KIND", "LiveInput",
                     "LiveSnapshot", "LIVE_NO_SNAPSHOT", "tick_recent", "tick_fleet",
                     "on_route_match", "previous_route", "ON_ROUTE_LINKS", "match_record",
                     "demand_sha256", "RECENT_NO_SNAPSHOT", "RECENT_NO_UNITS",
                     "RECENT_OTHER_GRID", "RECENT_BAD_COUNTS", "RECENT_TOO_FEW",
                     "RECENT_MAX_SCALE", "RECENT_MIN_EXPECTED", "RECENT_FROM_SNAPSHOT",
                     "RECENT_FILLED"],
    "agent.planner": ["PlannerError", "PlannerParams", "Plan", "SCHEMA_VERSION", "PassAges",
                      "ValueTable", "Direction", "FleetView", "RouteChoice", "solve",
                      "plan_cruise", "plan_from_fix", "plan_from_table", "next_link",
                      "policy_step", "pass_age_array", "area_mask", "speed_factor_from_demand",
                      "minute_of_week_of", "monday_of", "action_values", "choose_route",
                      "is_committed", "route_value", "fleet_view", "with_fleet"],
    "agent.api": ["AgentState", "create_app", "network_geojson", "openapi_document",
                  "API_SCHEMA_VERSION", "STATIC_DIR"],
    "agent.runtime": ["Agent", "AgentConfig", "SyncSettings", "RunSummary", "start_bundle",
                      "distance_to_line_m", "RETIRED_BUNDLE_GRACE_S"],
    "sync.live": ["DROPOFF", "EVENT_MAX_AGE_S", "FetchOutcome", "GridSpec", "Heartbeat",
                  "HeartbeatClient", "LIVE_BAD_SIGNATURE", "LIVE_EXPIRED", "LIVE_MALFORMED",
                  "LIVE_NOT_YET_VALID", "LIVE_NO_TRUST", "LIVE_OTHER_NETWORK",
                  "LIVE_STALE_VERSION", "LIVE_UNREACHABLE", "LiveClientConfig", "LiveTrust",
                  "MAX_HEARTBEAT_BYTES", "MSGPACK", "MeterEvent", "PICKUP", "Snapshot",
                  "SnapshotArchive", "SnapshotClient", "TrustSource", "build_snapshot",
                  "decode_body", "decode_heartbeat", "encode_body", "encode_heartbeat",
                  "grid_spec", "network_tag", "open_envelope", "sign_envelope",
                  "verify_snapshot"],
    "sync.repository": ["FleetRepository", "PublishResult", "RepoConfig", "INDEX_SCHEMA",
                        "chunk_target_path", "index_target_path"],
    "tools.sim.policies": ["POLICIES", "HOTSPOT_SEARCH_S", "Allowed", "Fleet", "Policy", "path_to",
                           "RandomPolicy", "RandomDestinationPolicy", "GreedyPolicy",
                           "HotspotPolicy", "NagashiPolicy", "NagashiRoutePolicy",
                           "NagashiLivePolicy", "make_policy"],
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(SPLIT))
def test_old_names_resolve_and_are_listed(module: str) -> None:
    mod = importlib.import_module(module)
    for name in SPLIT[module]:
        assert getattr(mod, name) is not None, (module, name)
        assert name in mod.__all__, (module, name)
    for name in mod.__all__:
        assert getattr(mod, name) is not None, (module, name)


def test_write_tiles_is_the_writers_and_loaded_only_when_asked_for() -> None:
    import tiles.store
    import tiles.store_write

    assert tiles.store.write_tiles is tiles.store_write.write_tiles
    code = (
        "import sys, tiles.store; a = 'tiles.store_write' in sys.modules;"
        " from tiles.store import write_tiles; print(a, 'tiles.store_write' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
