"""The one-command demo: build the Manhattan bundle from ../shared/data if missing, then replay
the recorded Midtown drive through the real agent, accelerated.

Bundle inputs, all from real data: road tiles from the OSM extract (``tiles.build_tiles``),
statistical demand from the NYC TLC trip files (``models.statistics.build_demand_table``), a
``params.yaml`` whose cruising speed factor is measured from those trips, and the business area
(the extract's bounding box, where its roads and its demand are). Versions in the manifest are
derived from the content (``sha256`` prefixes), so the same data always gives the same bundle.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from agent.errors import BundleLoadError
from agent.gps import atomic_write_bytes
from agent.planner import speed_factor_from_demand

log = logging.getLogger(__name__)

OSM_FILE = Path("osm") / "nyc_manhattan_midtown.osm.pbf"
TRIP_FILES = (
    Path("trips") / "nyc_tlc_yellow_2015-06_reuven.csv",
    Path("trips") / "nyc_tlc_yellow_2009-2015_gcp_taxi-train.csv",
    Path("trips") / "nyc_tlc_yellow_2009-2015_gcp_taxi-valid.csv",
)
TIMEZONE = "America/New_York"
AREA = "manhattan"
DRIVE_FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "data" / "midtown_drive.csv"


def _short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def build_manhattan_bundle(shared_data: Path, work_dir: Path) -> Path:
    """Build (or find) the Manhattan bundle under ``work_dir/bundles``; its directory."""
    from models.statistics import build_demand_table
    from sync import BundleInputs, build_bundle
    from sync.manifest import compose_docs
    from tiles import TileStore, build_tiles

    osm = shared_data / OSM_FILE
    trips = [shared_data / t for t in TRIP_FILES]
    missing = [str(p) for p in (osm, *trips) if not p.is_file()]
    if missing:
        raise BundleLoadError("real data missing: " + ", ".join(missing))
    inputs_dir = work_dir / "inputs"
    inputs_dir.mkdir(parents=True, exist_ok=True)
    tiles_path, _ = build_tiles(osm, inputs_dir / "tiles")
    with TileStore(tiles_path) as store:
        table, _report = build_demand_table(store, [str(t) for t in trips])
        demand_dir = table.save(inputs_dir / "demand")
        speed_factor = speed_factor_from_demand(table, store.all())
        source_sha = store.meta["source_sha256"]
        bbox = store.bbox
    params: dict[str, Any] = {
        "timezone": TIMEZONE,
        "planner": {"speed_factor": round(float(speed_factor), 6)},
        "measured": {"speed_factor_from": "pickup-weighted median trip speed / free-flow"},
    }
    params["version"] = "params-" + _short(yaml.safe_dump(params, sort_keys=True).encode())
    params_path = atomic_write_bytes(
        inputs_dir / "params.yaml", yaml.safe_dump(params, sort_keys=True).encode()
    )
    ring = [
        [bbox[0], bbox[1]],
        [bbox[2], bbox[1]],
        [bbox[2], bbox[3]],
        [bbox[0], bbox[3]],
        [bbox[0], bbox[1]],
    ]
    geom = {"type": "Polygon", "coordinates": [ring]}
    area_version = "bbox-" + _short(json.dumps(geom, sort_keys=True).encode())
    area_doc = {
        "type": "FeatureCollection",
        "version": area_version,
        "features": [
            {"type": "Feature", "properties": {"name": "Midtown Manhattan"}, "geometry": geom}
        ],
    }
    area_path = atomic_write_bytes(
        inputs_dir / "area.geojson", json.dumps(area_doc, sort_keys=True).encode()
    )
    manifest = {
        "schema_version": 1,
        "area": AREA,
        "description": "Midtown Manhattan demo bundle built from ../shared/data",
        "road_network": {"version": "osm-" + source_sha[:12], "source_sha256": source_sha},
        "statistical_demand": {"version": table.version},
        "predicted_demand": {"version": "none"},
        "regulation_patterns": {"osm_conditional": {"version": 1}},
        "cost_features": {"version": "free-flow-time-1"},
        "business_area": {"version": area_version, "name": "Midtown Manhattan"},
        "planner_parameters": {"version": params["version"]},
    }
    composed = compose_docs(manifest, [])
    inputs = BundleInputs(Path(tiles_path), Path(demand_dir), params_path, area_path)
    bundle = build_bundle(composed, inputs, work_dir / "bundles")
    log.info("Manhattan bundle %s at %s", bundle.bundle_id[:12], bundle.path)
    return bundle.path


def find_bundle(work_dir: Path) -> Path | None:
    root = work_dir / "bundles"
    if not root.is_dir():
        return None
    found = sorted(p for p in root.iterdir() if (p / "manifest.yaml").is_file())
    return found[-1] if len(found) == 1 else None


def ensure_manhattan_bundle(shared_data: Path, work_dir: Path, rebuild: bool = False) -> Path:
    if rebuild and (work_dir / "bundles").is_dir():
        shutil.rmtree(work_dir / "bundles")
    existing = find_bundle(work_dir)
    if existing is not None:
        return existing
    return build_manhattan_bundle(shared_data, work_dir)
