"""The one-command demo: build the Manhattan bundle from the real data (``data/``) if
missing, then replay
the generated Midtown drive through the real agent, accelerated. The drive is not a recording:
``tests/data/make_midtown_drive.py`` chains fastest legal routes on the OSM extract, drives them
with a kinematic model (red-light stops) and adds simulated urban-canyon GPS error.

The bundle follows the repository's version manifest (``manifests/base.yaml`` plus
``manifests/overlays/manhattan.yaml``) and is built from real data only: road tiles from the
OSM extract (``tiles.build_tiles``), statistical demand from the NYC TLC trip files the overlay
names (``models.statistics.build_demand_table``), a ``params.yaml`` carrying the manifest's
planner-parameter version, the area's time zone and the cruising speed factor measured from
those trips, and the business area (the extract's bounding box, where its roads and demand are).
When models/ now builds a demand version other than the one the overlay pins (its version moves
with its code), the demo uses the built version and says so; a fleet build would refuse.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from agent.errors import BundleLoadError
from agent.planner import ROUTE_SPREAD_EPS, SHIPPED_STEP_S, speed_factor_from_demand
from safety import bbox_area_geojson
from tiles.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

OSM_FILE = Path("osm") / "nyc_manhattan_midtown.osm.pbf"
TRIP_FILES = (  # as named in manifests/overlays/manhattan.yaml
    Path("trips") / "nyc_tlc_yellow_2009-2015_gcp_taxi-train.csv",
    Path("trips") / "nyc_tlc_yellow_2015-06_reuven.csv",
)
REPO = Path(__file__).resolve().parents[2]
BASE_MANIFEST = REPO / "manifests" / "base.yaml"
AREA_OVERLAY = REPO / "manifests" / "overlays" / "manhattan.yaml"
TIMEZONE = "America/New_York"
AREA = "manhattan"
DRIVE_FIXTURE = REPO / "tests" / "data" / "midtown_drive.csv"


def build_manhattan_bundle(shared_data: Path, work_dir: Path) -> Path:
    """Build (or find) the Manhattan bundle under ``work_dir/bundles``; its directory."""
    from models.statistics import build_demand_table
    from sync import BundleInputs, build_bundle
    from sync.manifest import compose_docs, load_yaml
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
    base = load_yaml(BASE_MANIFEST)
    overlay = load_yaml(AREA_OVERLAY)
    overlay.pop("inputs", None)  # the demo builds its inputs itself
    if overlay["road_network"]["source_sha256"] != source_sha:
        raise BundleLoadError(
            f"{osm} is not the extract {AREA_OVERLAY.name} names "
            f"({overlay['road_network']['source_sha256'][:12]})"
        )
    pinned = overlay["statistical_demand"]["version"]
    if pinned != table.version:
        log.warning(
            "%s pins demand %s; models/ builds %s from the same trips now: using it",
            AREA_OVERLAY.name,
            pinned,
            table.version,
        )
        overlay["statistical_demand"]["version"] = table.version
    composed0 = compose_docs(base, [overlay])
    m = composed0.manifest
    params: dict[str, Any] = {
        "version": m["planner_parameters"]["version"],
        "cost_features_version": m["cost_features"]["version"],
        "timezone": TIMEZONE,
        "planner": {
            "speed_factor": round(float(speed_factor), 6),
            "route_spread_eps": ROUTE_SPREAD_EPS,
            "step_s": SHIPPED_STEP_S,
        },
        "measured": {"speed_factor_from": "pickup-weighted median trip speed / free-flow"},
    }
    params_path = atomic_write_bytes(
        inputs_dir / "params.yaml", yaml.safe_dump(params, sort_keys=True).encode()
    )
    area_doc = {
        **bbox_area_geojson(bbox, m["business_area"].get("name", AREA)),
        "version": m["business_area"]["version"],
    }
    area_path = atomic_write_bytes(
        inputs_dir / "area.geojson", json.dumps(area_doc, sort_keys=True).encode()
    )
    composed = composed0
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


def is_current(bundle: Path) -> bool:
    """The demo bundle in ``bundle`` is what this nagashi builds: its ``params.yaml`` names the
    base manifest's planner version and the shipped read-out margin and layer length (a bundle
    built by an older nagashi, or one whose params cannot be read, is not)."""
    from sync.manifest import load_yaml

    try:
        params = yaml.safe_load((bundle / "params.yaml").read_text(encoding="utf-8"))
        version = load_yaml(BASE_MANIFEST)["planner_parameters"]["version"]
        planner = params["planner"]
        return bool(
            params["version"] == version
            and planner.get("route_spread_eps") == ROUTE_SPREAD_EPS
            and planner.get("step_s") == SHIPPED_STEP_S
        )
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return False


def ensure_manhattan_bundle(shared_data: Path, work_dir: Path, rebuild: bool = False) -> Path:
    """The demo's bundle under ``work_dir``, built when there is none, when ``rebuild`` or when
    the one there was built by an older nagashi (:func:`is_current`)."""
    existing = find_bundle(work_dir)
    if existing is not None and not rebuild and not is_current(existing):
        log.warning("the demo bundle in %s was built by an older nagashi: rebuilding", work_dir)
        rebuild = True
    if rebuild and (work_dir / "bundles").is_dir():
        shutil.rmtree(work_dir / "bundles")
        existing = None
    if existing is not None:
        return existing
    return build_manhattan_bundle(shared_data, work_dir)
